"""Validate's stats table: one row per manifest song (source tracks and where they went, meter,
tempo, length, notes, pitch range, emptiness, polyphony, phrases, metadata title), read in
parallel worker processes; a song that cannot be read gets `load_error` / `load_detail` instead.
The same workers give each readable song's top line and note keys (`lpdvae.validation.tune_groups`),
which stay out of the table.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import pypianoroll
from tqdm import tqdm

from lpdvae.data.music.grid import run_starts, song_roll
from lpdvae.data.music.load import read_song
from lpdvae.data.music.midi import sequence_name
from lpdvae.data.music.phrases import bar_activity, cut_phrases
from lpdvae.data.music.song import Song, SongError, song_format
from lpdvae.data.music.tracks import track_assignment, track_routing
from lpdvae.data.pool import WORKER_CRASHED, map_songs, worker_state
from lpdvae.params import Params
from lpdvae.validation.tune_groups import SongContent, note_keys, top_line

log = logging.getLogger(__name__)


def stats_rows(raw_dir: Path, rows: list[dict[str, Any]], params: Params,
               content: dict[str, SongContent] | None = None) -> dict[str, dict[str, Any]]:
    """{manifest path: its stats row} for `rows` (a chunk of the manifest, or all of it): the
    per-song half of validate's stats table (`stats_table`), which depends on no other song. A `SongContent`'s note keys
    (tens of KB a song, the bulk) go to an unlinked temporary file as they arrive and come back
    as views of its memory map, so memory holds the stats rows and top lines only."""
    jobs, stats = [], {}
    for row in rows:
        rel, shown = row["path"], printable_path(row["path"])
        if rel != shown:  # pandas' pyarrow strings cannot hold it: the table gets the escaped name
            stats[rel] = {"path": shown, "load_error": "file_name_not_utf8",
                          "load_detail": f"file name is not valid UTF-8 (shown with \\x escapes): {shown}"}
            continue
        fmt = row.get("format") or song_format(rel) or "unsupported"
        jobs.append((str(Path(raw_dir) / rel), rel, fmt))
    readable = [j for j in jobs if j[2] in ("midi", "npz")]
    stats |= {j[1]: {"path": j[1], "load_error": "unsupported_format",
                     "load_detail": f"unsupported file type {Path(j[1]).suffix!r}"} for j in jobs if j not in readable}
    results = map_songs(_stats_job, readable, len(readable), params.tensorize.workers, {"params": params},
                        crashed=_stats_crashed)
    ids = {r["path"]: r["sha256"] for r in rows}
    with tempfile.TemporaryFile(prefix="lpdvae-notes-") as spill:
        kept: list[tuple[str, str, np.ndarray, int]] = []  # path, title, top line, note count
        for out in tqdm(results, total=len(readable), desc="validate", unit="song", disable=None):
            melody, notes = out.pop("_melody", None), out.pop("_notes", None)
            if content is not None and melody is not None:
                spill.write(np.ascontiguousarray(notes, dtype=np.int64).tobytes())
                kept.append((out["path"], out["title"], np.asarray(melody).astype(np.int16), len(notes)))
            stats[out["path"]] = out
        if content is not None:
            content.update(_contents(kept, ids, spill))
    return stats


def stats_table(rows: list[dict[str, Any]], stats: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """The stats table of `rows` (manifest order) from their `stats_rows`, however many parts
    computed them: built from the same dicts, it is the same table."""
    table = pd.DataFrame([{"song_id": r["sha256"], "bytes": r.get("bytes"), **stats[r["path"]]} for r in rows])
    for col in ("load_error", "load_detail"):
        if col not in table:
            table[col] = None
    return table.reset_index(drop=True)


def _contents(kept: list[tuple[str, str, np.ndarray, int]], ids: dict[str, str],
              spill: IO[bytes]) -> dict[str, SongContent]:
    """SongContents whose notes are views of the spilled keys' memory map (which outlives the
    file object: the map holds the file until the last view goes)."""
    spill.flush()
    total = sum(k[3] for k in kept)
    keys = np.memmap(spill, dtype=np.int64, mode="r", shape=(total,)) if total else np.zeros(0, np.int64)
    ends = np.cumsum([k[3] for k in kept], dtype=np.int64)
    return {path: SongContent(path, ids[path], title, melody, keys[end - n:end])
            for (path, title, melody, n), end in zip(kept, ends.tolist(), strict=True)}


def song_stats(song: Song, params: Params) -> dict[str, Any]:
    """One stats row: source tracks, meter, tempo, length, notes, pitch range, emptiness, polyphony."""
    mt, rep = song.multitrack, params.representation
    assignment = track_assignment(mt, params.tracks)
    roll, dropped = song_roll(song, params.tracks, rep)
    kept = [k for k, a in enumerate(assignment) if a is not None]
    active = [_sounding(mt.tracks[k].pianoroll) for k in kept]
    onsets = [(song.onsets[k] if song.onsets is not None else run_starts(mt.tracks[k].pianoroll)) for k in kept]
    n_notes = int(sum(len(o) for o in onsets))
    lo, hi = rep.lowest_pitch, rep.lowest_pitch + rep.n_pitches
    outside = int(sum(((o[:, 1] < lo) | (o[:, 1] >= hi)).sum() for o in onsets))
    blended = np.any(np.stack([a.any(0) for a in active]), axis=0)[None] if active else np.zeros((1, 128), bool)
    lowest, highest = pypianoroll.pitch_range_tuple(blended)
    bars = bar_activity(roll, rep)
    per_step = (roll > 0).sum(axis=2)  # [T, steps]: pitches sounding per track and step
    tempo = np.asarray(mt.tempo, dtype=float).reshape(-1) if mt.tempo is not None else np.array([])
    tempo = tempo[np.isfinite(tempo)]
    phrases = cut_phrases(roll, rep, params.tensorize)
    return {
        "format": song.format,
        "parser": song.parser,
        "resolution": int(mt.resolution),
        "n_source_tracks": len(mt.tracks),
        "source_tracks": "|".join(str(t.name or "") for t in mt.tracks),
        "programs": "|".join(str(int(t.program or 0)) for t in mt.tracks),
        "drum_flags": "|".join("1" if t.is_drum else "0" for t in mt.tracks),
        "n_drum_tracks": sum(bool(t.is_drum) for t in mt.tracks),
        "tracks_present": "|".join(n for n, r in zip(params.track_names, roll, strict=True) if r.any()),
        "n_tracks_present": int(sum(bool(r.any()) for r in roll)),
        "n_unmatched_tracks": int(dropped),
        **track_routing([str(t.name or "") for t in mt.tracks], assignment, params.tracks),
        "tempo": float(np.median(tempo)) if tempo.size else np.nan,
        "tempo_min": float(tempo.min()) if tempo.size else np.nan,
        "tempo_max": float(tempo.max()) if tempo.size else np.nan,
        "n_beats": float(mt.get_max_length() / mt.resolution),
        "n_bars": int(len(bars)),
        "time_signature": song.time_signature,
        "time_signature_source": song.time_signature_source,
        "n_notes": n_notes,
        "pitch_min": float(lowest),
        "pitch_max": float(highest),
        "pitch_out_of_range_fraction": outside / n_notes if n_notes else 0.0,
        "empty_bar_ratio": float((~bars).mean()) if len(bars) else 1.0,
        "max_polyphony": int(per_step.max()) if per_step.size else 0,
        "polyphonic_rate": float(np.mean([pypianoroll.polyphonic_rate(a) for a in active if a.any()] or [0.0])),
        "min_velocity": song.min_velocity,
        "max_velocity": song.max_velocity,
        "nan_cells": int(sum(np.isnan(t.pianoroll).sum() for t in mt.tracks if t.pianoroll.dtype.kind == "f")),
        "n_phrases": int(len(phrases)),
        "title": song_title(song),
    }


def _sounding(roll: np.ndarray) -> np.ndarray:
    """Cells > 0 (NaN off); only a float roll needs the NaN pass and its copy."""
    roll = np.asarray(roll)
    return np.nan_to_num(roll.astype(np.float32)) > 0 if roll.dtype.kind == "f" else roll > 0


def song_title(song: Song) -> str:
    """The title the file gives: a MIDI's sequence name, an npz's multitrack name; "" if none.

    A name equal to one of the song's track names ("Piano") is an instrument's, and one equal to
    the file's stem names the file, not the piece: neither is a title (the first would put
    unrelated songs into one group)."""
    if song.format == "midi":
        try:
            title = sequence_name(Path(song.path).read_bytes())
        except OSError:
            return ""
    else:
        title = str(song.multitrack.name or "").strip()
    not_titles = {str(t.name or "").strip().casefold() for t in song.multitrack.tracks}
    not_titles.add(Path(song.path).stem.casefold())
    return "" if title.casefold() in not_titles else title


def song_melody_notes(song: Song, params: Params) -> tuple[np.ndarray, np.ndarray]:
    """(top line, note keys) over the song's non-drum tracks, by configured track (`tune_groups`),
    so two files of one song compare alike whatever their source track order."""
    mt = song.multitrack
    assignment = track_assignment(mt, params.tracks)
    by_track: list[list[np.ndarray]] = [[] for _ in params.tracks]
    for k, a in enumerate(assignment):
        if a is not None and params.tracks[a].kind != "drums":
            starts = song.onsets[k] if song.onsets is not None else run_starts(mt.tracks[k].pianoroll)
            by_track[a].append(starts)
    onsets = [np.concatenate(o) if o else np.zeros((0, 2), np.int64) for o in by_track]
    return top_line(onsets), note_keys(onsets, params.representation.beat_resolution / mt.resolution)


TOP_TRACKS = 20  # distinct dropped/merged entries listed in summary.json (stats.csv has every song's)


def track_summary(table: pd.DataFrame) -> dict[str, Any]:
    """Source tracks dropped or merged over the songs of `table` (stats rows): how many songs
    lost or merged tracks, and the most frequent dropped names / merges with their song counts."""
    def counts(column: str) -> dict[str, int]:
        values = table[column].dropna() if column in table else pd.Series([], dtype=object)
        found: dict[str, int] = {}
        for cell in values:
            for item in dict.fromkeys(str(cell).split("|")) if cell else ():
                found[item] = found.get(item, 0) + 1
        top = sorted(found.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_TRACKS]
        return dict(top)

    def songs_with(column: str) -> int:
        return int((table[column].fillna("").astype(str) != "").sum()) if column in table else 0

    return {"songs_with_dropped_tracks": songs_with("dropped_tracks"),
            "songs_with_merged_tracks": songs_with("merged_tracks"),
            "dropped": counts("dropped_tracks"), "merged": counts("merged_tracks")}


def track_warnings(tracks: dict[str, Any], n_songs: int) -> list[str]:
    """One line per kind of track loss in `track_summary`'s result (none when every source track
    has a configured track of its own)."""
    out = []
    if tracks["songs_with_dropped_tracks"]:
        names = ", ".join(f"{k} ({v})" for k, v in tracks["dropped"].items())
        out.append(f"{tracks['songs_with_dropped_tracks']} of {n_songs} accepted songs have source tracks that "
                   f"match no configured track and are dropped: {names} (stats.csv dropped_tracks, "
                   "track_map; add them to params tracks names/programs to keep them)")
    if tracks["songs_with_merged_tracks"]:
        merges = ", ".join(f"{k} ({v})" for k, v in tracks["merged"].items())
        out.append(f"{tracks['songs_with_merged_tracks']} of {n_songs} accepted songs merge several source tracks "
                   f"into one configured track: {merges} (stats.csv merged_tracks, track_map)")
    return out


def _stats_job(job: tuple[str, str, str]) -> dict[str, Any]:
    """Worker: the stats row of one manifest file, or its load error."""
    path, rel, fmt = job
    params: Params = worker_state("params")  # type: ignore[assignment]
    try:
        song = read_song(path, params.representation, fmt, max_beats=params.validate.max_song_beats)
        if song.onsets is None:  # an npz stores none: its runs' starts, found once for the three users below
            song = dataclasses.replace(song, onsets=tuple(run_starts(t.pianoroll) for t in song.multitrack.tracks))
        melody, notes = song_melody_notes(song, params)
        return {"path": rel, **song_stats(song, params), "_melody": melody, "_notes": notes}
    except SongError as exc:
        return {"path": rel, "load_error": exc.reason, "load_detail": _relative(exc.detail, path, rel)}
    except Exception as exc:  # noqa: BLE001 - a file no loader check anticipated must not stop the batch
        log.warning("%s: unexpected error while reading: %r", rel, exc)
        return {"path": rel, "load_error": "unreadable",
                "load_detail": _relative(f"{type(exc).__name__}: {exc}", path, rel)}


def _stats_crashed(job: tuple[str, str, str], why: str) -> dict[str, Any]:
    """The stats row of a song whose worker process died reading it (a parser's segfault, the
    OOM killer): quarantined for that, the batch goes on."""
    return {"path": job[1], "load_error": WORKER_CRASHED, "load_detail": why}


def _relative(detail: str, path: str, rel: str) -> str:
    """`detail` with the file's on-disk path (an OSError names it) as the manifest path, so
    stats.csv does not depend on where the raw folder lies."""
    for p in sorted({str(Path(path).resolve()), str(Path(path).absolute()), path}, key=len, reverse=True):
        detail = detail.replace(p, rel)
    return detail


def printable_path(rel: str) -> str:
    """`rel` as valid UTF-8 text: the bytes of a non-UTF-8 file name (Python's surrogate
    escapes) become `\\xNN`; a UTF-8 name comes back unchanged."""
    try:
        return rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte
        return rel.encode("utf-8", "backslashreplace").decode("utf-8")
