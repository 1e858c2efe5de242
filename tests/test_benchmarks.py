"""Every benchmark runs at a tiny size, so none can rot between the runs that measure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted(p.stem for p in (REPO / "benchmarks").glob("*_bench.py"))

# The smallest arguments that still run every code path of each benchmark (its own `--help` says
# what each one means); results go to a temp file, never benchmarks/results/.
TINY: dict[str, list[str]] = {
    "conv_block_bench": ["--steps", "1", "--batch", "4"],
    "demo_render_bench": ["--limit", "3"],
    "evaluate_bench": ["--phrases", "16", "--repeats", "1"],
    "midi_parse_bench": ["--songs", "3"],
    "scale_bench": ["--songs", "4", "--small", "3"],  # 3 songs: every split gets one
    "startup_bench": ["--repeats", "1"],
    "tensorize_bench": ["--songs", "4", "--report-only"],
    "train_bench": ["--phrases", "64", "--repeats", "1", "--small"],
}


def test_every_benchmark_has_a_tiny_run() -> None:
    assert sorted(TINY) == BENCHMARKS


@pytest.mark.slow
@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_runs_at_a_tiny_size_and_writes_json(name: str, tmp_path: Path) -> None:
    out = tmp_path / f"{name}.json"
    extra = ["--work-dir", str(tmp_path / "work")] if name in ("scale_bench", "tensorize_bench") else []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", *TINY[name], *extra, "--out", str(out)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert isinstance(json.loads(out.read_text()), dict)
