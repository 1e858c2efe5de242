"""The data steps at corpus scale: ingest (from a folder), validate and tensorize, as the real
steps, on synthetic LPD-5 songs (`benchmarks.lpd_synth.write_corpus`), at two corpus sizes in
one run.

Each step runs in a fresh child process, so its peak memory is its own: the child reports its
wall time and max RSS (`getrusage` of itself, and of its largest pool worker), and this process
samples the summed RSS of the child's whole process tree. Memory flat in corpus size means the
ratio large/small of each step's peak stays near 1 (what grows are the per-song records: the
manifest rows, the stats table, the top lines).

    python -m benchmarks.scale_bench [--songs 21000] [--small 2000] [--workers 0]

Params: profiles/lpd5.yaml when it exists, else params.yaml with the LPD-5 tracks of
`benchmarks.lpd_synth` (the JSON records which). Numbers go to docs/decisions.md, not here.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results" / "scale.json"
PROFILE = REPO / "profiles" / "lpd5.yaml"
STEPS = ("ingest", "ingest_rerun", "validate", "tensorize")
MODULES = {"ingest": "lpdvae.steps.ingest", "ingest_rerun": "lpdvae.steps.ingest",
           "validate": "lpdvae.steps.validate", "tensorize": "lpdvae.steps.tensorize"}
CHUNK = 250  # songs per corpus-building job


def bench_params(workers: int):
    """The LPD-5 params (the profile, or the synthetic corpus's tracks), `workers` per pool."""
    from benchmarks.lpd_synth import LPD5_TRACKS
    from lpdvae.params import load_params, profile_overrides

    overrides = profile_overrides(PROFILE) if PROFILE.exists() else {"tracks": LPD5_TRACKS}
    overrides.pop("data.source", None)
    return load_params(REPO / "params.yaml", {**overrides, "tensorize.workers": workers})


def _make(args: tuple[str, int, int]) -> None:
    from benchmarks.lpd_synth import write_corpus

    write_corpus(Path(args[0]), args[1], args[2])


def build_source(src: Path, n_songs: int, workers: int) -> None:
    """A folder of `n_songs` synthetic songs (the song files only: what ingest reads), built in
    chunks by `workers` processes; songs already there are kept (the corpus is cached)."""
    have = {p.name for p in src.rglob("*.npz")} if src.exists() else set()
    todo = [(str(src.parent / f".{src.name}.part{i}"), min(CHUNK, n_songs - i), i)
            for i in range(0, n_songs, CHUNK)
            if any(f"song{k:06d}.npz" not in have for k in range(i, min(i + CHUNK, n_songs)))]
    with ProcessPoolExecutor(max(1, workers)) as pool:
        list(pool.map(_make, todo))
    for part, _, _ in todo:
        for f in sorted((Path(part) / "files").rglob("*.npz")):
            dest = src / f.relative_to(Path(part) / "files")
            dest.parent.mkdir(parents=True, exist_ok=True)
            f.replace(dest)
        shutil.rmtree(part)


def subset(src: Path, dest: Path, n_songs: int) -> None:
    """The first `n_songs` songs of `src` (hard links), the smaller corpus of the same songs."""
    if dest.exists():
        shutil.rmtree(dest)
    for f in sorted(src.rglob("*.npz"))[:n_songs]:
        (dest / f.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
        os.link(f, dest / f.relative_to(src))


def run_step(step: str, src: Path, work: Path, workers: int) -> int:
    """One step as the CLI runs it; returns the songs it went through."""
    params = bench_params(workers)
    raw, validated, tensors = work / "raw", work / "validated", work / "tensors"
    if step in ("ingest", "ingest_rerun"):
        from lpdvae.steps.ingest import ingest

        return ingest(str(src), raw, params).n_files
    if step == "validate":
        from lpdvae.steps.validate import validate

        return validate(raw, validated, params, docs_dir=work / "docs").n_songs
    from lpdvae.steps.tensorize import tensorize

    return tensorize(raw, validated, tensors, params).n_songs


def child(step: str, src: str, work: str, workers: int) -> None:
    """Runs in a fresh process: one step, then its wall time and max RSS as JSON on stdout.
    The step's imports come first, untimed: a per-process constant, not throughput."""
    importlib.import_module(MODULES[step])
    start = time.perf_counter()
    songs = run_step(step, Path(src), Path(work), workers)
    seconds = time.perf_counter() - start
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest waited-for child
    print(json.dumps({"songs": songs, "seconds": seconds, "songs_per_s": songs / seconds,
                      "max_rss_mb": own, "max_worker_rss_mb": worker}))


def measure(step: str, src: Path, work: Path, workers: int) -> dict:
    """`step` in a child process; its report plus the sampled peak RSS of its process tree."""
    from benchmarks.tensorize_bench import run_child

    result = run_child(["benchmarks.scale_bench", "--child", step, str(src), str(work), str(workers)],
                       f"{step} on {src}", interval=0.1)
    print(f"  {step:12s} {result['songs']:6d} songs {result['seconds']:8.1f}s {result['songs_per_s']:8.1f} songs/s"
          f"  max RSS {result['max_rss_mb']:6.0f} MiB (worker {result['max_worker_rss_mb']:.0f},"
          f" tree {result['peak_tree_rss_mb']:.0f})", flush=True)
    return result


def run_size(src: Path, work: Path, workers: int) -> dict:
    """Every step on one corpus, from a clean work folder."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    return {step: measure(step, src, work, workers) for step in STEPS}


def ratios(small: dict, large: dict) -> dict:
    """Per step: peak RSS large / small (own and tree) and songs/s large / small."""
    return {step: {"max_rss": large[step]["max_rss_mb"] / small[step]["max_rss_mb"],
                   "tree_rss": large[step]["peak_tree_rss_mb"] / max(small[step]["peak_tree_rss_mb"], 1e-9),
                   "songs_per_s": large[step]["songs_per_s"] / small[step]["songs_per_s"]} for step in STEPS}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--songs", type=int, default=21000, help="large corpus (default: %(default)s, LPD-5 cleansed)")
    parser.add_argument("--small", type=int, default=2000, help="small corpus, a prefix of the large, >= 3 songs so every split gets one (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=0, help="tensorize.workers (0 = one per core)")
    parser.add_argument("--work-dir", default=str(Path(tempfile.gettempdir()) / "lpdvae-scale"),
                        help="corpus cache and step outputs, outside the repo (default: %(default)s)")
    parser.add_argument("--out", default=str(RESULTS), help="result JSON (default: %(default)s)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.child[2], int(args.child[3]))
        return 0
    if not 3 <= args.small < args.songs:
        parser.error("--small must be at least 3 (one song per split) and below --songs")
    work, cores = Path(args.work_dir), len(os.sched_getaffinity(0))
    started = time.perf_counter()
    build_source(work / "corpus", args.songs, cores)
    subset(work / "corpus", work / f"corpus-{args.small}", args.small)
    built = time.perf_counter() - started
    print(f"corpus: {args.songs} songs in {work / 'corpus'} ({built:.0f}s); {cores} cores", flush=True)
    small = run_size(work / f"corpus-{args.small}", work / f"run-{args.small}", args.workers)
    large = run_size(work / "corpus", work / f"run-{args.songs}", args.workers)
    params = bench_params(args.workers)
    report = {
        "benchmark": "scale", "songs_small": args.small, "songs_large": args.songs, "cores": cores,
        "workers": args.workers or cores, "params": str(PROFILE.relative_to(REPO)) if PROFILE.exists()
        else "params.yaml + benchmarks.lpd_synth.LPD5_TRACKS", "tracks": params.track_names,
        "corpus": "benchmarks.lpd_synth.write_corpus npz songs, a folder source", "corpus_build_s": built,
        "small": small, "large": large, "ratio_large_vs_small": ratios(small, large),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    for step, r in report["ratio_large_vs_small"].items():
        print(f"  {step:12s} peak RSS x{r['max_rss']:.2f} (tree x{r['tree_rss']:.2f}), songs/s x{r['songs_per_s']:.2f}"
              f" at {args.songs} vs {args.small} songs")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
