"""Validate in parts: what one chunk of the manifest contributes, and that contribution on disk.

A part holds its manifest rows, each row's stats (`song_stats.stats_rows`: per song, no other
song involved) and each readable song's fingerprint (`tune_groups.SongContent`: title, top line,
note keys). Everything that compares songs with each other (tune groups, duplicates, the GX
suite over the whole table, drift) runs once, on the merged parts (`steps.validate.merge_parts`).

On disk (a fanned-out task's output): `part.json` (chunk, chunks), `rows.jsonl`, `stats.jsonl`
(key order kept: it is the stats table's column order), `songs.jsonl` + `songs.npz` (the
fingerprints' arrays, concatenated with offsets). JSON floats round-trip exactly, so the table
rebuilt from a part is the table built in one process.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lpdvae.errors import DataError
from lpdvae.io import atomic_dir, atomic_write_json, atomic_write_text, read_jsonl
from lpdvae.validation.tune_groups import SongContent

PART_FILES = ("part.json", "rows.jsonl", "stats.jsonl", "songs.jsonl", "songs.npz")


@dataclass(frozen=True)
class ValidatePart:
    """One chunk's share of validate (chunk 0 of 1: the whole manifest in one process)."""

    rows: list[dict[str, Any]]
    stats: dict[str, dict[str, Any]]  # manifest path -> stats row
    content: dict[str, SongContent]  # shown path -> fingerprint, readable songs only
    chunk: int = 0
    chunks: int = 1


def _jsonl(rows: Sequence[Any]) -> str:
    # no default=str: a value JSON cannot hold exactly (a numpy scalar) must fail here, not
    # come back as a string in the merged table
    return "".join(json.dumps(r) + "\n" for r in rows)


def write_part(part: ValidatePart, folder: Path) -> None:
    """`part` into `folder`, replaced atomically."""
    songs = sorted(part.content.values(), key=lambda c: c.path)
    with atomic_dir(Path(folder)) as tmp:
        atomic_write_json(tmp / "part.json", {"chunk": part.chunk, "chunks": part.chunks})
        atomic_write_text(tmp / "rows.jsonl", _jsonl(part.rows))
        atomic_write_text(tmp / "stats.jsonl", _jsonl([{"rel": k, "row": v} for k, v in part.stats.items()]))
        atomic_write_text(tmp / "songs.jsonl", _jsonl([[c.path, c.song_id, c.title] for c in songs]))
        arrays = {kind: [np.asarray(getattr(c, kind), np.int64) for c in songs] for kind in ("melody", "notes")}
        with open(tmp / "songs.npz", "wb") as fh:
            np.savez_compressed(fh, **{k: np.concatenate(v or [np.zeros(0, np.int64)]) for k, v in arrays.items()},
                                **{f"{k}_ends": np.cumsum([len(a) for a in v], dtype=np.int64) for k, v in arrays.items()})


def read_part(folder: Path) -> ValidatePart:
    """The part a task wrote into `folder`; a missing or malformed file is a DataError naming it."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / "part.json").read_text())
        rows, stats_lines, songs = (read_jsonl(folder / n) for n in ("rows.jsonl", "stats.jsonl", "songs.jsonl"))
        with np.load(folder / "songs.npz", allow_pickle=False) as npz:
            arrays = {k: np.split(npz[k], npz[f"{k}_ends"][:-1]) if len(npz[f"{k}_ends"]) else []
                      for k in ("melody", "notes")}
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{folder}: not a validate part: {exc}") from None
    if not len(songs) == len(arrays["melody"]) == len(arrays["notes"]):
        raise DataError(f"{folder}/songs.npz: {len(arrays['melody'])} fingerprints for {len(songs)} songs")
    content = {p: SongContent(p, sid, title, m, n)
               for (p, sid, title), m, n in zip(songs, arrays["melody"], arrays["notes"], strict=True)}
    return ValidatePart(rows, {s["rel"]: s["row"] for s in stats_lines}, content,
                        int(meta["chunk"]), int(meta["chunks"]))


def check_parts(parts: Sequence[ValidatePart]) -> list[ValidatePart]:
    """The parts in chunk order, refused unless they are chunks 0..n-1 of one plan, each once."""
    ordered = sorted(parts, key=lambda p: p.chunk)
    chunks = {p.chunks for p in ordered}
    if not ordered or len(chunks) != 1 or [p.chunk for p in ordered] != list(range(chunks.pop())):
        got = ", ".join(f"{p.chunk}/{p.chunks}" for p in ordered) or "none"
        raise DataError(f"validate merge: parts {got} are not chunks 0..n-1 of one plan, each once")
    return ordered
