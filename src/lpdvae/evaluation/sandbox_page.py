"""A page as the Kubeflow Pipelines UI can show it: one HTML file, at most ~2 MB.

The KFP UI shows an HTML artifact as `<iframe sandbox="allow-scripts" srcdoc=...>`: relative
URLs do not resolve there, and the sandbox blocks downloads. So a page that links its media
(the evaluation page of `lpdvae.evaluation.samples_page`; register's model card and validate's
data docs go the same way) becomes one file: images inlined as data: URIs, each WAV as a short
mono 8 kHz 8-bit preview inlined while the page stays within `budget` bytes, and every download
link (MIDI, full-quality WAV, JSON) replaced by the file's path, with a note at the top saying
where to get them. Pages of tens of MB (every WAV inlined) have crashed UI tabs.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import re
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

BUDGET = 2_000_000  # bytes of HTML, data: URIs included
PREVIEW_RATE = 8000  # Hz, mono, 8-bit: 8 kB per second of audio
PREVIEW_SECONDS = 20.0  # a generated phrase is ~10 s, an original|reconstruction pair ~20 s

_IMG = re.compile(r'<img\b[^>]*?\bsrc="([^":#]+)"[^>]*>')
_AUDIO = re.compile(r'<audio\b[^>]*?\bsrc="([^":#]+)"[^>]*>\s*</audio>')
_LINK = re.compile(r'<a\b[^>]*?\bhref="([^":#]+)"[^>]*>(.*?)</a>', re.S)
_BODY = re.compile(r"<body\b[^>]*>")


def sandbox_page(page: Path, artifact: str, budget: int = BUDGET, *, note: str | None = None) -> str:
    """`page` (an HTML file whose media lie in its folder) as one self-contained HTML text for
    the KFP UI. `artifact` names the output artifact holding the folder, for the note at the top
    (`note`, HTML, says instead where the files named by path are); the note is left out when
    no file had to be named by path."""
    page = Path(page)
    root = page.parent.resolve()
    text = page.read_text(encoding="utf-8")
    note = _note(artifact) if note is None else kfp_note(note)
    named = 0

    def local(rel: str) -> Path | None:
        target = (page.parent / rel).resolve()
        return target if target.is_file() and target.is_relative_to(root) else None

    def image(m: re.Match[str]) -> str:
        target = local(m.group(1))
        if target is None:
            return m.group(0)
        uri = _data_uri("image/png" if target.suffix == ".png" else "image/svg+xml"
                        if target.suffix == ".svg" else "image/jpeg", target.read_bytes())
        return m.group(0).replace(f'src="{m.group(1)}"', f'src="{uri}"').replace(' loading="lazy"', "")

    def link(m: re.Match[str]) -> str:
        nonlocal named
        if local(m.group(1)) is None or m.group(1).endswith((".html", ".htm")):
            return m.group(0)
        named += 1
        return f'<span class="kfp-file">{m.group(2)}: {_where(m.group(1))}</span>'

    text = _LINK.sub(link, _IMG.sub(image, text))
    text, n_named_audio = _inline_audio(text, local, budget - len(text.encode()) - len(note.encode()))
    if named + n_named_audio == 0:
        return text
    body = _BODY.search(text)
    if body is None:
        return note + text
    return text[: body.end()] + note + text[body.end():]


def _where(rel: str) -> str:
    return f"<code>{html.escape(rel)}</code>"


def _inline_audio(text: str, local: Callable[[str], Path | None], left: int) -> tuple[str, int]:
    """Each `<audio>` as an inlined preview while `left` bytes allow, else named by path; returns
    the text and how many were named by path."""
    audios = list(_AUDIO.finditer(text))
    parts, last, n_inlined = [], 0, 0
    for m in audios:
        rel, target = m.group(1), local(m.group(1))
        preview = _preview_tag(target) if target is not None else None
        if preview is not None and len(preview) - len(m.group(0)) <= left:
            replacement, n_inlined = preview, n_inlined + 1
        else:
            replacement = f'<span class="kfp-file">WAV: {_where(rel)}</span>'
        left -= len(replacement) - len(m.group(0))
        parts += [text[last:m.start()], replacement]
        last = m.end()
    if n_inlined < len(audios):
        log.info("sandbox page: %d of %d audio previews fit; the rest are named by path",
                 n_inlined, len(audios))
    return "".join([*parts, text[last:]]), len(audios) - n_inlined


def kfp_note(body: str) -> str:
    """A note box at the top of a page shown in the KFP UI; `body` is HTML."""
    return ('<p class="kfp-note" style="background:#fff8dc;border:1px solid #e0c97f;padding:.5em .8em">'
            + body + "</p>")


def _note(artifact: str) -> str:
    return kfp_note(
        "Shown inside the Kubeflow Pipelines UI, whose sandbox blocks downloads: the MIDI files and "
        "full-quality WAVs are in this task's <b>" + html.escape(artifact) + "</b> output artifact, at "
        "the paths shown (open the artifact's URI in the UI's Input/Output tab, or "
        "<code>dvc repro</code>/<code>make run</code> locally for <code>reports/eval/</code>). "
        f"Audio players here play a mono {PREVIEW_RATE // 1000} kHz preview of at most "
        f"{PREVIEW_SECONDS:g} s."
    )


def _preview_tag(wav_path: Path) -> str | None:
    try:
        data = audio_preview(wav_path)
    except (wave.Error, EOFError, ValueError) as exc:
        log.warning("no audio preview of %s: %s", wav_path, exc)
        return None
    return f'<audio controls preload="metadata" src="{_data_uri("audio/wav", data)}"></audio>'


def audio_preview(wav_path: Path, rate: int = PREVIEW_RATE, max_seconds: float = PREVIEW_SECONDS) -> bytes:
    """The first `max_seconds` of a PCM WAV as mono, `rate` Hz, 8-bit WAV bytes (peak-normalised,
    low-passed below the new Nyquist frequency before resampling, the silent end cut)."""
    with wave.open(str(wav_path), "rb") as w:
        channels, width, src_rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
        raw = w.readframes(min(w.getnframes(), int(max_seconds * src_rate)))
    if width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128) / 128
    elif width in (2, 4):
        dtype = np.dtype(f"<i{width}")
        x = np.frombuffer(raw, dtype).astype(np.float32) / np.iinfo(dtype).max
    else:
        raise ValueError(f"{wav_path}: {8 * width}-bit WAV not supported for previews")
    x = x.reshape(-1, channels).mean(axis=1)
    if src_rate > rate:
        x = np.convolve(x, _lowpass(0.45 * rate / src_rate), mode="same")
    n_out = int(len(x) * rate / src_rate)
    y = np.interp(np.arange(n_out) * (src_rate / rate), np.arange(len(x)), x) if len(x) else x
    peak = float(np.max(np.abs(y))) if len(y) else 0.0
    if peak > 0:
        y = y * (0.95 / peak)
    heard = np.nonzero(np.abs(y) * 127 >= 0.5)[0]  # a reverb tail that rounds to 8-bit silence goes
    y = y[: heard[-1] + 1 + rate // 10] if len(heard) else y[:rate // 10]
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(rate)
        w.writeframes(np.clip(np.round(y * 127 + 128), 0, 255).astype(np.uint8).tobytes())
    return out.getvalue()


def _lowpass(cutoff: float, taps: int = 63) -> np.ndarray:
    """Windowed-sinc FIR, `cutoff` as a fraction of the sample rate."""
    n = np.arange(taps) - (taps - 1) / 2
    h = 2 * cutoff * np.sinc(2 * cutoff * n) * np.hamming(taps)
    return (h / h.sum()).astype(np.float32)


def _data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"
