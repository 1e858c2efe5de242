"""Read one song file (MIDI or LPD `.npz`) into a pypianoroll `Multitrack`.

A bad file never crashes a batch with an unrelated exception: every failure is a `SongError`
naming the file, a short `reason` for `quarantine.jsonl` and a human `detail`. MIDI goes
through the symusic adapter (`lpdvae.data.music.midi`) and is quantized by
`pypianoroll.from_pretty_midi`, so the rolls are identical to `pypianoroll.read`'s.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pretty_midi
import pypianoroll

from lpdvae.data.music.midi import parse_midi
from lpdvae.data.music.song import Song, SongError, song_format
from lpdvae.params import RepresentationParams

MAX_TRACKS_AT_LIMIT = 16  # a MIDI may hold this many instruments of `max_song_beats` beats
HEADER_MAX_BYTES = 1 << 20  # info.json and shape arrays: an LPD file's are a few hundred bytes

def read_song(path: str | Path, rep: RepresentationParams, fmt: str | None = None, *, max_beats: float) -> Song:
    """Read one song file with its meter, value range and (MIDI) note onsets; raises SongError
    (never anything else) when it cannot be read.

    Songs longer than `max_beats` (params `validate.max_song_beats`) are refused (`too_long`)
    from the declared sizes (MIDI ticks, npz array shapes) before any roll is allocated."""
    path = Path(path)
    fmt = fmt or song_format(path.name)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise SongError(path, "unreadable", f"cannot read file: {exc}") from None
    if size == 0:
        raise SongError(path, "empty_file", "file is empty (0 bytes)")
    if fmt == "npz":
        return _load_npz_song(path, max_beats, rep.source_resolution)
    if fmt == "midi":
        return _load_midi_song(path, rep.source_resolution, max_beats)
    raise SongError(path, "unsupported_format", f"unsupported file type {path.suffix!r} (expected .mid, .midi or .npz)")


def _too_long(path: Path, n_beats: float, max_beats: float, what: str) -> SongError:
    return SongError(path, "too_long", f"{what} {n_beats:.0f} beats (limit validate.max_song_beats = "
                     f"{max_beats:g}): probably corrupt")


# ---------------------------------------------------------------------------------------- npz


def _load_npz_song(path: Path, max_beats: float, source_resolution: int) -> Song:
    check_npz_size(path, max_beats, source_resolution)
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


def check_npz_size(path: Path, max_beats: float, source_resolution: int) -> None:
    """Refuse, from the declared shapes and the zip's uncompressed sizes, an npz whose rolls
    would not fit `max_beats` (`too_long`) or `max_beats x source_resolution` time steps
    (`too_large`: a huge declared resolution makes few beats of many steps), or whose members
    unpack to more than those shapes allow (a zip bomb), before anything is allocated; then
    check the sparse arrays, so no out-of-range index reaches scipy or numpy."""
    sizes = _npz_member_sizes(path)
    res, shapes = _npz_header(path, sizes)
    max_steps = int(max_beats * source_resolution)
    _check_shapes(path, res, shapes, max_beats, max_steps)
    cap = 8 * max_steps * 128 + HEADER_MAX_BYTES  # at most one 8-byte value per cell of the longest roll
    big = next((k for k, n in sizes.items() if n > cap), None)
    if big:
        raise SongError(path, "npz_invalid", f"{big} unpacks to {sizes[big]} bytes, more than a "
                        f"{max_steps}-step roll can hold ({cap})")
    _check_sparse(path, shapes)


def _npz_member_sizes(path: Path) -> dict[str, int]:
    """Uncompressed size per array name, with info.json present and the header arrays small."""
    try:
        with zipfile.ZipFile(path) as zf:
            sizes = {i.filename.removesuffix(".npy"): i.file_size for i in zf.infolist()}
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise SongError(path, "corrupt_npz", f"not a readable npz (zip) archive, truncated? ({exc})") from None
    if "info.json" not in sizes:
        raise SongError(path, "npz_missing_keys", "npz has no info.json: not a pypianoroll/LPD file "
                        f"(keys: {', '.join(sorted(sizes)[:8])})")
    small = {k: n for k, n in sizes.items() if k == "info.json" or k.endswith("_csc_shape")}
    big = next((k for k, n in small.items() if n > HEADER_MAX_BYTES), None)
    if big:
        raise SongError(path, "npz_invalid", f"{big} unpacks to {small[big]} bytes (limit {HEADER_MAX_BYTES})")
    return sizes


def _npz_header(path: Path, sizes: dict[str, int]) -> tuple[int, dict[str, list[int]]]:
    """The resolution and each sparse roll's declared shape (`pianoroll_0_csc` -> [time, pitches])."""
    try:
        with np.load(path, allow_pickle=False) as z:
            info = json.loads(_text(z["info.json"]))
            res = int(info.get("resolution") or info.get("beat_resolution") or 0)
            shapes = {k.removesuffix("_shape"): [int(x) for x in np.asarray(z[k]).reshape(-1)]
                      for k in sizes if k.endswith("_csc_shape")}
    except Exception as exc:  # noqa: BLE001 - untrusted file: any failure is a SongError
        raise SongError(path, "npz_invalid", f"cannot read npz header arrays: {exc}") from None
    if res <= 0:
        raise SongError(path, "npz_invalid", f"resolution must be a positive integer, got {res!r}")
    return res, shapes


def _check_shapes(path: Path, res: int, shapes: dict[str, list[int]], max_beats: float, max_steps: int) -> None:
    for key, shape in shapes.items():
        if len(shape) != 2 or shape[1] != 128 or shape[0] < 0:
            raise SongError(path, "npz_invalid", f"{key} declares shape {tuple(shape)}, expected (time, 128)")
        if shape[0] / res > max_beats:
            raise _too_long(path, shape[0] / res, max_beats, f"{key} declares")
        if shape[0] > max_steps:
            raise SongError(path, "too_large", f"{key} declares {shape[0]} time steps x 128 pitches at "
                            f"resolution {res} (limit validate.max_song_beats x representation."
                            f"source_resolution = {max_steps} steps)")
    total = sum(shape[0] for shape in shapes.values())
    if total > MAX_TRACKS_AT_LIMIT * max_steps:
        raise SongError(path, "too_large", f"{len(shapes)} tracks declare {total} time steps in all "
                        f"(limit {MAX_TRACKS_AT_LIMIT} tracks of {max_steps} steps)")


def _check_sparse(path: Path, shapes: dict[str, list[int]]) -> None:
    """Each CSC roll's arrays consistent with its shape (scipy's `toarray` trusts them: an
    out-of-range index writes outside the array and kills the process)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            for key, (n_rows, n_cols) in shapes.items():
                problem = csc_problem(z[f"{key}_data"], z[f"{key}_indices"], z[f"{key}_indptr"], n_rows, n_cols)
                if problem:
                    raise SongError(path, "npz_invalid", f"{key}: {problem}")
    except SongError:
        raise
    except KeyError as exc:
        raise SongError(path, "npz_missing_keys", f"npz misses array {exc}") from None
    except Exception as exc:  # noqa: BLE001 - untrusted file: any failure is a SongError
        raise SongError(path, "corrupt_npz", f"cannot read npz piano rolls: {exc}") from None


def csc_problem(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, n_rows: int, n_cols: int) -> str | None:
    """What makes (data, indices, indptr) not a valid `[n_rows, n_cols]` CSC matrix, or None."""
    if data.ndim != 1 or indices.ndim != 1 or indptr.ndim != 1:
        return "data, indices and indptr must be 1-D arrays"
    if indices.dtype.kind not in "iu" or indptr.dtype.kind not in "iu":
        return f"indices ({indices.dtype}) and indptr ({indptr.dtype}) must be integers"
    if len(indptr) != n_cols + 1:
        return f"indptr has {len(indptr)} entries, expected {n_cols + 1} (the declared shape)"
    if indptr[0] != 0 or (np.diff(indptr.astype(np.int64)) < 0).any():
        return "indptr must start at 0 and never decrease"
    if int(indptr[-1]) != len(indices) or len(data) != len(indices):
        return f"indptr ends at {int(indptr[-1])}, with {len(indices)} indices and {len(data)} values"
    if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= n_rows):
        bad = int(indices.min()) if int(indices.min()) < 0 else int(indices.max())
        return f"row index {bad} is outside 0..{n_rows - 1} (the declared shape)"
    return None


def _text(value: bytes | np.ndarray) -> str:
    return (value if isinstance(value, bytes) else np.asarray(value).tobytes()).decode("utf-8")


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


def _load_midi_song(path: Path, resolution: int, max_beats: float) -> Song:
    pm, parser = parse_midi(path)
    if not any(i.notes for i in pm.instruments):
        raise SongError(path, "no_notes", "MIDI file has no notes")
    _check_midi_size(path, pm, resolution, max_beats)
    if pm.get_end_time() <= 0 or len(pm.get_beats()) < 2:
        raise SongError(path, "too_short", "MIDI file is shorter than two beats")
    try:
        with np.errstate(divide="ignore", invalid="ignore"):
            mt = pypianoroll.from_pretty_midi(pm, resolution=resolution, mode="sum")
            onsets = _note_onsets(pm, resolution)
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
                float(min(velocities, default=0)), float(max(velocities, default=0)), onsets)


def _check_midi_size(path: Path, pm: pretty_midi.PrettyMIDI, resolution: int, max_beats: float) -> None:
    """Refuse a song whose roll would exceed `max_beats` (`too_long`), or `MAX_TRACKS_AT_LIMIT`
    such tracks (`too_large`), from its last tick, before pretty_midi lists its beats and
    pypianoroll allocates `[beats * resolution, 128]` per instrument."""
    quarters = pm.time_to_tick(pm.get_end_time()) / max(pm.resolution, 1)
    denominator = max([int(t.denominator) for t in pm.time_signature_changes] + [4])
    n_beats = quarters * denominator / 4  # pretty_midi's beats follow the meter's denominator
    if n_beats > max_beats:
        raise _too_long(path, n_beats, max_beats, "the last event is at")
    n_tracks = len(pm.instruments)
    if n_tracks * n_beats > MAX_TRACKS_AT_LIMIT * max_beats:
        raise SongError(path, "too_large", f"{n_tracks} tracks x {n_beats:.0f} beats: the rolls would take "
                        f"{n_tracks * n_beats * resolution * 128 * 8 / 2**30:.1f} GiB")


def _note_onsets(pm: pretty_midi.PrettyMIDI, resolution: int) -> tuple[np.ndarray, ...]:
    """Per instrument, int `[n, 2]` (step at `resolution`, pitch) of every note start, quantized
    exactly as `pypianoroll.from_pretty_midi` quantizes the note starts of its rolls."""
    changes = sorted(pm.time_signature_changes, key=lambda t: t.time)
    first = changes[0].time if changes else pm.estimate_beat_start()
    beats = np.sort(pm.get_beats(first))
    one_more = np.append(beats, 2 * beats[-1] - beats[-2])
    out = []
    for inst in pm.instruments:
        notes = np.array([(n.start, n.pitch) for n in inst.notes if n.end > first], dtype=float).reshape(-1, 2)
        index = np.searchsorted(beats, notes[:, 0]) - 1
        ratio = (notes[:, 0] - beats[index]) / (one_more[index + 1] - beats[index])
        steps = np.round((index + ratio) * resolution).astype(np.int64)
        out.append(np.stack([steps, notes[:, 1].astype(np.int64)], axis=1))
    return tuple(out)
