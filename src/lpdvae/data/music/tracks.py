"""Which configured track (params `tracks`) each source track merges into, the merge, and the
record of it (which source tracks went where, which were dropped) that validate reports."""

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


DROPPED = "(dropped)"


def source_label(name: str, k: int) -> str:
    """A source track as the routing record names it: its name, or `#k` when it has none."""
    return (name or "").strip() or f"#{k}"


def track_routing(names: Sequence[str], assignment: Sequence[int | None],
                  tracks: Sequence[TrackSpec]) -> dict[str, str | int]:
    """Where each source track went, as stats.csv columns ("|"-separated lists):

    - `track_map`: `source->target` for every source track (`source->(dropped)` when none matched)
    - `dropped_tracks`: the source tracks that matched no configured track (not in the tensors)
    - `merged_tracks`: `target<-a+b` for each configured track that got several source tracks
      (their notes are merged: voices crossing become one roll)
    - `n_merged_tracks`: how many source tracks share a configured track with another one
    """
    labels = [source_label(n, k) for k, n in enumerate(names)]
    routed = [f"{lab}->{tracks[a].name if a is not None else DROPPED}" for lab, a in zip(labels, assignment, strict=True)]
    into: dict[int, list[str]] = {}
    for lab, a in zip(labels, assignment, strict=True):
        if a is not None:
            into.setdefault(a, []).append(lab)
    merged = {a: srcs for a, srcs in sorted(into.items()) if len(srcs) > 1}
    return {
        "track_map": "|".join(routed),
        "dropped_tracks": "|".join(lab for lab, a in zip(labels, assignment, strict=True) if a is None),
        "merged_tracks": "|".join(f"{tracks[a].name}<-{'+'.join(srcs)}" for a, srcs in merged.items()),
        "n_merged_tracks": sum(len(srcs) for srcs in merged.values()),
    }
