"""`python -m pipelines run --local`: the whole pipeline on this machine with kfp.local.

Every task is a subprocess of this Python (SubprocessRunner, no containers, no venv per task),
so the project must be importable here; the working directory is the project, and MLflow
defaults to its embedded store there (`mlflow.db` + `mlartifacts/`) unless the params or
`$MLFLOW_TRACKING_URI` say otherwise.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from lpdvae.params import Params

REPO = Path(__file__).resolve().parents[1]


def _importable_here() -> None:
    """Task subprocesses import `components` and `lpdvae` from this checkout."""
    paths = [str(REPO), str(REPO / "src")]
    current = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join([*paths, *([current] if current else [])])


def run_local(params: Params, pipeline_root: Path, git_revision: str = "", **arguments: Any) -> None:
    """Run the pipeline with kfp.local: one tensorize task (kfp.local passes no artifact lists);
    raises on a failed task."""
    from kfp import local

    from pipelines.training import build_pipeline

    _importable_here()
    pipeline_root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root.resolve()),
               raise_on_error=True)
    pipeline = build_pipeline(params, git_revision=git_revision, cluster=None, fanout=False)
    with warnings.catch_warnings():  # "non-Python base image": the tasks run here, not in the image
        warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
        pipeline(**arguments)
