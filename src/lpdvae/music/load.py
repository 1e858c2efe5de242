"""Read one song file (MIDI or LPD `.npz`) into a pypianoroll `Multitrack`.

A bad file never crashes a batch with an unrelated exception: every failure is a `SongError`
naming the file, a short `reason` for `quarantine.jsonl` and a human `detail`. MIDI goes
through the symusic adapter (`lpdvae.music.midi`) and is quantized by
`pypianoroll.from_pretty_midi`, so the rolls are identical to `pypianoroll.read`'s.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pypianoroll

from lpdvae.music.midi import parse_midi
from lpdvae.music.song import Song, SongError, song_format
from lpdvae.params import RepresentationParams

MAX_BEATS = 20_000  # ~2.8 h at 120 bpm: longer "songs" are corrupt files that would exhaust RAM


def read_song(path: str | Path, rep: RepresentationParams, fmt: str | None = None) -> Song:
    """Read one song file with its meter and value range; raises SongError (never anything
    else) when it cannot be read."""
    path = Path(path)
    fmt = fmt or song_format(path.name)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise SongError(path, "unreadable", f"cannot read file: {exc}") from None
    if size == 0:
        raise SongError(path, "empty_file", "file is empty (0 bytes)")
    if fmt not in ("midi", "npz"):
        raise SongError(path, "unsupported_format",
                        f"unsupported file type {path.suffix!r} (expected .mid, .midi or .npz)")
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
    pm, parser = parse_midi(path)
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
