"""The HTML pages people look at, as the Kubeflow Pipelines UI shows them.

The KFP UI renders an HTML artifact inside `<iframe sandbox="allow-scripts" srcdoc=...>`: no
relative URLs, no downloads, and (offline or behind a proxy) no CDN. These tests build the
evaluation page (from `samples_page.write_page` on random note codes, through
`sandbox_page`) and validate's data docs page (a real GX run), check sizes and URLs, and load
both in Debian's chromium through playwright, inside such an iframe on a host page: images
must decode, audio must load, and a screenshot is saved (its path is printed).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import re
import shutil
import wave
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from lpdvae.data import roll
from lpdvae.evaluation.samples_page import write_page
from lpdvae.evaluation.sandbox_page import BUDGET, PREVIEW_RATE, audio_preview, sandbox_page
from lpdvae.params import load_params
from lpdvae.steps.validate import validate
from tests import songkit

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("LPDVAE_CHROMIUM", "/usr/bin/chromium"))


def _phrase(rng: np.random.Generator, n_tracks: int, steps: int, n_pitches: int) -> np.ndarray:
    """Codes `[T, steps, P]` of one voice per track (0 silent, 1 sustain, 2 onset)."""
    x = np.zeros((n_tracks, steps, n_pitches), np.uint8)
    for t in range(n_tracks):
        step = 0
        while step < steps:
            length, pitch = int(rng.integers(1, 5)), 48 - 9 * t + int(rng.integers(-5, 6))
            x[t, step, pitch] = 2
            x[t, step + 1: step + length, pitch] = 1
            step += length
    return x


def _sine_wav(path: Path, seconds: float = 12.0, rate: int = 22050) -> Path:
    """A 16-bit stereo WAV (fluidsynth's output format) of a 440 Hz tone."""
    t = np.arange(int(seconds * rate)) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.repeat(tone, 2).tobytes())
    return path


def _sine_render(midi_path: str | Path, wav_path: str | Path, soundfont: str | Path) -> bool:
    """Stand-in for fluidsynth where it is not installed: pretty_midi's sine synthesis of the MIDI."""
    import pretty_midi

    audio = pretty_midi.PrettyMIDI(str(midi_path)).synthesize(fs=22050)
    pcm = (audio / max(1e-9, float(np.abs(audio).max())) * 0.5 * 32767).astype("<i2")
    with wave.open(str(wav_path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(22050)
        w.writeframes(pcm.tobytes())
    return True


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory) -> Path:
    """evaluate's folder page with the default sample count: 8 generated, 2 original|reconstruction
    pairs, a 7-step interpolation. WAVs through fluidsynth when installed (CI), else sine tones."""
    import pretty_midi

    params = load_params(REPO / "params.yaml")
    rep, ev = params.representation, params.evaluate
    steps, rng = rep.n_bars * rep.steps_per_bar, np.random.default_rng(0)

    def phrases(n: int) -> np.ndarray:
        return np.stack([_phrase(rng, len(params.tracks), steps, rep.n_pitches)
                         .reshape(len(params.tracks), rep.n_bars, rep.steps_per_bar, rep.n_pitches)
                         for _ in range(n)])

    out = tmp_path_factory.mktemp("eval")
    metrics = {"recon_note_f1": 0.41, "baseline.copy.recon_note_f1": 0.12, "generated.empty_bar_rate": 0.05,
               "reference.empty_bar_rate": 0.04, "kl_nats": 12.3}
    tracks = [dataclasses.asdict(t) if dataclasses.is_dataclass(t) else t for t in params.tracks]
    if not Path(ev.soundfont).exists():  # no fluid-soundfont-gm: pretty_midi's General MIDI soundfont
        ev = dataclasses.replace(ev, soundfont=str(Path(pretty_midi.__file__).with_name("TimGM6mb.sf2")))
    with pytest.MonkeyPatch.context() as mp:
        if not shutil.which("fluidsynth"):
            mp.setattr("lpdvae.evaluation.samples_page.render_wav", _sine_render)
        write_page(out, metrics, {"blessed": False, "reasons": ["note F1 0.41 < 2 x baseline"]},
                   phrases(ev.n_samples), phrases(2), phrases(2), phrases(7), tracks, rep, ev)
    return out


@pytest.fixture(scope="module")
def kfp_eval_page(eval_dir) -> str:
    """The evaluation page as evaluate's KFP component writes its HTML artifact."""
    return sandbox_page(eval_dir / "index.html", "evaluation")


@pytest.fixture(scope="module")
def data_docs(tmp_path_factory) -> Path:
    """validate's data docs page over a corpus with good and bad songs (a real GX run)."""
    root = tmp_path_factory.mktemp("docs")
    songkit.good_corpus(root / "raw", n_midi=2, n_npz=1)
    songkit.add_bad_songs(root / "raw")
    params = songkit.params(**{"validate.max_bad_fraction": 0.95})
    validate(root / "raw", root / "validated", params, docs_dir=root / "data_docs")
    return root / "data_docs" / "index.html"


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.refs += [v for k, v in attrs if k in ("src", "href", "srcset", "poster", "data") and v]


def external_refs(page: str) -> list[str]:
    """Every src/href (etc.) and CSS url()/@import that leaves the page: http(s):// or //host."""
    parser = _Refs()
    parser.feed(page)
    css = re.findall(r"""(?:url\(|@import)\s*['"]?((?:https?:)?//[^'")\s]+)""", page)
    return [r for r in parser.refs if re.match(r"(https?:)?//", r.strip())] + css


# --- sizes and references, no browser --------------------------------------------------------

def test_data_docs_page_references_no_url(data_docs):
    page = data_docs.read_text()
    assert external_refs(page) == []
    assert "<style>" in page and "lpdvae_songs" in page


def test_data_docs_page_lists_each_expectation_and_the_unexpected_songs(data_docs):
    page = data_docs.read_text()
    for column in ("song_id", "n_bars", "time_signature", "max_velocity"):
        assert f"<code>{column}</code>" in page, column
    assert "files/bad/waltz.mid" in page and "files/bad/loud.npz" in page
    assert 'class="fail">fail<' in page and 'class="pass">pass<' in page
    assert "time_signature 3/4, required 4/4" in page  # the reason a 3/4 song is quarantined


def test_evaluation_page_for_kfp_is_at_most_2_mb(kfp_eval_page, eval_dir):
    size = len(kfp_eval_page.encode())
    files = sum(p.stat().st_size for p in (eval_dir / "samples").iterdir())
    print(f"\nevaluation page for KFP: {size} bytes (folder page {(eval_dir / 'index.html').stat().st_size} "
          f"bytes + {files} bytes of media files)")
    assert size <= BUDGET


def test_evaluation_page_for_kfp_references_no_file_or_url(kfp_eval_page):
    assert external_refs(kfp_eval_page) == []
    assert not re.search(r'\b(src|href)="(?!data:|#)', kfp_eval_page)  # nothing relative either


def test_evaluation_page_for_kfp_names_the_artifact_paths_it_cannot_offer(kfp_eval_page):
    assert "<b>evaluation</b> output artifact" in kfp_eval_page
    assert "MIDI: <code>samples/generated-00.mid</code>" in kfp_eval_page
    assert " download>" not in kfp_eval_page


def test_evaluation_page_for_kfp_inlines_every_png_and_audio_preview(kfp_eval_page, eval_dir):
    n_png = len(list((eval_dir / "samples").glob("*.png")))
    n_wav = len(list((eval_dir / "samples").glob("*.wav")))
    assert kfp_eval_page.count('src="data:image/png;base64,') == n_png == 11
    assert kfp_eval_page.count('src="data:audio/wav;base64,') == n_wav == 11


def test_audio_preview_is_mono_8_khz_8_bit_and_at_most_20_seconds(tmp_path):
    data = audio_preview(_sine_wav(tmp_path / "tone.wav", seconds=30.0))
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 1, PREVIEW_RATE)
        assert w.getnframes() == 20 * PREVIEW_RATE
        x = np.frombuffer(w.readframes(w.getnframes()), np.uint8).astype(float) - 128
    spectrum = np.abs(np.fft.rfft(x))
    assert abs(np.argmax(spectrum) * PREVIEW_RATE / len(x) - 440) < 2  # still the 440 Hz tone


def test_audio_preview_cuts_a_silent_end(tmp_path):
    path = _sine_wav(tmp_path / "tone.wav", seconds=3.0)
    with wave.open(str(path), "rb") as w:
        params, frames = w.getparams(), w.readframes(w.getnframes())
    with wave.open(str(path), "wb") as w:  # 3 s of tone, then 5 s of silence
        w.setparams(params)
        w.writeframes(frames + b"\0" * (5 * 22050 * 4))
    with wave.open(io.BytesIO(audio_preview(path))) as w:
        assert 3.0 <= w.getnframes() / PREVIEW_RATE <= 3.2


def test_audio_preview_of_a_24_bit_wav_is_refused_with_the_file_named(tmp_path):
    path = tmp_path / "deep.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(3)
        w.setframerate(8000)
        w.writeframes(b"\0" * 300)
    with pytest.raises(ValueError, match=r"deep\.wav: 24-bit"):
        audio_preview(path)


def test_audio_previews_past_the_budget_are_named_by_path_instead(eval_dir):
    page = sandbox_page(eval_dir / "index.html", "evaluation", budget=400_000)
    assert len(page.encode()) <= 400_000
    assert 0 < page.count("data:audio/wav") < 11
    assert "WAV: <code>samples/interpolation.wav</code>" in page


# --- audio on a fresh machine ------------------------------------------------------------------

def test_missing_synth_is_said_once_per_run_with_the_apt_packages(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(roll.shutil, "which", lambda name: None)
    monkeypatch.setattr(roll, "_told_no_synth", set())
    caplog.set_level(logging.DEBUG, logger="lpdvae.data.roll")
    for i in range(3):
        assert roll.render_wav(tmp_path / f"{i}.mid", tmp_path / f"{i}.wav", tmp_path / "none.sf2") is False
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "apt-get install fluidsynth fluid-soundfont-gm" in warnings[0].getMessage()


# --- in a real browser, the way the KFP UI shows them -----------------------------------------

HOST = ("<!doctype html><html><body style='margin:0'><iframe id='artifact' sandbox='allow-scripts' "
        "style='width:1280px;height:{height}px;border:0' srcdoc=\"{srcdoc}\"></iframe></body></html>")


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed (Debian: apt-get install chromium); .ci/run installs it")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (dev extra)")
    with sync_api.sync_playwright() as p:
        # --no-sandbox: chromium's own sandbox refuses to start as root (CI runs as root)
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    """Where screenshots go: a temp folder, or $LPDVAE_SCREENSHOTS (docs/screenshots for the docs)."""
    return Path(os.environ.get("LPDVAE_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))


def show_in_kfp_iframe(browser, html: str, height: int = 2400):
    """A page with the KFP UI's sandboxed srcdoc iframe holding `html`; returns (page, frame)."""
    page = browser.new_page(viewport={"width": 1280, "height": height})
    page.set_content(HOST.format(height=height, srcdoc=escape(html)), wait_until="load")
    # Some chromium builds report the host's "load" before the srcdoc frame has committed its
    # navigation (its url still ""), so wait for the frame itself rather than trusting the host.
    for _ in range(200):
        frames = page.main_frame.child_frames
        if len(frames) == 1 and frames[0].url == "about:srcdoc":
            break
        page.wait_for_timeout(50)
    (frame,) = page.main_frame.child_frames
    assert frame.url == "about:srcdoc", f"the iframe never loaded its srcdoc (url {frame.url!r})"
    frame.wait_for_load_state("load")
    return page, frame


def _screenshot(page, shots: Path, name: str, capsys) -> Path:
    shots.mkdir(parents=True, exist_ok=True)
    path = shots / name
    page.screenshot(path=str(path), full_page=True)
    with capsys.disabled():
        print(f"\nscreenshot: {path}")
    return path


@pytest.mark.slow
def test_evaluation_page_in_the_kfp_sandbox_shows_its_images_and_loads_its_audio(
        browser, kfp_eval_page, shots, capsys):
    page, frame = show_in_kfp_iframe(browser, kfp_eval_page)
    frame.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=30_000)
    images = frame.evaluate("Array.from(document.images).map(i => [i.alt, i.naturalWidth])")
    assert len(images) == 11 and all(width > 0 for _, width in images), images
    frame.wait_for_function("Array.from(document.querySelectorAll('audio'))"
                            ".every(a => a.readyState >= 1 || a.error)", timeout=30_000)
    audio = frame.evaluate("Array.from(document.querySelectorAll('audio'))"
                           ".map(a => [a.readyState, a.error && a.error.code, a.duration])")
    assert len(audio) == 11 and all(err is None and ready >= 1 and dur > 1 for ready, err, dur in audio), audio
    assert _screenshot(page, shots, "kfp-evaluation-page.png", capsys).stat().st_size > 0
    page.close()


@pytest.mark.slow
def test_data_docs_in_the_kfp_sandbox_render_with_their_styles(browser, data_docs, shots, capsys):
    page, frame = show_in_kfp_iframe(browser, data_docs.read_text(), height=1600)
    fail_colour = frame.evaluate("getComputedStyle(document.querySelector('.fail')).color")
    border = frame.evaluate("getComputedStyle(document.querySelector('td')).borderTopStyle")
    assert fail_colour == "rgb(164, 22, 26)" and border == "solid"
    assert _screenshot(page, shots, "kfp-data-docs.png", capsys).stat().st_size > 0
    page.close()
