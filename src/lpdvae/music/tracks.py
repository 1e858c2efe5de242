"""Which configured track (params `tracks`) each source track merges into, and the merge."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pypianoroll

from lpdvae.params import TrackSpec


def assign_track(name: str, program: int, is_drum: bool, tracks: Sequence[TrackSpec]) -> int | None:
    """Index of the configured track a source track merges into, or None (dropped).

    Drum source tracks only go to `is_drum` entries and melodic ones only to melodic entries
    (so a "Bass Drum" track never lands in "bass"): first by a case-insensitive substring of
    `names` in the track name, then (melodic) by GM `programs`, then (drums) the first drum entry.
    """
    lowered = (name or "").lower()
    candidates = [(k, t) for k, t in enumerate(tracks) if t.is_drum == bool(is_drum)]
    for k, spec in candidates:
        if any(n.lower() in lowered for n in spec.names if n):
            return k
    if not is_drum:
        for k, spec in candidates:
            if int(program) in spec.programs:
                return k
    elif candidates:
        return candidates[0][0]
    return None


def track_assignment(mt: pypianoroll.Multitrack, tracks: Sequence[TrackSpec]) -> list[int | None]:
    """`assign_track` for every source track of `mt`, in order."""
    return [assign_track(t.name or "", int(t.program or 0), bool(t.is_drum), tracks) for t in mt.tracks]


def merge_tracks(mt: pypianoroll.Multitrack, tracks: Sequence[TrackSpec]) -> tuple[np.ndarray, int]:
    """Source tracks merged into `tracks`: uint8 `[T, time, 128]` at `mt.resolution` (element-wise
    max; float/bool rolls become 0/1, as pypianoroll binarizes) and the number of dropped tracks."""
    assignment = track_assignment(mt, tracks)
    n = max((t.pianoroll.shape[0] for t in mt.tracks), default=0)
    out = np.zeros((len(tracks), n, 128), dtype=np.uint8)
    for source, k in zip(mt.tracks, assignment, strict=True):
        if k is None:
            continue
        roll = np.asarray(source.pianoroll)
        if roll.dtype.kind == "f" or roll.dtype == np.bool_:
            roll = (np.nan_to_num(roll.astype(np.float64), nan=0.0) > 0).astype(np.uint8)
        else:
            roll = np.clip(roll, 0, 255).astype(np.uint8)
        np.maximum(out[k, : roll.shape[0]], roll, out=out[k, : roll.shape[0]])
    return out, sum(a is None for a in assignment)
