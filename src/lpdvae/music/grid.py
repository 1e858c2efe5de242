"""The roll the model sees: configured tracks, `representation.beat_resolution` steps per beat,
pitches `lowest_pitch..+n_pitches`, padded to whole bars.

`multitrack_roll` builds it from a loaded song; `npz_roll` builds the same cells straight from
an LPD `.npz` file's sparse CSC arrays, without the dense 128-pitch roll at the source
resolution (tensorize reads every song again, so this is its fast path).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pypianoroll

from lpdvae.music.song import SongError
from lpdvae.music.tracks import assign_track, merge_tracks
from lpdvae.params import RepresentationParams, TrackSpec


def multitrack_roll(mt: pypianoroll.Multitrack, tracks: Sequence[TrackSpec],
                    rep: RepresentationParams) -> tuple[np.ndarray, int]:
    """Bool `[T, steps, n_pitches]` (whole bars) of a song and the number of dropped source tracks."""
    merged, dropped = merge_tracks(mt, tracks)
    return to_grid(merged, mt.resolution, rep), dropped


def to_grid(merged: np.ndarray, resolution: int, rep: RepresentationParams) -> np.ndarray:
    """`[T, time, 128]` at `resolution` -> bool `[T, steps, n_pitches]` at `beat_resolution`:
    pypianoroll `set_resolution` (floor: a target step is on when a source step inside it is on,
    so note lengths are kept), binarize, crop `lowest_pitch..+n_pitches`, pad to whole bars."""
    length = target_length(merged.shape[1], resolution, rep)
    out = np.zeros((merged.shape[0], length, rep.n_pitches), dtype=bool)
    lo, hi = rep.lowest_pitch, rep.lowest_pitch + rep.n_pitches
    for k, track in enumerate(merged):
        if not track.any():
            continue
        mt = pypianoroll.Multitrack(resolution=resolution, tracks=[pypianoroll.StandardTrack(pianoroll=track)])
        mt.set_resolution(rep.beat_resolution, rounding="floor").binarize()
        roll = np.asarray(mt.tracks[0].pianoroll) > 0
        n = min(length, roll.shape[0])
        out[k, :n] = roll[:n, lo:hi]
    return out


def target_length(n_src: int, src_res: int, rep: RepresentationParams) -> int:
    """Steps at `beat_resolution` for `n_src` steps at `src_res`, rounded up to whole bars."""
    n = math.ceil(n_src * rep.beat_resolution / src_res)
    return math.ceil(n / rep.steps_per_bar) * rep.steps_per_bar


def npz_roll(path: str | Path, tracks: Sequence[TrackSpec], rep: RepresentationParams) -> tuple[np.ndarray, int]:
    """`multitrack_roll(read_song(path).multitrack, ...)` for a pypianoroll `.npz`, straight from
    the sparse CSC arrays (no dense 128-pitch roll at the source resolution)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            info = json.loads(_text(z["info.json"]))
            res = int(info.get("resolution") or info.get("beat_resolution"))
            parts, idx = [], 0
            while str(idx) in info:
                meta = info[str(idx)]
                key = f"pianoroll_{idx}_csc"
                parts.append((meta, z[f"{key}_data"], z[f"{key}_indices"], z[f"{key}_indptr"], z[f"{key}_shape"]))
                idx += 1
    except Exception as exc:  # noqa: BLE001 - untrusted file: any failure is a SongError
        raise SongError(path, "corrupt_npz", f"cannot read npz piano rolls: {exc}") from None
    length = target_length(max((int(p[4][0]) for p in parts), default=0), res, rep)
    out = np.zeros((len(tracks), length, rep.n_pitches), dtype=bool)
    lo, hi = rep.lowest_pitch, rep.lowest_pitch + rep.n_pitches
    factor = rep.beat_resolution / res
    dropped = 0
    for meta, data, indices, indptr, _shape in parts:
        k = assign_track(meta.get("name") or "", int(meta.get("program") or 0), bool(meta.get("is_drum")), tracks)
        if k is None:
            dropped += 1
            continue
        cols = min(hi, len(indptr) - 1)
        if cols <= lo:
            continue
        a, b = int(indptr[lo]), int(indptr[cols])
        pitch = np.repeat(np.arange(lo, cols), np.diff(indptr[lo : cols + 1])) - lo
        time = np.floor(indices[a:b].astype(np.int64) * factor).astype(np.int64)
        keep = (data[a:b] > 0) & (time < length)
        out[k, time[keep], pitch[keep]] = True
    return out, dropped


def _text(value: bytes | np.ndarray) -> str:
    return (value if isinstance(value, bytes) else np.asarray(value).tobytes()).decode("utf-8")
