"""Tensorize: accepted songs -> packed phrase shards + index, with a song-level split.

Songs are processed in parallel (`tensorize.workers`, 0 = one per CPU of the quota) and streamed: each
worker returns one song's phrases (packed bits), the parent feeds them to the ShardWriter in
song-path order. At most a few songs per worker are in flight, so peak memory is bounded by the
shard size, not by the corpus, and the output is byte-identical for any worker count.

Split: by song group (accepted.jsonl's `group`, the songs of one tune), from a salted hash of
the group name (`lpdvae.data.splits`; a corpus of 3 groups or more never leaves a split empty);
index.json lists each song's group beside its split. A split smaller than `tensorize.min_split_phrases` is a
warning in the log, the command's summary and index.json (`warnings`); an empty one is an error.
A stale temp folder of a killed run is removed by `io.atomic_dir` on the next run.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from lpdvae.data.music.phrases import song_phrases
from lpdvae.data.music.song import SongError, song_format
from lpdvae.data.pool import WORKER_CRASHED, map_songs, worker_state
from lpdvae.data.shards import SONG_ORDER, SPLITS, ShardWriter, pack, write_index
from lpdvae.data.splits import assign_splits, song_groups, split_of, split_report
from lpdvae.errors import DataError
from lpdvae.io import atomic_dir, read_jsonl
from lpdvae.params import Params

__all__ = ["TensorizeResult", "accepted_songs", "split_of", "tensor_params_digest", "tensorize"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TensorizeResult:
    out_dir: Path
    n_songs: int
    n_phrases: int
    phrases: dict[str, int] = field(default_factory=dict)  # per split
    songs: dict[str, int] = field(default_factory=dict)  # per split
    failed: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # splits too small for evaluation


def tensor_params_digest(params: Params) -> str:
    """sha256 of the params that decide the tensors (tracks, representation, validate,
    tensorize); train/evaluate settings and `tensorize.workers` do not change the dataset, so
    they are left out (index.json is byte-identical for any worker count)."""
    plain = params.to_dict()
    picked = {k: plain[k] for k in ("tracks", "representation", "validate", "tensorize")}
    picked["tensorize"] = {k: v for k, v in picked["tensorize"].items() if k != "workers"}
    blob = json.dumps(picked, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def accepted_songs(raw_dir: Path, validated_dir: Path) -> list[dict[str, Any]]:
    """accepted.jsonl rows, sorted by path, checked against the raw manifest (stale -> DataError)."""
    accepted_path = Path(validated_dir) / "accepted.jsonl"
    manifest_path = Path(raw_dir) / "manifest.jsonl"
    if not accepted_path.exists():
        raise DataError(f"{accepted_path}: not found (run `lpdvae validate` first)")
    if not manifest_path.exists():
        raise DataError(f"{manifest_path}: not found (run `lpdvae ingest` first)")
    manifest = {row["path"]: row["sha256"] for row in read_jsonl(manifest_path)}
    rows = sorted(read_jsonl(accepted_path), key=lambda r: r["path"])
    for row in rows:
        if manifest.get(row["path"]) != row["sha256"]:
            raise DataError(
                f"{accepted_path}: {row['path']} is not in {manifest_path} with sha256 {row['sha256'][:12]}… "
                "(the raw data changed since validation: run `lpdvae validate` again)"
            )
    return rows


def _song_job(job: tuple[str, str]) -> tuple[np.ndarray | None, str, str]:
    """Worker: (packed phrases or None, error reason, error detail) of one song file."""
    path, fmt = job
    params: Params = worker_state("params")  # type: ignore[assignment]
    try:
        phrases = song_phrases(path, params, fmt)
    except SongError as exc:
        return None, exc.reason, exc.detail
    return pack(phrases), "", ""


def _song_crashed(job: tuple[str, str], why: str) -> tuple[None, str, str]:
    """A song whose worker process died reading it: skipped with that reason, the rest go on."""
    return None, WORKER_CRASHED, why


def tensorize(raw_dir: Path, validated_dir: Path, out_dir: Path, params: Params, *,
              part: bool = False) -> TensorizeResult:
    """Cut every accepted song into phrases and write shards + index.json (see docs/architecture.md).

    `part`: these accepted rows are one chunk of a corpus and carry the split the whole corpus
    gave them (`components.sharding.write_chunk`); the split sizes are checked on the merge."""
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    rows = accepted_songs(raw_dir, Path(validated_dir))
    if part and any(r.get("split") not in SPLITS for r in rows):
        raise DataError(f"{Path(validated_dir) / 'accepted.jsonl'}: a chunk's rows must carry their "
                        "split (components.sharding.write_chunk writes them)")
    splits = ({r["song_id"]: r["split"] for r in rows} if part
              else assign_splits(song_groups(rows), params))
    rep = params.representation
    shape = (len(params.tracks), rep.n_bars, rep.steps_per_bar, rep.n_pitches)
    jobs = ((str(raw_dir / r["path"]), song_format(r["path"])) for r in rows)
    songs: dict[str, dict[str, Any]] = {}
    order: dict[str, list[str]] = {s: [] for s in SPLITS}  # write order: evaluation maps phrases to songs
    failed: list[dict[str, str]] = []
    with atomic_dir(out_dir) as tmp:
        writer = ShardWriter(tmp, shape, params.tensorize.shard_size)
        results = map_songs(_song_job, jobs, len(rows), params.tensorize.workers, {"params": params},
                            crashed=_song_crashed)
        for row, (packed, reason, detail) in tqdm(zip(rows, results, strict=True), total=len(rows),
                                                  desc="tensorize", unit="song", disable=None):
            split, group = splits[row["song_id"]], row.get("group") or row["song_id"]
            if packed is None:
                log.warning("%s: skipped (%s: %s)", row["path"], reason, detail)
                failed.append({"path": row["path"], "reason": reason, "detail": detail})
                songs[row["song_id"]] = {"split": split, "group": group, "n_phrases": 0, "error": reason}
                continue
            if len(packed):
                writer.add_packed(split, packed)
                order[split].append(row["song_id"])
            songs[row["song_id"]] = {"split": split, "group": group, "n_phrases": int(len(packed))}
        shards = writer.close()
        index = _index(params, shape, shards, songs)
        index[SONG_ORDER] = order
        if not part:  # an empty split raises here, before the output is swapped in
            index["warnings"] = split_report(index, params, f"tensorize {out_dir}")
        write_index(tmp, index)
    for warning in index.get("warnings", []):
        log.warning("tensorize: %s", warning)
    result = TensorizeResult(
        out_dir=out_dir, n_songs=len(rows), n_phrases=sum(s["n"] for s in index["splits"].values()),
        phrases={k: v["n"] for k, v in index["splits"].items()},
        songs={k: sum(1 for s in songs.values() if s["split"] == k) for k in SPLITS}, failed=failed,
        warnings=list(index.get("warnings", [])),
    )
    log.info("tensorize: %d songs -> %d phrases (%s) in %s", result.n_songs, result.n_phrases,
             ", ".join(f"{k} {v}" for k, v in result.phrases.items()), out_dir)
    return result


def _index(params: Params, shape: tuple[int, ...], shards: dict[str, list[dict[str, Any]]],
           songs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "shape": list(shape),
        "tracks": params.track_names,
        "packed": True,
        "splits": {s: {"shards": shards.get(s, []), "n": sum(e["n"] for e in shards.get(s, []))} for s in SPLITS},
        "songs": dict(sorted(songs.items())),
        "params_digest": tensor_params_digest(params),
        "representation": params.to_dict()["representation"],
        "track_specs": params.to_dict()["tracks"],
    }
