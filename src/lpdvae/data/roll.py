"""Phrase tensors back to music: MIDI (notes from the onset codes, so repeated notes stay
separate), PNG piano rolls, WAV audio."""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lpdvae.data import smf
from lpdvae.data.codes import onsets_np
from lpdvae.io import atomic_write_bytes
from lpdvae.params import RepresentationParams, TrackSpec

log = logging.getLogger(__name__)
VELOCITY = 100
TICKS_PER_BEAT = 480  # MIDI resolution aimed at; a step is a whole number of ticks


def _track_field(track: TrackSpec | dict[str, Any], key: str) -> Any:
    return track[key] if isinstance(track, dict) else getattr(track, key)


def phrase_notes(track_codes: np.ndarray) -> list[tuple[int, int, int]]:
    """(start step, end step, pitch row) of every note of one track's codes `[steps, P]` (or
    `[B, S, P]`): a note starts at an onset and lasts while the cell sounds without a new onset."""
    codes = np.asarray(track_codes).reshape(-1, np.shape(track_codes)[-1])
    starts = onsets_np(codes[None])[0]
    notes = []
    for step, pitch in zip(*np.nonzero(starts), strict=True):
        end = step + 1
        while end < len(codes) and codes[end, pitch] == 1:
            end += 1
        notes.append((int(step), int(end), int(pitch)))
    return sorted(notes)


def midi_bytes(phrase: np.ndarray, tracks: Sequence[TrackSpec | dict[str, Any]],
               rep: RepresentationParams, tempo: float = 100.0) -> bytes:
    """Codes `[T, B, S, P]` (or several phrases `[K, T, B, S, P]`, played one after another) as MIDI
    (`lpdvae.data.smf`): one track per track of the set, drums on the percussion channel."""
    phrases = np.asarray(phrase)
    phrases = phrases[None] if phrases.ndim == 4 else phrases
    if phrases.shape[1] != len(tracks):
        raise ValueError(f"phrase has {phrases.shape[1]} tracks, the track set has {len(tracks)}")
    ticks_per_step = max(1, TICKS_PER_BEAT // rep.beat_resolution)  # a whole number: exact steps
    steps = phrases.shape[2] * phrases.shape[3]
    chans = smf.channels([bool(_track_field(t, "is_drum")) for t in tracks])
    parts = []
    for k, track in enumerate(tracks):
        notes = [((i * steps + start) * ticks_per_step, (i * steps + end) * ticks_per_step,
                  rep.lowest_pitch + row)
                 for i, ph in enumerate(phrases) for start, end, row in phrase_notes(ph[k])]
        parts.append(smf.Part(str(_track_field(track, "name")), chans[k],
                              int(_track_field(track, "program")), notes, VELOCITY))
    return smf.smf_bytes(parts, rep.beat_resolution * ticks_per_step, smf.tempo_us(tempo),
                         (rep.beats_per_bar, 4))


def write_midi(phrase: np.ndarray, tracks: Sequence[TrackSpec | dict[str, Any]],
               rep: RepresentationParams, path: str | Path) -> Path:
    return atomic_write_bytes(path, midi_bytes(phrase, tracks, rep))


TRACK_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
PANEL_INCHES = (4.2, 2.8)  # width per panel, height
# Margins in inches, what tight_layout found for these fonts (left: room for 3-digit pitches and
# the axis label; top: the titles and the legend row), fixed so no figure is laid out twice.
MARGIN_INCHES = {"left": 0.6, "right": 0.15, "bottom": 0.51, "top": 0.525, "gap": 0.2}


def plot_png(panels: Sequence[tuple[str, np.ndarray]], tracks: Sequence[TrackSpec | dict[str, Any]],
             rep: RepresentationParams, path: str | Path) -> Path:
    """One picture, one panel per (title, codes `[T, B, S, P]`) side by side (e.g. original and
    reconstruction), every track in its own colour, cropped to the pitches in use, with the beat
    grid and bar lines; a note's onset is drawn darker so repeated notes stay visible."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection, PolyCollection
    from matplotlib.patches import Rectangle

    used = [np.nonzero(np.asarray(c).reshape(-1, np.shape(c)[-1]).any(0))[0] for _, c in panels]
    rows = np.concatenate(used) if any(len(u) for u in used) else np.array([0, 11])
    lo, hi = max(0, int(rows.min()) - 2), min(rep.n_pitches - 1, int(rows.max()) + 2)
    n = len(panels)
    width, height = PANEL_INCHES[0] * n, PANEL_INCHES[1]
    m = MARGIN_INCHES
    axes_width = (width - m["left"] - m["right"] - (n - 1) * m["gap"]) / n
    fig, axs = plt.subplots(1, n, figsize=(width, height), squeeze=False, sharey=True,
                            gridspec_kw={"left": m["left"] / width, "right": 1 - m["right"] / width,
                                         "bottom": m["bottom"] / height, "top": 1 - m["top"] / height,
                                         "wspace": m["gap"] / axes_width})
    for ax, (title, codes) in zip(axs[0], panels, strict=True):
        codes = np.asarray(codes)
        n_steps = codes.shape[1] * codes.shape[2]
        for k in range(codes.shape[0]):  # one collection per track and kind: one artist each
            color = TRACK_COLORS[k % len(TRACK_COLORS)]
            notes = np.array(phrase_notes(codes[k]), dtype=float).reshape(-1, 3)
            start, end, pitch = notes[:, 0], notes[:, 1], rep.lowest_pitch + notes[:, 2]
            ax.add_collection(PolyCollection(_boxes(start, end - start - 0.1, pitch), closed=True,
                                             facecolor=color, alpha=0.55, lw=0))
            ax.add_collection(PolyCollection(_boxes(start, np.full_like(start, 0.35), pitch),
                                             closed=True, facecolor=color, lw=0))
        for bar_lines, color, lw in ((False, "0.85", 0.5), (True, "0.35", 1.0)):  # one artist each
            steps = [s for s in range(0, n_steps + 1, rep.beat_resolution)
                     if (s % rep.steps_per_bar == 0) == bar_lines]
            ax.add_collection(LineCollection([[(s, 0), (s, 1)] for s in steps], colors=color,
                                             linewidths=lw, transform=ax.get_xaxis_transform(),
                                             zorder=2), autolim=False)
        ax.set_xlim(0, n_steps)
        ax.set_ylim(rep.lowest_pitch + lo - 0.5, rep.lowest_pitch + hi + 0.5)
        ax.set_title(title, fontsize=9, y=1.0)  # where it goes anyway: not searched for at draw
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    axs[0][0].set_ylabel("MIDI pitch", fontsize=8)
    handles = [Rectangle((0, 0), 1, 1, color=TRACK_COLORS[k % len(TRACK_COLORS)])
               for k in range(len(tracks))]
    fig.legend(handles, [str(_track_field(t, "name")) for t in tracks], loc="upper right",
               fontsize=7, ncol=len(tracks), frameon=False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=72)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _boxes(x: np.ndarray, width: np.ndarray, pitch: np.ndarray) -> np.ndarray:
    """`[n, 4, 2]` corners of note boxes 0.8 high, centred on their pitches (a PolyCollection's
    vertices: the paths Rectangle patches would give, without a patch per note)."""
    y0, y1, x1 = pitch - 0.4, pitch + 0.4, x + width
    return np.stack([np.stack([x, y0], 1), np.stack([x1, y0], 1), np.stack([x1, y1], 1),
                     np.stack([x, y1], 1)], 1)


_told_no_synth: set[str] = set()  # what was missing, said once per process (one run), not per file
_told_lock = threading.Lock()  # renders run in threads (samples_page): still one warning
RENDER_TIMEOUT_S = 120
# Load only the soundfont samples the MIDI plays, not all 148 MB of FluidR3_GM: half of each
# render's time. The demo's choir WAVs come out byte for byte the same; on drum kits and other
# programs a few dozen samples per minute differ by at most a few steps of 32767 (inaudible).
FLUIDSYNTH_OPTIONS = ("-o", "synth.dynamic-sample-loading=1")


def render_wav(midi_path: str | Path, wav_path: str | Path, soundfont: str | Path) -> bool:
    """WAV through fluidsynth and a General MIDI soundfont; False when either is missing, said
    once per process with the install command (one warning per run, not one per sample), or when
    fluidsynth fails or runs past RENDER_TIMEOUT_S (a warning naming the file). Thread-safe: the
    WAV appears (atomically) only when complete."""
    exe = shutil.which("fluidsynth")
    if exe is None or not Path(soundfont).exists():
        missing = " and ".join(m for m in ("fluidsynth" if exe is None else "",
                                           f"the soundfont {soundfont}" if not Path(soundfont).exists() else "") if m)
        with _told_lock:
            first = missing not in _told_no_synth
            _told_no_synth.add(missing)
        if first:
            bundled = Path(__import__("pretty_midi").__file__).with_name("TimGM6mb.sf2")
            log.warning("no WAV samples (MIDI and PNG are written): %s not installed. For audio, on "
                        "Debian/Ubuntu: `sudo apt-get install fluidsynth fluid-soundfont-gm` (or set "
                        "evaluate.soundfont to a General MIDI .sf2, e.g. pretty_midi's %s), then "
                        "`.venv/bin/dvc repro -s -f evaluate`", missing, bundled)
        log.debug("no WAV for %s: %s not installed", midi_path, missing)
        return False
    wav_path = Path(wav_path)
    tmp = wav_path.with_name(f".{wav_path.name}.tmp.wav")
    try:
        proc = subprocess.run(
            [exe, "-ni", "-q", *FLUIDSYNTH_OPTIONS, "-F", str(tmp), "-r", "22050", str(soundfont),
             str(midi_path)],
            capture_output=True, text=True, timeout=RENDER_TIMEOUT_S,
        )
        failed = proc.returncode != 0 or not tmp.exists()
        reason = proc.stderr.strip()[-300:] or f"exit status {proc.returncode}, no output"
    except subprocess.TimeoutExpired:
        failed, reason = True, f"no WAV after {RENDER_TIMEOUT_S} s"
    if failed:
        log.warning("fluidsynth failed on %s: %s", midi_path, reason)
        tmp.unlink(missing_ok=True)
        return False
    tmp.replace(wav_path)
    return True
