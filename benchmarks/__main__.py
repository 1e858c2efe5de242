"""Run every benchmark (`python -m benchmarks [NAME ...]`: every `*_bench.py` here, e.g.
startup_bench, tensorize_bench); each writes JSON to benchmarks/results/. Options after a single
name go to that benchmark: `python -m benchmarks train_bench --device cuda`."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    names = sorted(p.stem for p in HERE.glob("*_bench.py"))
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*",
                        help=f"benchmarks to run (default: all of {', '.join(names)})")
    args, extra = parser.parse_known_args()
    chosen = args.names or names
    if extra and len(chosen) != 1:
        parser.error(f"options {' '.join(extra)} go to one benchmark: name exactly one")
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(names)}")
    failed = 0
    for name in chosen:
        print(f"== {name}", flush=True)
        failed += subprocess.run([sys.executable, "-m", f"benchmarks.{name}", *extra], cwd=HERE.parent).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
