"""The roll the model sees: uint8 codes `[T, steps, n_pitches]` for the configured tracks, at
`representation.beat_resolution` steps per beat, pitches `lowest_pitch..+n_pitches`, padded to
whole bars.

Codes keep note onsets: 0 = silent, 1 = sustain (a note started at an earlier step still
sounds), 2 = onset (a note starts here), so two consecutive notes of one pitch stay two notes
(`active = code > 0`, `onset = code == ONSET`). Activity is pypianoroll's `set_resolution`
(floor) of the merged roll; onsets are mapped by hand, `floor(t * beat_resolution /
source_resolution)`, because set_resolution samples rows and would drop onsets between them.
An onset cell is always active, even where sampling found the note already gone.

Onsets come from the note starts of a MIDI file (`Song.onsets`); LPD `.npz` files store no
onsets, so there an onset is where a pitch turns on after being off (the start of each run).
`npz_roll` builds the same codes as `multitrack_roll` straight from an `.npz` file's sparse
CSC arrays, without the dense 128-pitch roll at the source resolution.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pypianoroll

from lpdvae.data.codes import ONSET, SUSTAIN
from lpdvae.data.music.song import Song, SongError
from lpdvae.data.music.tracks import assign_track, merge_tracks, track_assignment
from lpdvae.params import RepresentationParams, TrackSpec


def song_roll(song: Song, tracks: Sequence[TrackSpec], rep: RepresentationParams) -> tuple[np.ndarray, int]:
    """Codes `[T, steps, n_pitches]` of a loaded song and the number of dropped source tracks."""
    return multitrack_roll(song.multitrack, tracks, rep, song.onsets)


def multitrack_roll(mt: pypianoroll.Multitrack, tracks: Sequence[TrackSpec], rep: RepresentationParams,
                    onsets: Sequence[np.ndarray] | None = None) -> tuple[np.ndarray, int]:
    """Codes `[T, steps, n_pitches]` (whole bars) and the number of dropped source tracks.

    `onsets`: per source track, int `[n, 2]` (step at `mt.resolution`, pitch) of note starts;
    None takes the start of each run of active cells."""
    merged, dropped = merge_tracks(mt, tracks)
    out = to_grid(merged, mt.resolution, rep)
    if onsets is None:
        onsets = [run_starts(t.pianoroll) for t in mt.tracks]
    for k, cells in zip(track_assignment(mt, tracks), onsets, strict=True):
        if k is not None:
            mark_onsets(out[k], cells[:, 0], cells[:, 1], mt.resolution, rep)
    return out, dropped


def to_grid(merged: np.ndarray, resolution: int, rep: RepresentationParams) -> np.ndarray:
    """Activity of `[T, time, 128]` at `resolution` as codes (0/1) `[T, steps, n_pitches]` at
    `beat_resolution`: pypianoroll `set_resolution` (floor, so note lengths are kept), binarize,
    crop `lowest_pitch..+n_pitches`, pad to whole bars. `mark_onsets` adds the onsets."""
    length = target_length(merged.shape[1], resolution, rep)
    out = np.zeros((merged.shape[0], length, rep.n_pitches), dtype=np.uint8)
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


def mark_onsets(codes: np.ndarray, steps: np.ndarray, pitches: np.ndarray, resolution: int,
                rep: RepresentationParams) -> None:
    """Set ONSET in one track's codes `[steps, n_pitches]` where source onsets (step at
    `resolution`, MIDI pitch) land: `floor(step * beat_resolution / resolution)`."""
    time = np.asarray(steps, dtype=np.int64) * rep.beat_resolution // resolution
    row = np.asarray(pitches, dtype=np.int64) - rep.lowest_pitch
    keep = (time >= 0) & (time < codes.shape[0]) & (row >= 0) & (row < rep.n_pitches)
    codes[time[keep], row[keep]] = ONSET


def run_starts(roll: np.ndarray) -> np.ndarray:
    """int `[n, 2]` (step, pitch) where a cell of `[time, pitches]` turns on after being off
    (NaN counts as off)."""
    on = np.nan_to_num(np.asarray(roll, dtype=np.float32)) > 0 if np.asarray(roll).dtype.kind == "f" \
        else np.asarray(roll) > 0
    starts = on.copy()
    starts[1:] &= ~on[:-1]
    return np.argwhere(starts)


def target_length(n_src: int, src_res: int, rep: RepresentationParams) -> int:
    """Steps at `beat_resolution` for `n_src` steps at `src_res`, rounded up to whole bars."""
    n = math.ceil(n_src * rep.beat_resolution / src_res)
    return math.ceil(n / rep.steps_per_bar) * rep.steps_per_bar


def npz_roll(path: str | Path, tracks: Sequence[TrackSpec], rep: RepresentationParams) -> tuple[np.ndarray, int]:
    """`song_roll(read_song(path), ...)` for a pypianoroll `.npz`, straight from the sparse CSC
    arrays. Untrusted files go through `load.check_npz_size` first."""
    path = Path(path)
    res, parts = _npz_parts(path)
    length = target_length(max((int(p[4][0]) for p in parts), default=0), res, rep)
    out = np.zeros((len(tracks), length, rep.n_pitches), dtype=np.uint8)
    lo, hi = rep.lowest_pitch, rep.lowest_pitch + rep.n_pitches
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
        pitch = np.repeat(np.arange(lo, cols), np.diff(indptr[lo : cols + 1]))
        src = indices[a:b].astype(np.int64)
        on = data[a:b] > 0
        pitch, src = pitch[on], src[on]
        order = np.lexsort((src, pitch))
        pitch, src = pitch[order], src[order]
        start = np.ones(len(src), dtype=bool)
        start[1:] = (pitch[1:] != pitch[:-1]) | (src[1:] != src[:-1] + 1)
        time = src * rep.beat_resolution // res
        keep = time < length
        out[k, time[keep], pitch[keep] - lo] = np.maximum(out[k, time[keep], pitch[keep] - lo], SUSTAIN)
        mark_onsets(out[k], src[start], pitch[start], res, rep)
    return out, dropped


def _npz_parts(path: Path) -> tuple[int, list[tuple]]:
    """Resolution and, per track, (info, data, indices, indptr, shape) of a pypianoroll `.npz`."""
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
    if res <= 0:
        raise SongError(path, "npz_invalid", f"resolution must be a positive integer, got {res}")
    return res, parts


def _text(value: bytes | np.ndarray) -> str:
    return (value if isinstance(value, bytes) else np.asarray(value).tobytes()).decode("utf-8")
