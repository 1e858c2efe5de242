"""Tensorize throughput and peak memory on a synthetic LPD-5-like corpus.

Side by side in one run: `lpdvae.steps.tensorize` (sparse npz path, worker processes,
streaming shards) and the naive loop (pypianoroll.load + per-song numpy in one process,
every phrase kept until the end). Each run happens in its own subprocess, which reports its
wall time and max RSS (`resource.getrusage` of the process itself, plus a sampled sum over it
and its pool workers). Memory is measured at 1x and 4x the corpus: streaming keeps it flat.

    python -m benchmarks.tensorize_bench [--songs 2000] [--workers 0]

Targets (issue 3): >= 3x the naive loop's songs/s on 2 cores; peak RSS at 4x within 20% of 1x.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "tensorize.json"
SHARD_SIZE_ENV = "LPDVAE_BENCH_SHARD_SIZE"


def _make(args: tuple[str, int, int]) -> None:
    from benchmarks.lpd_synth import write_corpus

    write_corpus(Path(args[0]), args[1], args[2])


def build_corpus(raw: Path, n_songs: int, workers: int, reuse: Path | None = None) -> None:
    """`n_songs` synthetic songs (cached between runs; songs already in `reuse` are hard-linked)
    + manifest + an accept-all validation."""
    from benchmarks.lpd_synth import write_corpus

    if reuse is not None and (reuse / "files").exists():
        for f in (reuse / "files").rglob("*.npz"):
            dest = raw / "files" / f.relative_to(reuse / "files")
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not dest.exists():
                os.link(f, dest)
    have = {p.name for p in (raw / "files").rglob("*.npz")} if (raw / "files").exists() else set()
    chunk = 250
    todo = [(str(raw / f".part{i}"), min(chunk, n_songs - i), i) for i in range(0, n_songs, chunk)
            if f"song{min(i + chunk, n_songs) - 1:06d}.npz" not in have]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_make, todo))
    for part in sorted(raw.glob(".part*")):  # move the parts into one files/ tree
        for f in (part / "files").rglob("*.npz"):
            dest = raw / "files" / f.relative_to(part / "files")
            dest.parent.mkdir(parents=True, exist_ok=True)
            f.replace(dest)
        for leftover in sorted(part.rglob("*"), reverse=True):
            leftover.rmdir() if leftover.is_dir() else leftover.unlink()
        part.rmdir()
    write_corpus(raw, n_songs)  # files exist: this only writes the manifest
    rows = [json.loads(line) for line in (raw / "manifest.jsonl").read_text().splitlines()]
    validated = raw.parent / f"{raw.name}-validated"
    validated.mkdir(exist_ok=True)
    (validated / "accepted.jsonl").write_text("".join(
        json.dumps({"song_id": r["sha256"], "path": r["path"], "sha256": r["sha256"]}) + "\n" for r in rows))


def _params(workers: int):
    from benchmarks.lpd_synth import LPD5_TRACKS
    from lpdvae.params import load_params

    overrides = {"tracks": LPD5_TRACKS, "tensorize.workers": workers}
    if os.environ.get(SHARD_SIZE_ENV):  # --shard-size, handed to the child runs
        overrides["tensorize.shard_size"] = int(os.environ[SHARD_SIZE_ENV])
    return load_params(HERE.parent / "params.yaml", overrides)


def run_tensorize(raw: Path, out: Path, workers: int) -> dict:
    from lpdvae.steps.tensorize import tensorize

    result = tensorize(raw, raw.parent / f"{raw.name}-validated", out, _params(workers))
    return {"songs": result.n_songs, "phrases": result.n_phrases}


def run_naive(raw: Path, out: Path, workers: int) -> dict:
    """The straightforward loop: load, downsample, binarize, stack, crop, cut, keep everything."""
    import pypianoroll

    from lpdvae.steps.tensorize import split_of

    params = _params(1)
    rep, tp = params.representation, params.tensorize
    names = [t.name for t in params.tracks]
    rows = [json.loads(line) for line in (raw / "manifest.jsonl").read_text().splitlines()]
    phrases: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for row in rows:
        mt = pypianoroll.load(raw / row["path"])
        # the song length from the source roll: set_resolution leaves empty tracks at the old length
        n = -(-max(t.pianoroll.shape[0] for t in mt.tracks) * rep.beat_resolution // mt.resolution)
        n = -(-n // rep.steps_per_bar) * rep.steps_per_bar
        mt.set_resolution(rep.beat_resolution, rounding="floor").binarize()
        roll = np.zeros((len(names), n, rep.n_pitches), dtype=bool)
        for track in mt.tracks:
            k = names.index(track.name.lower())
            part = track.pianoroll[:n, rep.lowest_pitch : rep.lowest_pitch + rep.n_pitches]
            roll[k, : len(part)] |= part
        bars = roll.reshape(len(names), -1, rep.steps_per_bar, rep.n_pitches)
        for start in range(0, bars.shape[1] - rep.n_bars + 1, tp.hop_bars):
            phrase = bars[:, start : start + rep.n_bars]
            if (~phrase.any(axis=(0, 2, 3))).sum() <= tp.max_empty_bars:
                phrases[split_of(row["sha256"], params)].append(phrase.copy())
    out.mkdir(parents=True, exist_ok=True)
    total = 0
    for split, items in phrases.items():
        if items:
            np.save(out / f"{split}.npy", np.packbits(np.stack(items), axis=-1))
            total += len(items)
    return {"songs": len(rows), "phrases": total}


def tree_rss(pid: int) -> int:
    """Summed RSS of a process and all its descendants (pool workers included)."""
    import psutil

    total = 0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total


def child(kind: str, raw: str, out: str, workers: int) -> None:
    """Runs in a subprocess: one timed run, then its wall time and max RSS as JSON on stdout."""
    import pypianoroll  # noqa: F401 - imports are a per-process constant, not throughput

    import lpdvae.steps.tensorize  # noqa: F401

    fn = run_tensorize if kind == "tensorize" else run_naive
    start = time.perf_counter()
    info = fn(Path(raw), Path(out), workers)
    seconds = time.perf_counter() - start
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({**info, "seconds": seconds, "songs_per_s": info["songs"] / seconds,
                      "max_rss_mb": self_kb / 1024}))


def run_child(args: list[str], what: str, interval: float = 0.05) -> dict:
    """`python -m <args>` in a child process: the JSON report its last stdout line gives, plus the
    sampled peak RSS of its whole process tree (sampled from here, so the child stays
    single-threaded and its pool may fork)."""
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", *args], cwd=HERE.parent, stdout=stdout, stderr=stderr,
                                text=True, env={**os.environ, "TQDM_DISABLE": "1"})
        peak = 0
        while proc.poll() is None:
            peak = max(peak, tree_rss(proc.pid))
            time.sleep(interval)
        stdout.seek(0), stderr.seek(0)
        if proc.returncode:
            raise SystemExit(f"{what} failed:\n{stderr.read()[-4000:]}")
        result = json.loads(stdout.read().strip().splitlines()[-1])
    result["peak_tree_rss_mb"] = peak / 2**20
    return result


def measure(kind: str, raw: Path, out: Path, workers: int) -> dict:
    """One child run; its own getrusage max RSS plus the sampled peak of its whole process tree."""
    result = run_child(["benchmarks.tensorize_bench", "--child", kind, str(raw), str(out), str(workers)],
                       f"{kind} run")
    print(f"  {kind:9s} {raw.name}: {result['songs']} songs in {result['seconds']:.1f}s = "
          f"{result['songs_per_s']:.1f} songs/s, max RSS {result['max_rss_mb']:.0f} MiB "
          f"(all its processes together: {result['peak_tree_rss_mb']:.0f} MiB)", flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--songs", type=int, default=2000, help="1x corpus size (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=0, help="tensorize.workers (0 = one per core)")
    parser.add_argument("--work-dir", default=str(Path(tempfile.gettempdir()) / "lpdvae-bench"),
                        help="corpus cache, outside the repo (default: %(default)s)")
    parser.add_argument("--out", default=str(RESULTS), help="result JSON (default: %(default)s)")
    parser.add_argument("--report-only", action="store_true",
                        help="exit 0 when a speed/memory target is missed (the suite's tiny run: too small to time)")
    parser.add_argument("--shard-size", type=int, default=0,
                        help="tensorize.shard_size (default: params.yaml). The parent buffers up to one "
                        "shard per split, so RSS is flat once every split has filled a shard")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.child[2], int(args.child[3]))
        return 0
    if args.shard_size:
        os.environ[SHARD_SIZE_ENV] = str(args.shard_size)
    work = Path(args.work_dir)
    cores = len(os.sched_getaffinity(0))
    corpora = {"1x": work / f"lpd5-{args.songs}", "4x": work / f"lpd5-{4 * args.songs}"}
    for label, raw in corpora.items():
        n = args.songs * (1 if label == "1x" else 4)
        if not (raw / "manifest.jsonl").exists() or sum(1 for _ in (raw / "manifest.jsonl").open()) != n:
            print(f"building the {label} corpus ({n} songs) in {raw} ...", flush=True)
            build_corpus(raw, n, cores, reuse=corpora["1x"] if label == "4x" else None)
    print(f"tensorize benchmark: {args.songs} songs, {cores} cores, workers={args.workers or cores}", flush=True)
    naive = measure("naive", corpora["1x"], work / "out-naive", 1)
    fast = measure("tensorize", corpora["1x"], work / "out-1x", args.workers)
    fast4 = measure("tensorize", corpora["4x"], work / "out-4x", args.workers)
    speedup = fast["songs_per_s"] / naive["songs_per_s"]
    rss_ratio = fast4["max_rss_mb"] / fast["max_rss_mb"]
    tree_ratio = fast4["peak_tree_rss_mb"] / fast["peak_tree_rss_mb"]
    report = {
        "benchmark": "tensorize", "songs": args.songs, "cores": cores, "workers": args.workers or cores,
        "shard_size": _params(1).tensorize.shard_size,
        "corpus": "synthetic LPD-5-like npz (benchmarks/lpd_synth.py): 5 tracks, 40-120 bars, resolution 24",
        "naive": naive, "tensorize_1x": fast, "tensorize_4x": fast4,
        "speedup_vs_naive": speedup, "rss_ratio_4x_vs_1x": rss_ratio, "tree_rss_ratio_4x_vs_1x": tree_ratio,
        "targets": {"speedup_vs_naive": 3.0, "rss_ratio_4x_vs_1x": 1.2},
        "passed": {"speedup": speedup >= 3.0, "rss": rss_ratio <= 1.2},
        "same_phrase_count": naive["phrases"] == fast["phrases"],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"speedup {speedup:.2f}x (target 3x), RSS 4x/1x {rss_ratio:.2f} (target <= 1.2) -> {out}")
    targets_met = args.report_only or all(report["passed"].values())
    return 0 if targets_met and report["same_phrase_count"] else 1


if __name__ == "__main__":
    sys.exit(main())
