"""Phrase tensors back to music: pypianoroll Multitracks, MIDI files, PNG piano rolls, WAV audio."""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pypianoroll

from lpdvae.io import atomic_write_bytes
from lpdvae.params import RepresentationParams, TrackSpec

log = logging.getLogger(__name__)
VELOCITY = 100


def _track_field(track: TrackSpec | dict[str, Any], key: str) -> Any:
    return track[key] if isinstance(track, dict) else getattr(track, key)


def to_multitrack(
    phrase: np.ndarray,
    tracks: Sequence[TrackSpec | dict[str, Any]],
    rep: RepresentationParams,
    tempo: float = 100.0,
) -> pypianoroll.Multitrack:
    """0/1 `[T, B, S, P]` -> Multitrack at `beat_resolution`, pitches placed back from `lowest_pitch`."""
    t, b, s, p = phrase.shape
    if t != len(tracks):
        raise ValueError(f"phrase has {t} tracks, the track set has {len(tracks)}")
    n_steps = b * s
    out = []
    for k, track in enumerate(tracks):
        roll = np.zeros((n_steps, 128), dtype=np.uint8)
        roll[:, rep.lowest_pitch : rep.lowest_pitch + p] = (phrase[k].reshape(n_steps, p) > 0) * VELOCITY
        out.append(pypianoroll.StandardTrack(
            name=_track_field(track, "name"), program=int(_track_field(track, "program")),
            is_drum=bool(_track_field(track, "is_drum")), pianoroll=roll,
        ))
    downbeat = np.zeros(n_steps, dtype=bool)
    downbeat[::s] = True
    return pypianoroll.Multitrack(
        resolution=rep.beat_resolution, tempo=np.full(n_steps, float(tempo)), downbeat=downbeat, tracks=out
    )


def midi_bytes(mt: pypianoroll.Multitrack) -> bytes:
    with tempfile.NamedTemporaryFile(suffix=".mid") as tmp:
        mt.to_pretty_midi().write(tmp.name)
        return Path(tmp.name).read_bytes()


def write_midi(mt: pypianoroll.Multitrack, path: str | Path) -> Path:
    return atomic_write_bytes(path, midi_bytes(mt))


def plot_png(mt: pypianoroll.Multitrack, path: str | Path) -> Path:
    """One image per phrase, tracks stacked top to bottom."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(len(mt.tracks), 1, figsize=(8, 1.4 * len(mt.tracks)), sharex=True, squeeze=False)
    mt.plot(axs=list(axs[:, 0]))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def render_wav(midi_path: str | Path, wav_path: str | Path, soundfont: str | Path) -> bool:
    """WAV through fluidsynth and a General MIDI soundfont; False (logged) when either is missing."""
    exe = shutil.which("fluidsynth")
    if exe is None or not Path(soundfont).exists():
        log.info("no WAV for %s: fluidsynth or soundfont %s not installed", midi_path, soundfont)
        return False
    wav_path = Path(wav_path)
    tmp = wav_path.with_name(f".{wav_path.name}.tmp.wav")
    proc = subprocess.run(
        [exe, "-ni", "-q", "-F", str(tmp), "-r", "22050", str(soundfont), str(midi_path)],
        capture_output=True, text=True, timeout=120,
    )
    if proc.returncode != 0 or not tmp.exists():
        log.warning("fluidsynth failed on %s: %s", midi_path, proc.stderr.strip()[-300:])
        tmp.unlink(missing_ok=True)
        return False
    tmp.replace(wav_path)
    return True
