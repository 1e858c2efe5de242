"""Fixed-length phrases of a grid roll: `[n, T, n_bars, steps_per_bar, n_pitches]`, one every
`tensorize.hop_bars` bars, skipping phrases with more than `tensorize.max_empty_bars` silent bars."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lpdvae.data.music.grid import npz_roll, song_roll
from lpdvae.data.music.load import check_npz_size, read_song
from lpdvae.data.music.song import song_format
from lpdvae.params import Params, RepresentationParams, TensorizeParams


def song_phrases(path: str | Path, params: Params, fmt: str | None = None) -> np.ndarray:
    """All phrases of one song file: uint8 codes (`lpdvae.data.music.grid`) `[n, T, n_bars,
    steps_per_bar, n_pitches]`. Songs over `validate.max_song_beats` are a SongError."""
    path = Path(path)
    fmt = fmt or song_format(path.name)
    rep, max_beats = params.representation, params.validate.max_song_beats
    if fmt == "npz":
        check_npz_size(path, max_beats, rep.source_resolution)
        roll, _ = npz_roll(path, params.tracks, rep)
    else:
        roll, _ = song_roll(read_song(path, rep, fmt, max_beats=max_beats), params.tracks, rep)
    return cut_phrases(roll, rep, params.tensorize)


def cut_phrases(roll: np.ndarray, rep: RepresentationParams, tp: TensorizeParams) -> np.ndarray:
    """Grid codes `[T, steps, P]` (whole bars) -> phrases `[n, T, n_bars, steps_per_bar, P]`."""
    t, n, p = roll.shape
    s, b = rep.steps_per_bar, rep.n_bars
    active = bar_activity(roll, rep)
    starts = [i for i in range(0, len(active) - b + 1, tp.hop_bars)
              if int((~active[i : i + b]).sum()) <= tp.max_empty_bars]
    bars = roll.reshape(t, n // s, s, p)
    if not starts:
        return np.zeros((0, t, b, s, p), dtype=roll.dtype)
    return np.stack([bars[:, i : i + b] for i in starts])


def bar_activity(roll: np.ndarray, rep: RepresentationParams) -> np.ndarray:
    """`[bars]` bool: does any note sound (code > 0) in this bar, in any track."""
    t, n, p = roll.shape
    return roll.reshape(t, n // rep.steps_per_bar, rep.steps_per_bar, p).any(axis=(0, 2, 3))
