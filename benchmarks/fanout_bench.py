"""What a data fan-out costs per song, measured here, and what that makes of LPD-5's 174,154 songs.

On a synthetic LPD-5-like corpus (`benchmarks.lpd_synth`), one worker (so the figures are per
core), side by side in one run:
- validate's per-song half (`validate_part`: load, stats row, fingerprint) over every song,
- the same in `--chunks` parts, each written and read back as a fanned-out task hands it on,
  then the merge (`merge_parts`: one table, tune groups, duplicates, GX suite, outputs); the
  merged folder is checked to be the bytes of one `validate`; the merge again over one chunk's
  songs, which splits its time into a fixed part and a per-song slope,
- tensorize over the accepted songs,
- a task's fixed start in this image: a fresh Python importing what a chunk task imports.
The projection (`projection` in the JSON) puts these into the pipeline's shape: chunks of
`fanout_songs_per_chunk` songs (at most `fanout_max_chunks`), `FANOUT_PARALLELISM` at once, each on
the chunk task's CPU limit. Pod scheduling, image pull and S3 latency are not measurable here:
they enter as the stated `POD_START_S` and `S3_GET_S` assumptions.

    python -m benchmarks.fanout_bench [--songs 300] [--chunks 3]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "fanout.json"
LPD5_SONGS = {"lpd5_full": 174_154, "lpd5_cleansed": 21_425}
POD_START_S = 30.0  # assumed: schedule + pull a cached image + KFP launcher (not measurable here)
S3_GET_S = 0.03  # assumed: one small-object GET's latency in-region; FETCH_THREADS of them overlap
IMPORTS = "import components.sharding, lpdvae.steps.validate, lpdvae.steps.tensorize, lpdvae.data.store"


def _params():
    from benchmarks.lpd_synth import LPD5_TRACKS
    from lpdvae.params import load_params

    return load_params(HERE.parent / "params.yaml", {"tracks": LPD5_TRACKS, "tensorize.workers": 1})


def _timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def start_s() -> float:
    """Wall time of a fresh interpreter importing a chunk task's modules (the image's part of a task's start)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", IMPORTS], check=True, cwd=HERE.parent)
    return time.perf_counter() - start


def measure(work: Path, n_songs: int, chunks: int) -> dict:
    from benchmarks.lpd_synth import write_corpus
    from components.sharding import chunk_rows
    from lpdvae.steps.tensorize import tensorize
    from lpdvae.steps.validate import merge_parts, read_manifest, validate, validate_part
    from lpdvae.validation.parts import read_part, write_part

    raw, params = work / "raw", _params()
    write_corpus(raw, n_songs)
    rows = read_manifest(raw)
    one_s, _ = _timed(validate, raw, work / "one", params, docs_dir=work / "one-docs")
    part_s = []
    for c in range(chunks):
        t, part = _timed(validate_part, raw, chunk_rows(rows, c, chunks), params, c, chunks)
        part_s.append(t + _timed(write_part, part, work / f"part{c}")[0])
    merge_s, _ = _timed(lambda: merge_parts([read_part(work / f"part{c}") for c in range(chunks)],
                                            work / "merged", params, docs_dir=work / "merged-docs"))
    first = replace(read_part(work / "part0"), chunk=0, chunks=1)  # a corpus of one chunk's songs
    small_s, _ = _timed(merge_parts, [first], work / "merged-small", params, docs_dir=work / "small-docs")
    slope = (merge_s - small_s) / max(n_songs - len(first.rows), 1)  # the merge: fixed + per song
    tensorize_s, result = _timed(tensorize, raw, work / "one", work / "tensors", params)
    same = all((work / "one" / f).read_bytes() == (work / "merged" / f).read_bytes()
               for f in ("accepted.jsonl", "quarantine.jsonl", "stats.csv", "summary.json"))
    return {"songs": n_songs, "chunks": chunks, "accepted": result.n_songs, "validate_one_s": one_s,
            "validate_parts_s": part_s, "validate_merge_s": merge_s, "tensorize_s": tensorize_s,
            "validate_merge_small": {"songs": len(first.rows), "s": small_s},
            "validate_merge_fixed_s": max(merge_s - slope * n_songs, 0.0),
            "merged_equals_one_validate": same, "task_start_s": start_s(),
            "per_song_s": {"validate_part": sum(part_s) / n_songs, "validate_merge": max(slope, 0.0),
                           "tensorize": tensorize_s / max(result.n_songs, 1)}}


def project(m: dict, songs: int, per_chunk: int = 2000, max_chunks: int = 16, parallel: int = 8,
            cpus: int = 4) -> dict:
    """Wall time of the two fan-outs for `songs` songs: waves of `parallel` chunk tasks, each
    `cpus` workers on its chunk (its fetch overlapped FETCH_THREADS-fold), plus the serial merge."""
    from lpdvae.data.store import FETCH_THREADS

    chunks = max(1, min(max_chunks, math.ceil(songs / per_chunk)))
    per, waves = math.ceil(songs / chunks), math.ceil(chunks / parallel)
    fetch = per * S3_GET_S / FETCH_THREADS
    cost = m["per_song_s"]
    validate_chunk = POD_START_S + m["task_start_s"] + fetch + per * cost["validate_part"] / cpus
    tensorize_chunk = POD_START_S + m["task_start_s"] + fetch + per * cost["tensorize"] / cpus
    merge = POD_START_S + m["task_start_s"] + m["validate_merge_fixed_s"] + songs * cost["validate_merge"]
    return {"songs": songs, "chunks": chunks, "songs_per_chunk": per, "waves": waves,
            "validate_chunk_s": validate_chunk, "tensorize_chunk_s": tensorize_chunk, "validate_merge_s": merge,
            "fan_out_wall_s": waves * (validate_chunk + tensorize_chunk) + merge,
            "one_task_wall_s": songs * (cost["validate_part"] + cost["tensorize"]) / cpus + merge,
            "overhead_share": (POD_START_S + m["task_start_s"]) / validate_chunk,
            "cpu_hours": songs * (cost["validate_part"] + cost["tensorize"] + cost["validate_merge"]) / 3600}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fanout_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--songs", type=int, default=300, help="synthetic songs (default %(default)s)")
    parser.add_argument("--chunks", type=int, default=3, help="validate parts (default %(default)s)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON result (default %(default)s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        m = measure(Path(work), args.songs, args.chunks)
    m["assumed"] = {"pod_start_s": POD_START_S, "s3_get_s": S3_GET_S}
    m["projection"] = {name: project(m, n) for name, n in LPD5_SONGS.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(m, indent=2) + "\n")
    print(json.dumps(m, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
