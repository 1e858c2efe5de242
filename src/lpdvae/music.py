"""Songs in, phrase tensors out: load MIDI / LPD `.npz` into pypianoroll, merge tracks, cut phrases.

Loading (`read_song`, `load_song`) never lets a bad file crash a batch with an unrelated exception: every
failure is a `SongError` (a `DataError`) naming the file, a short `reason` code for
`quarantine.jsonl` and a human `detail`.

MIDI is parsed by symusic (C++, ~100x faster than mido) into a `pretty_midi.PrettyMIDI` that
holds exactly what pretty_midi's own parser would build (same tick->seconds table, same notes),
and then quantized by `pypianoroll.from_pretty_midi`, so the piano rolls are identical to
`pypianoroll.read` (tests/test_music.py checks this). Files whose events symusic and pretty_midi
pair differently (overlapping or zero-length notes of one pitch) fall back to pretty_midi.

Tensorizing `.npz` songs goes through `npz_roll`, which reads the sparse CSC components and
maps them straight to the cropped, downsampled, binary grid: the same cells as
`multitrack_roll(read_song(...).multitrack)` (pypianoroll's set_resolution + binarize), without building
the dense 128-pitch roll at the source resolution.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import multiprocessing
import os
import sys
import threading
import warnings
import zipfile
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pretty_midi
import pypianoroll

from lpdvae.errors import DataError
from lpdvae.params import Params, RepresentationParams, TensorizeParams, TrackSpec

log = logging.getLogger(__name__)

MIDI_SUFFIXES = (".mid", ".midi")
NPZ_SUFFIXES = (".npz",)
MAX_BEATS = 20_000  # ~2.8 h at 120 bpm: longer "songs" are corrupt files that would exhaust RAM
# "symusic" | "pretty_midi" (see the module docstring); pretty_midi where symusic is not installed
MIDI_PARSER = "symusic" if importlib.util.find_spec("symusic") else "pretty_midi"
T = TypeVar("T")
R = TypeVar("R")


class SongError(DataError):
    """A song that cannot be used: `reason` is a short code, `detail` says why in words."""

    def __init__(self, path: str | Path, reason: str, detail: str) -> None:
        super().__init__(f"{path}: {detail} [{reason}]")
        self.path = str(path)
        self.reason = reason
        self.detail = detail


@dataclass
class Song:
    """A loaded song at its source resolution, with what the file said about its meter."""

    path: Path
    format: str
    multitrack: pypianoroll.Multitrack
    time_signatures: tuple[str, ...]  # distinct "n/d" in order of appearance; () when unknown
    time_signature_source: str  # "midi" | "midi-default" | "downbeat" | "none"
    parser: str
    min_velocity: float
    max_velocity: float

    @property
    def time_signature(self) -> str:
        """"4/4", "mixed(4/4,3/4)" or "" when the file does not say."""
        if len(self.time_signatures) > 1:
            return f"mixed({','.join(self.time_signatures)})"
        return self.time_signatures[0] if self.time_signatures else ""


def song_format(path: str | Path) -> str:
    """"midi" or "npz" from the file name; anything else is a SongError."""
    suffix = Path(path).suffix.lower()
    if suffix in MIDI_SUFFIXES:
        return "midi"
    if suffix in NPZ_SUFFIXES:
        return "npz"
    raise SongError(path, "unsupported_format", f"unsupported file type {suffix!r} (expected .mid, .midi or .npz)")


def load_song(path: str | Path, params: Params, fmt: str | None = None) -> pypianoroll.Multitrack:
    """One MIDI (at `representation.source_resolution`) or LPD `.npz` song as a Multitrack.

    Strict: besides unreadable files (`read_song`), NaN cells and velocities outside 0..127
    raise a SongError too. `validate` uses `read_song` instead, so those reach the GX suite."""
    song = read_song(path, params.representation, fmt)
    check_values(song)
    return song.multitrack


def check_values(song: Song) -> None:
    """SongError `nan_values` / `velocity_out_of_range` for cell values no roll may hold."""
    nan = sum(int(np.isnan(t.pianoroll).sum()) for t in song.multitrack.tracks if t.pianoroll.dtype.kind == "f")
    if nan:
        raise SongError(song.path, "nan_values", f"{nan} piano-roll cells are NaN")
    if song.min_velocity < 0 or song.max_velocity > 127:
        raise SongError(song.path, "velocity_out_of_range",
                        f"velocities span {song.min_velocity:g}..{song.max_velocity:g} (must be 0..127)")


def midi_time_signatures(path: str | Path) -> tuple[str, ...]:
    """Distinct "n/d" time signatures of a MIDI file in order of appearance; () when it has none."""
    pm, _ = _parse_midi(Path(path))
    return tuple(dict.fromkeys(f"{t.numerator}/{t.denominator}" for t in pm.time_signature_changes))


def read_song(path: str | Path, rep: RepresentationParams, fmt: str | None = None) -> Song:
    """Read one song file with its meter and value range; raises SongError (never anything
    else) when it cannot be read."""
    path = Path(path)
    fmt = fmt or song_format(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise SongError(path, "unreadable", f"cannot read file: {exc}") from None
    if size == 0:
        raise SongError(path, "empty_file", "file is empty (0 bytes)")
    song = _load_npz_song(path) if fmt == "npz" else _load_midi_song(path, rep.source_resolution)
    n_beats = song.multitrack.get_max_length() / max(song.multitrack.resolution, 1)
    if n_beats > MAX_BEATS:
        raise SongError(path, "too_long", f"{n_beats:.0f} beats (limit {MAX_BEATS}): probably corrupt")
    return song


# ---------------------------------------------------------------------------------------- npz


def _load_npz_song(path: Path) -> Song:
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise SongError(path, "corrupt_npz", f"not a readable npz (zip) archive, truncated? ({exc})") from None
    if "info.json" not in names:
        raise SongError(path, "npz_missing_keys", "npz has no info.json: not a pypianoroll/LPD file "
                        f"(keys: {', '.join(sorted(n.removesuffix('.npy') for n in names)[:8])})")
    try:
        mt = pypianoroll.load(path)
    except KeyError as exc:
        raise SongError(path, "npz_missing_keys", f"npz misses array {exc}") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise SongError(path, "corrupt_npz", f"npz member unreadable, truncated? ({exc})") from None
    except (ValueError, RuntimeError, TypeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SongError(path, "npz_invalid", f"npz is not a valid pypianoroll multitrack: {exc}") from None
    _check_npz(path, mt)
    lo, hi = _roll_value_range(mt)
    ts = _time_signature_from_downbeat(mt)
    return Song(path, "npz", mt, ts, "downbeat" if ts else "none", "pypianoroll", lo, hi)


def _check_npz(path: Path, mt: pypianoroll.Multitrack) -> None:
    if not isinstance(mt.resolution, int) or mt.resolution <= 0:
        raise SongError(path, "npz_invalid", f"resolution must be a positive integer, got {mt.resolution!r}")
    for i, track in enumerate(mt.tracks):
        roll = track.pianoroll
        if roll.ndim != 2 or roll.shape[1] != 128:
            raise SongError(path, "npz_invalid", f"track {i} piano roll has shape {roll.shape}, expected (time, 128)")


def _roll_value_range(mt: pypianoroll.Multitrack) -> tuple[float, float]:
    """Smallest and largest cell value over all tracks (NaN-aware: NaN shows up in the stats)."""
    lo, hi = 0.0, 0.0
    for track in mt.tracks:
        roll = track.pianoroll
        if roll.size and roll.dtype != np.bool_:
            lo = min(lo, float(np.nanmin(roll)) if not np.isnan(roll).all() else 0.0)
            hi = max(hi, float(np.nanmax(roll)) if not np.isnan(roll).all() else 0.0)
        elif roll.size and roll.any():
            hi = max(hi, 1.0)
    return lo, hi


def _time_signature_from_downbeat(mt: pypianoroll.Multitrack) -> tuple[str, ...]:
    """LPD keeps downbeats, not meters: equal bar lengths of k beats read as "k/4"."""
    if mt.downbeat is None:
        return ()
    steps = np.flatnonzero(np.asarray(mt.downbeat).reshape(-1))
    if len(steps) < 2:
        return ()
    bar_beats = np.diff(steps) / mt.resolution
    out: list[str] = []
    for beats in bar_beats:
        ts = f"{beats:g}/4" if float(beats).is_integer() else f"{beats:.2f}/4"
        if not out or out[-1] != ts:
            out.append(ts)
    return tuple(dict.fromkeys(out))


# --------------------------------------------------------------------------------------- MIDI


def _load_midi_song(path: Path, resolution: int) -> Song:
    pm, parser = _parse_midi(path)
    if not any(i.notes for i in pm.instruments):
        raise SongError(path, "no_notes", "MIDI file has no notes")
    if pm.get_end_time() <= 0 or len(pm.get_beats()) < 2:
        raise SongError(path, "too_short", "MIDI file is shorter than two beats")
    try:
        with np.errstate(divide="ignore", invalid="ignore"):
            mt = pypianoroll.from_pretty_midi(pm, resolution=resolution, mode="sum")
    except Exception as exc:  # noqa: BLE001 - pypianoroll raises bare errors on degenerate files
        raise SongError(path, "corrupt_midi", f"cannot quantize MIDI to a piano roll: {exc}") from None
    # pypianoroll 1.0.4 swapped its modes: "sum" keeps the max velocity of overlapping notes
    # (while "max" adds them up in uint8 and can wrap to 0); the result is int, so make it uint8.
    mt.tracks = [
        pypianoroll.StandardTrack(name=t.name, program=t.program, is_drum=t.is_drum,
                                  pianoroll=np.clip(t.pianoroll, 0, 127).astype(np.uint8))
        for t in mt.tracks
    ]
    velocities = [n.velocity for inst in pm.instruments for n in inst.notes]
    ts = tuple(dict.fromkeys(f"{t.numerator}/{t.denominator}" for t in pm.time_signature_changes))
    source = "midi" if ts else "midi-default"
    return Song(path, "midi", mt, ts or ("4/4",), source, parser,
                float(min(velocities, default=0)), float(max(velocities, default=0)))


def _parse_midi(path: Path) -> tuple[pretty_midi.PrettyMIDI, str]:
    if MIDI_PARSER == "symusic":
        try:
            pm = symusic_pretty_midi(path)
        except Exception as exc:  # noqa: BLE001 - symusic is stricter than mido: let pretty_midi decide
            log.debug("%s: symusic cannot parse (%s); trying pretty_midi", path, exc)
            pm = None
        if pm is not None:
            return pm, "symusic"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pretty_midi.PrettyMIDI(str(path)), "pretty_midi"
    except Exception as exc:  # noqa: BLE001 - mido raises OSError/EOFError/KeyError/ValueError...
        raise SongError(path, "corrupt_midi", f"not a readable MIDI file: {exc}") from None


class _EndTimePrettyMIDI(pretty_midi.PrettyMIDI):
    """A PrettyMIDI whose end time (last event of any kind) was computed from the symusic score."""

    end_time: float = 0.0

    def get_end_time(self) -> float:
        return self.end_time


def symusic_pretty_midi(path: str | Path) -> pretty_midi.PrettyMIDI | None:
    """Parse with symusic into the PrettyMIDI pretty_midi's parser would build, or None when the
    file pairs note events ambiguously (overlapping / zero-length notes of one pitch): pretty_midi
    and symusic resolve those differently, so the caller falls back to pretty_midi."""
    import symusic

    score = symusic.Score(str(path))
    tpq = int(score.ticks_per_quarter)
    if tpq <= 0:
        raise SongError(path, "corrupt_midi", f"ticks per quarter note is {tpq}")
    tracks = [(t, t.notes.numpy()) for t in score.tracks if t.note_num() > 0]
    if any(_ambiguous_notes(arrays) for _, arrays in tracks):
        return None
    last_tick = max([int(score.end())] + [int(t.time) for t in score.tempos] +
                    [int(t.time) for t in score.time_signatures])
    if last_tick + 1 > pretty_midi.MAX_TICK:
        return None  # pretty_midi refuses these with its own message
    pm = _EndTimePrettyMIDI(resolution=tpq)
    pm._tick_scales = _tick_scales(score, tpq)
    pm._update_tick_to_time(last_tick + 1)
    tick_to_time = pm._PrettyMIDI__tick_to_time
    pm.time_signature_changes = [
        pretty_midi.TimeSignature(int(t.numerator), int(t.denominator), float(tick_to_time[t.time]))
        for t in score.time_signatures
    ]
    pm.instruments = [_instrument(t, arrays, tick_to_time) for t, arrays in tracks]
    pm.end_time = float(tick_to_time[_last_event_tick(score, tracks)])
    return pm


def _ambiguous_notes(arrays: dict[str, np.ndarray]) -> bool:
    if (arrays["duration"] <= 0).any():
        return True
    order = np.lexsort((arrays["time"], arrays["pitch"]))
    pitch, start = arrays["pitch"][order], arrays["time"][order].astype(np.int64)
    end = start + arrays["duration"][order]
    same = pitch[1:] == pitch[:-1]
    return bool((same & (start[1:] < end[:-1])).any())


def _tick_scales(score, tpq: int) -> list[tuple[int, float]]:
    """pretty_midi's `_load_tempo_changes`, from symusic's tempo events (integer µs per quarter)."""
    scales = [(0, 60.0 / (120.0 * tpq))]
    for tempo in score.tempos:
        scale = 60.0 / ((6e7 / int(tempo.mspq)) * tpq)
        if int(tempo.time) == 0:
            scales = [(0, scale)]
        elif scale != scales[-1][1]:
            scales.append((int(tempo.time), scale))
    return scales


def _instrument(track, arrays: dict[str, np.ndarray], tick_to_time: np.ndarray) -> pretty_midi.Instrument:
    """Notes in pretty_midi's order (by note-off tick; same-pitch ties keep note-on order)."""
    start = arrays["time"].astype(np.int64)
    end = start + arrays["duration"]
    order = np.lexsort((start, end))
    starts, ends = tick_to_time[start[order]], tick_to_time[end[order]]
    pitches, velocities = arrays["pitch"][order], arrays["velocity"][order].astype(np.int64) & 0xFF
    inst = pretty_midi.Instrument(program=int(track.program), is_drum=bool(track.is_drum), name=str(track.name))
    inst.notes = [pretty_midi.Note(int(v), int(p), float(s), float(e))
                  for v, p, s, e in zip(velocities.tolist(), pitches.tolist(), starts.tolist(), ends.tolist(), strict=True)]
    return inst


def _last_event_tick(score, tracks) -> int:
    """The tick of pretty_midi's `get_end_time`: notes, controls, bends, meters, keys, lyrics, tempi."""
    ticks = [0]
    for track, arrays in tracks:
        ticks.append(int((arrays["time"].astype(np.int64) + arrays["duration"]).max()))
        ticks += [int(c.time) for c in track.controls[-1:]] + [int(b.time) for b in track.pitch_bends[-1:]]
        ticks += [int(x.time) for x in track.lyrics[-1:]]
    ticks += [int(x.time) for x in score.time_signatures] + [int(x.time) for x in score.key_signatures]
    ticks += [int(x.time) for x in score.tempos]
    return max(ticks)


# ------------------------------------------------------------------------------ track merging


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
    return [assign_track(t.name or "", int(t.program or 0), bool(t.is_drum), tracks) for t in mt.tracks]


# ----------------------------------------------------------------------------- rolls, phrases


def _target_length(n_src: int, src_res: int, rep: RepresentationParams) -> int:
    """Steps at `beat_resolution`, rounded up to whole bars."""
    n = math.ceil(n_src * rep.beat_resolution / src_res)
    return math.ceil(n / rep.steps_per_bar) * rep.steps_per_bar


def merge_tracks(mt: pypianoroll.Multitrack, params: Params) -> np.ndarray:
    """Source tracks merged into `params.tracks`: uint8 `[T, time, 128]` at `mt.resolution`
    (element-wise max; float rolls become 0/1). Unmatched tracks are dropped (and logged)."""
    merged, dropped = _merge_tracks(mt, params.tracks)
    if dropped:
        log.debug("%d of %d source tracks match no configured track: dropped", dropped, len(mt.tracks))
    return merged


def unmatched_tracks(mt: pypianoroll.Multitrack, tracks: Sequence[TrackSpec]) -> list[str]:
    """Names of the source tracks `merge_tracks` drops."""
    return [t.name or "" for t, a in zip(mt.tracks, track_assignment(mt, tracks), strict=True) if a is None]


def to_grid(merged: np.ndarray, resolution: int, rep: RepresentationParams) -> np.ndarray:
    """`[T, time, 128]` at `resolution` -> bool `[T, steps, n_pitches]` at `beat_resolution`:
    pypianoroll `set_resolution` (floor: a target step is on when a source step inside it is on,
    so note lengths are kept), binarize, crop `lowest_pitch..+n_pitches`, pad to whole bars."""
    length = _target_length(merged.shape[1], resolution, rep)
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


def multitrack_roll(mt: pypianoroll.Multitrack, tracks: Sequence[TrackSpec],
                    rep: RepresentationParams) -> tuple[np.ndarray, int]:
    """`to_grid(merge_tracks(mt))`: bool `[T, steps, n_pitches]` (whole bars) and the number
    of dropped source tracks."""
    merged, dropped = _merge_tracks(mt, tracks)
    return to_grid(merged, mt.resolution, rep), dropped


def _merge_tracks(mt: pypianoroll.Multitrack, tracks: Sequence[TrackSpec]) -> tuple[np.ndarray, int]:
    assignment = track_assignment(mt, tracks)
    n = max((t.pianoroll.shape[0] for t in mt.tracks), default=0)
    out = np.zeros((len(tracks), n, 128), dtype=np.uint8)
    for source, k in zip(mt.tracks, assignment, strict=True):
        if k is None:
            continue
        roll = np.asarray(source.pianoroll)
        if roll.dtype.kind == "f" or roll.dtype == np.bool_:  # NaN/float/bool: binarize as pypianoroll (> 0)
            roll = (np.nan_to_num(roll.astype(np.float64), nan=0.0) > 0).astype(np.uint8)
        else:
            roll = np.clip(roll, 0, 255).astype(np.uint8)
        np.maximum(out[k, : roll.shape[0]], roll, out=out[k, : roll.shape[0]])
    return out, sum(a is None for a in assignment)


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
    length = _target_length(max((int(p[4][0]) for p in parts), default=0), res, rep)
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


def bar_activity(roll: np.ndarray, rep: RepresentationParams) -> np.ndarray:
    """`[bars]` bool: is any note on in this bar, in any track."""
    t, n, p = roll.shape
    return roll.reshape(t, n // rep.steps_per_bar, rep.steps_per_bar, p).any(axis=(0, 2, 3))


def cut_phrases(roll: np.ndarray, rep: RepresentationParams, tp: TensorizeParams) -> np.ndarray:
    """`[T, steps, P]` -> `[n, T, n_bars, steps_per_bar, P]` phrases every `hop_bars` bars,
    skipping those with more than `max_empty_bars` all-silent bars."""
    t, n, p = roll.shape
    s, b = rep.steps_per_bar, rep.n_bars
    active = bar_activity(roll, rep)
    starts = [i for i in range(0, len(active) - b + 1, tp.hop_bars)
              if int((~active[i : i + b]).sum()) <= tp.max_empty_bars]
    bars = roll.reshape(t, n // s, s, p)
    if not starts:
        return np.zeros((0, t, b, s, p), dtype=bool)
    return np.stack([bars[:, i : i + b] for i in starts])


def phrases(roll: np.ndarray, params: Params) -> np.ndarray:
    """Grid roll `[T, steps, n_pitches]` (`to_grid`) -> uint8 phrases `[n, T, n_bars,
    steps_per_bar, n_pitches]`, one every `tensorize.hop_bars` bars, skipping phrases with more
    than `tensorize.max_empty_bars` all-silent bars. A partial last bar is padded with silence."""
    rep = params.representation
    roll = np.asarray(roll) > 0
    if roll.ndim != 3 or roll.shape[2] != rep.n_pitches:
        raise ValueError(f"roll shape {roll.shape} is not [tracks, steps, {rep.n_pitches}]")
    pad = -roll.shape[1] % rep.steps_per_bar
    if pad:
        roll = np.pad(roll, ((0, 0), (0, pad), (0, 0)))
    return cut_phrases(roll, rep, params.tensorize).astype(np.uint8)


def song_phrases(path: str | Path, params: Params, fmt: str | None = None) -> np.ndarray:
    """All phrases of one song, `[n, T, n_bars, steps_per_bar, n_pitches]` bool."""
    fmt = fmt or song_format(path)
    rep = params.representation
    if fmt == "npz":
        roll, _ = npz_roll(path, params.tracks, rep)
    else:
        roll, _ = multitrack_roll(read_song(path, rep, fmt).multitrack, params.tracks, rep)
    return cut_phrases(roll, rep, params.tensorize)


# ------------------------------------------------------------------------- parallel over songs

_WORKER_STATE: dict[str, object] = {}


def _init_worker(state: dict[str, object], quiet: bool = True) -> None:
    _WORKER_STATE.clear()
    _WORKER_STATE.update(state)
    if quiet:  # a pool worker: only warnings reach the shared stderr
        logging.getLogger().setLevel(logging.WARNING)


def worker_state(key: str):
    """What `map_songs(..., state=...)` handed to this worker process."""
    return _WORKER_STATE[key]


def n_workers(requested: int, n_jobs: int) -> int:
    """`requested` workers (0 = one per core), never more than there are jobs, at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(requested or cores, n_jobs))


def _start_method() -> str:
    """fork when it is safe (one Python thread, no torch runtime): workers start instantly with
    everything imported; otherwise forkserver (a clean single-threaded parent to fork from)."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1 and "torch" not in sys.modules:
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


def map_songs(fn: Callable[[T], R], jobs: Iterable[T], n_jobs: int, workers: int,
              state: dict[str, object], in_flight_per_worker: int = 4) -> Iterator[R]:
    """`fn` over `jobs` in order, in `workers` processes (1 = in this process).

    At most `workers * in_flight_per_worker` results exist at once (submitted, running or
    waiting to be consumed), so memory is bounded however many jobs there are. `fn` must be a
    module-level function; it reads `state` through `worker_state`. The pool starts here, before
    the caller iterates (so a progress bar's thread does not change how workers start).
    """
    workers = n_workers(workers, n_jobs)
    if workers == 1:
        _init_worker(state, quiet=False)
        return map(fn, jobs)
    ctx = multiprocessing.get_context(_start_method())
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload(["lpdvae.music"])
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(state,))
    return _ordered(pool, fn, jobs, workers * in_flight_per_worker)


def _ordered(pool: ProcessPoolExecutor, fn: Callable[[T], R], jobs: Iterable[T], limit: int) -> Iterator[R]:
    with pool:
        pending: deque[Future[R]] = deque()
        for job in jobs:
            pending.append(pool.submit(fn, job))
            if len(pending) >= limit:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
