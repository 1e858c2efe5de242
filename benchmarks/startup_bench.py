"""Start-up: `lpdvae --help` and `lpdvae status` against `python -c "import torch"`, and a no-op
`make run` (`dvc repro` on an up-to-date project, then `lpdvae status`) against `dvc status`.

All five commands run in one process tree, interleaved round by round (so machine load hits
them alike), in a tiny git + DVC project built in a temp folder. Reports medians and the
ratios the CLI promises: --help <= 0.25x the torch import, status <= 0.5x, no-op run <= 3x
dvc status.

    python -m benchmarks.startup_bench [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results" / "startup.json"
TARGETS = {"help_vs_torch": 0.25, "status_vs_torch": 0.5, "noop_run_vs_dvc_status": 3.0}


def _bin(name: str) -> str:
    """A tool of this venv (beside the running python), else from PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or name)


def tiny_project(root: Path) -> None:
    """git + DVC repo with one up-to-date stage, params.yaml and a last run's record."""
    def run(*cmd: str) -> None:
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)

    root.mkdir(parents=True)
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    (root / "in.txt").write_text("song\n")
    (root / "dvc.yaml").write_text("stages:\n  copy:\n    cmd: cp in.txt out.txt\n"
                                   "    deps: [in.txt]\n    params: [data]\n    outs: [out.txt]\n")
    (root / "reports").mkdir()
    (root / "reports/registered.json").write_text('{"name": "lpdvae", "version": "1", "aliases": []}')
    run("git", "init", "-q")
    run(_bin("dvc"), "init", "-q")
    run(_bin("dvc"), "repro", "-q")


def timed(cmd: list[str] | str, cwd: Path, env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True, shell=isinstance(cmd, str))
    return time.perf_counter() - t


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="rounds (default: %(default)s)")
    parser.add_argument("--out", default=str(RESULTS), help="result JSON (default: %(default)s)")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]),
           "DVC_NO_ANALYTICS": "1"}
    lpdvae = [sys.executable, "-m", "lpdvae"]
    with tempfile.TemporaryDirectory(prefix="lpdvae-startup-") as tmp:
        project = Path(tmp) / "project"
        tiny_project(project)
        status = " ".join([*lpdvae, "status"])
        commands = {
            "import_torch": [sys.executable, "-c", "import torch"],
            "lpdvae_help": [*lpdvae, "--help"],
            "lpdvae_status": [*lpdvae, "status"],
            "dvc_status": [_bin("dvc"), "status"],
            "noop_run": f"{_bin('dvc')} repro && {status}",  # what `make run` does, the venv aside
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for i in range(args.repeats):
            for name, cmd in commands.items():
                times[name].append(timed(cmd, project, env))
            print(f"round {i + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()),
                  flush=True)
    med = {name: statistics.median(v) for name, v in times.items()}
    ratios = {"help_vs_torch": med["lpdvae_help"] / med["import_torch"],
              "status_vs_torch": med["lpdvae_status"] / med["import_torch"],
              "noop_run_vs_dvc_status": med["noop_run"] / med["dvc_status"]}
    report = {
        "benchmark": "startup", "repeats": args.repeats, "cores": len(os.sched_getaffinity(0)),
        "median_s": med, "seconds": times, "ratios": ratios, "targets": TARGETS,
        "passed": {k: ratios[k] <= TARGETS[k] for k in TARGETS},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"median_s": med, "ratios": ratios, "passed": report["passed"]}, indent=2))
    return 0 if all(report["passed"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
