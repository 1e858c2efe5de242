"""evaluate's work besides the model: the MuseGAN statistics of every scored phrase
(`metrics.musegan_per_phrase`) and the samples page (`samples_page.write_page`: 11 MIDI, PNG and,
with fluidsynth installed, WAV files), on synthetic four-voice phrases shaped like the demo's.

Each measurement runs in its own process; with `--against OTHER/src` the same measurements of
that source tree (e.g. a `git worktree` of an older commit) run interleaved with this one's,
round by round, so machine load hits both alike. Reports medians.

    python -m benchmarks.evaluate_bench [--phrases 1152] [--repeats 3] [--against /tmp/old/src]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results" / "evaluate.json"
PHRASES = 1152  # what the demo's evaluate scores: 6 temperatures x 128 generated, val, test


def phrases(n: int, seed: int = 0) -> np.ndarray:
    """`[n, 4, 4, 16, 84]` codes: four voices of 1-4-step notes on a random walk, some rests."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 4, 64, 84), np.uint8)
    for i in range(n):
        for t in range(4):
            step, pitch = 0, 52 - 8 * t
            while step < 64:
                length = int(rng.integers(1, 5))
                pitch = int(np.clip(pitch + rng.integers(-3, 4), 0, 83))
                if rng.random() > 0.1:
                    x[i, t, step, pitch] = 2
                    x[i, t, step + 1 : step + length, pitch] = 1
                step += length
    return x.reshape(n, 4, 4, 16, 84)


def child(n_phrases: int) -> dict[str, float]:
    """Time both parts in this process (the source tree is whatever PYTHONPATH gives)."""
    from lpdvae.evaluation.metrics import musegan_per_phrase
    from lpdvae.evaluation.samples_page import write_page
    from lpdvae.params import RepresentationParams, load_params

    rep = RepresentationParams(source_resolution=24, beat_resolution=4, beats_per_bar=4, lowest_pitch=24,
                               n_pitches=84, n_bars=4)
    names = ["soprano", "alto", "tenor", "bass"]
    tracks = [{"name": n, "program": 52, "is_drum": False} for n in names]
    ev = load_params(REPO / "params.yaml").evaluate
    x = phrases(n_phrases)
    t = time.perf_counter()
    musegan_per_phrase(x, names, [False] * 4, rep)
    stats_s = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        write_page(Path(tmp) / "warm", {}, {"blessed": True, "reasons": []}, x[:1], x[:1], x[:1], x[:1],
                   tracks, rep, ev)  # imports (matplotlib, pretty_midi) out of the timing
        t = time.perf_counter()
        write_page(Path(tmp) / "page", {}, {"blessed": True, "reasons": []}, x[:8], x[8:10], x[10:12],
                   x[12:17], tracks, rep, ev)
        page_s = time.perf_counter() - t
        wavs = len(list((Path(tmp) / "page" / "samples").glob("*.wav")))
    return {"musegan_per_phrase_s": stats_s, "write_page_s": page_s, "wavs": wavs}


def run(src: Path, n_phrases: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(REPO)])}
    out = subprocess.run([sys.executable, "-m", "benchmarks.evaluate_bench", "--child", "--phrases",
                          str(n_phrases)], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.evaluate_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phrases", type=int, default=PHRASES, help="phrases scored (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (default: %(default)s)")
    parser.add_argument("--against", type=Path, help="another source tree (its src/) to compare with")
    parser.add_argument("--out", default=str(RESULTS), help="result JSON (default: %(default)s)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.phrases)))
        return 0
    trees = {"this": REPO / "src", **({"against": args.against.resolve()} if args.against else {})}
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for r in range(args.repeats):
        for name, src in trees.items():
            rounds[name].append(run(src, args.phrases))
            print(f"round {r + 1} {name}: {json.dumps(rounds[name][-1])}", flush=True)
    report = {"phrases": args.phrases, "rounds": rounds,
              "median_s": {name: {k: statistics.median(m[k] for m in ms) for k in ms[0] if k != "wavs"}
                           for name, ms in rounds.items()}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["median_s"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
