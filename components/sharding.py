"""Fan-out for large corpora: split the songs into chunks, run a data step's per-song part per chunk.

Validate's chunks are contiguous runs of the manifest (`validate_chunk`; the merge is
`lpdvae.steps.validate.merge_parts`); tensorize's, of `accepted.jsonl`. Each chunk task reads
from ingest's stored output only its own songs (`lpdvae.data.store`).

A tensorize chunk also reads only `accepted.jsonl` of validate's stored output. Tensorize's merge streams each chunk's shards, in chunk order, through the same `ShardWriter` the step uses. So the merged
folder is byte-identical to what one `tensorize` over all songs writes: the fan-out changes how
fast tensors are made, never which tensors.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lpdvae.data.shards import SONG_ORDER, SPLITS, ShardWriter, open_shard, read_index, write_index
from lpdvae.data.splits import assign_splits, song_groups, split_report
from lpdvae.errors import DataError
from lpdvae.io import atomic_dir, atomic_write_jsonl, read_jsonl
from lpdvae.params import Params

log = logging.getLogger(__name__)

ACCEPTED = "accepted.jsonl"
MERGE_SLICE = 512  # phrases copied at a time while merging: bounds memory, not output


def n_chunks(n_songs: int, songs_per_chunk: int, max_chunks: int) -> int:
    """How many tensorize tasks: one per `songs_per_chunk` songs, between 1 and `max_chunks`."""
    if songs_per_chunk < 1 or max_chunks < 1:
        raise ValueError("songs_per_chunk and max_chunks must be >= 1")
    return max(1, min(max_chunks, math.ceil(n_songs / songs_per_chunk)))


def chunk_rows(rows: Sequence[dict[str, Any]], chunk: int, chunks: int) -> list[dict[str, Any]]:
    """Chunk `chunk` of `chunks` contiguous, near-equal runs of `rows` sorted by path."""
    if not 0 <= chunk < chunks:
        raise ValueError(f"chunk {chunk} is not in 0..{chunks - 1}")
    ordered = sorted(rows, key=lambda r: r["path"])
    n = len(ordered)
    return ordered[chunk * n // chunks : (chunk + 1) * n // chunks]


def write_chunk(validated_dir: Path, chunk: int, chunks: int, out_dir: Path, params: Params) -> int:
    """A validated folder holding only this chunk's accepted songs, each with the split the whole
    corpus gives it (`assign_splits` looks at every song's group); returns their number."""
    every = read_jsonl(Path(validated_dir) / ACCEPTED)
    splits = assign_splits(song_groups(every), params)
    rows = [{**r, "split": splits[r["song_id"]]} for r in chunk_rows(every, chunk, chunks)]
    atomic_write_jsonl(Path(out_dir) / ACCEPTED, rows)
    return len(rows)


def tensorize_chunk(raw_uri: str, validated_uri: str, chunk: int, chunks: int, out_dir: Path,
                    params: Params, work: Path) -> int:
    """Tensorize chunk `chunk` of `chunks` reading from where ingest's and validate's outputs are
    stored (`lpdvae.data.store`) only `accepted.jsonl` and this chunk's songs, into `work`; returns
    the number of songs. Same tensors as `tensorize` over the whole raw folder with this chunk's
    accepted rows."""
    from lpdvae.data.store import fetch_one, fetch_songs, locate
    from lpdvae.steps.tensorize import tensorize

    fetch_one(locate(validated_uri), ACCEPTED, work / "all" / ACCEPTED)
    n = write_chunk(work / "all", chunk, chunks, work / "validated", params)
    rows = [{"path": r["path"], "sha256": r["sha256"]} for r in read_jsonl(work / "validated" / ACCEPTED)]
    fetch_songs(locate(raw_uri), rows, work / "raw", params.data.max_file_bytes)
    tensorize(work / "raw", work / "validated", out_dir, params, part=True)
    return n


def validate_chunk(raw_uri: str, chunk: int, chunks: int, out_dir: Path, params: Params, work: Path) -> int:
    """Validate's per-song half over chunk `chunk` of `chunks` contiguous runs of the manifest,
    reading from `raw_uri` only the manifest and this chunk's songs; the part into `out_dir`.
    Returns the number of manifest rows in the chunk."""
    from lpdvae.data.sources.base import MANIFEST
    from lpdvae.data.store import fetch_one, fetch_songs, locate
    from lpdvae.steps.validate import read_manifest, validate_part
    from lpdvae.validation.parts import write_part
    from lpdvae.validation.song_stats import printable_path

    loc = locate(raw_uri)
    fetch_one(loc, MANIFEST, work / "manifest" / MANIFEST)
    rows = chunk_rows(read_manifest(work / "manifest"), chunk, chunks)
    readable = [r for r in rows if printable_path(r["path"]) == r["path"]]  # the others are never opened
    fetch_songs(loc, readable, work / "raw", params.data.max_file_bytes)
    write_part(validate_part(work / "raw", rows, params, chunk, chunks), out_dir)
    return len(rows)


def merge_tensor_dirs(parts: Sequence[Path], out_dir: Path, params: Params) -> dict[str, Any]:
    """One tensor folder (shards + index.json) from chunk folders given in chunk order; the
    split sizes of the whole are checked here (`split_report`), as one tensorize does."""
    if not parts:
        raise DataError("merge: no tensor chunks to merge")
    indexes = [read_index(p) for p in parts]
    _check_compatible(parts, indexes)
    shape = tuple(indexes[0]["shape"])
    songs: dict[str, Any] = {}
    for part, index in zip(parts, indexes, strict=True):
        overlap = songs.keys() & index.get("songs", {}).keys()
        if overlap:
            raise DataError(f"merge: song {sorted(overlap)[0]} is in more than one chunk ({part})")
        songs.update(index.get("songs", {}))
    with atomic_dir(out_dir) as tmp:
        writer = ShardWriter(tmp, shape, params.tensorize.shard_size)
        for split in SPLITS:
            for part, index in zip(parts, indexes, strict=True):
                _copy_split(writer, Path(part), index, split)
        shards = writer.close()
        merged = dict(indexes[0])
        merged["splits"] = {s: {"shards": shards.get(s, []), "n": sum(e["n"] for e in shards.get(s, []))}
                            for s in SPLITS}
        merged["songs"] = dict(sorted(songs.items()))
        # the chunks' song orders end to end, as their phrases were copied (the song bootstrap reads it)
        merged[SONG_ORDER] = {s: [sid for index in indexes for sid in index.get(SONG_ORDER, {}).get(s, [])]
                              for s in SPLITS}
        merged["warnings"] = split_report(merged, params, f"merge {out_dir}")
        write_index(tmp, merged)
    for warning in merged["warnings"]:
        log.warning("tensorize: %s", warning)
    return merged


def _copy_split(writer: ShardWriter, part: Path, index: dict[str, Any], split: str) -> None:
    shape = index["shape"]
    for entry in index["splits"].get(split, {}).get("shards", []):
        packed = open_shard(part, entry, shape)
        for start in range(0, len(packed), MERGE_SLICE):
            writer.add_packed(split, np.asarray(packed[start : start + MERGE_SLICE]))


def _check_compatible(parts: Sequence[Path], indexes: Sequence[dict[str, Any]]) -> None:
    first = indexes[0]
    for part, index in zip(parts[1:], indexes[1:], strict=True):
        for key in ("shape", "tracks", "packed", "params_digest"):
            if index.get(key) != first.get(key):
                raise DataError(f"merge: {part} has {key}={index.get(key)!r}, {parts[0]} has "
                                f"{first.get(key)!r}: chunks of different tensorize settings")


def tensor_metadata(tensor_dir: Path) -> dict[str, Any]:
    """What the KFP UI shows for a tensor dataset: phrases per split and the DVC hash."""
    from lpdvae.registry.lineage import dvc_hash

    index = read_index(tensor_dir)
    meta: dict[str, Any] = {f"n_{s}": index["splits"].get(s, {}).get("n", 0) for s in SPLITS}
    meta["songs"] = len(index.get("songs", {}))
    meta["split_warnings"] = len(index.get("warnings", []))
    meta["dvc_hash"] = dvc_hash(tensor_dir)
    return meta
