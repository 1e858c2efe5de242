"""`python -m pipelines run --local`: the whole KFP pipeline on this machine with kfp.local."""

from __future__ import annotations

from pathlib import Path


def run_local(params_path: str | Path, pipeline_root: Path) -> object:
    """Run every task as a subprocess of this Python (no containers); returns the pipeline outputs."""
    from kfp import local

    from pipelines.training import build_pipeline

    pipeline_root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root.resolve()),
               raise_on_error=True)
    return build_pipeline(params_path, cluster=None)()
