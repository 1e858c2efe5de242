"""Helpers every component body calls inside the pod (plain functions, no kfp import)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lpdvae.data.redact import redact_uri
from lpdvae.params import Params, params_from_dict


def step_params(params_json: str) -> Params:
    """The validated params a step component receives as the JSON `make_params` wrote. A store
    URI's user:password@ (the pod's MLFLOW_TRACKING_URI) moves into MLflow's auth variables, so
    no record the step writes carries it (`lpdvae.registry.tracking`). A secret still holding
    the templates' `CHANGE_ME` stops the step here, naming the variable (`lpdvae.host.s3auth`)."""
    from lpdvae.host.s3auth import refuse_placeholders
    from lpdvae.registry.tracking import env_credentials_to_env

    refuse_placeholders()
    env_credentials_to_env()
    return params_from_dict(json.loads(params_json), source="params_json")


def report_training(out: Path, model: Any, metrics: Any) -> None:
    """What the KFP UI shows of a trained model folder, however it was trained: its final
    metrics (finite numbers only: the executor output is JSON) and the MLflow run."""
    for key, value in json.loads((Path(out) / "train_metrics.json").read_text()).items():
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            metrics.log_metric(key, float(value))
    run = json.loads((Path(out) / "mlflow_run.json").read_text())
    model.metadata.update({f"mlflow_{k}": redact_uri(str(v)) for k, v in run.items()})
    model.metadata["framework"] = "pytorch"


def record_failed_run(run_name: str, state: str, error: str, failed_task: str, experiment: str,
                      tracking_uri: str = "", git_revision: str = "") -> str:
    """An MLflow run with status FAILED in the pipeline's experiment, tagged with the KFP run and
    its error, so a failed weekly retraining shows next to the runs that worked. Returns its id."""
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    tags = {"lpdvae.pipeline_run": run_name, "lpdvae.pipeline_state": state,
            "lpdvae.pipeline_error": error[:5000] or "(no message)", "lpdvae.pipeline_failed_task": failed_task}
    if git_revision:
        tags["lpdvae.git_revision"] = git_revision
    with mlflow.start_run(run_name=f"pipeline {state.lower()}: {run_name.rsplit('/', 1)[-1]}", tags=tags) as run:
        pass
    mlflow.MlflowClient().set_terminated(run.info.run_id, status="FAILED")
    return run.info.run_id


DOCS_NOTE = ("Shown inside the Kubeflow Pipelines UI, whose sandbox blocks downloads: the drift "
             "report's files named by path are not part of this artifact; its Data drift "
             "section is the same report.")


def report_validation(run: Callable[[Path], Any], validated: Any, data_docs: Any, metrics: Any) -> None:
    """Run a validation (`run(docs_dir)`: one task's `validate`, or the fan-out's merge) with its
    data docs in a scratch folder (they hold run times; the validated Dataset must be the same
    bytes for the same input), then the docs page, drift verdict and counts as KFP outputs. A
    drift stop leaves the docs (with the drift section) in place: they are shown all the same."""
    import tempfile

    from lpdvae.evaluation.sandbox_page import sandbox_page

    with tempfile.TemporaryDirectory() as scratch:
        docs = Path(scratch) / "data_docs"
        try:
            result = run(docs)
        finally:
            if (docs / "index.html").exists():
                page = sandbox_page(docs / "index.html", "data_docs", note=DOCS_NOTE)
                Path(data_docs.path).write_text(page, encoding="utf-8")
        validated.metadata["drift_verdict"] = result.drift_verdict
    summary = json.loads((Path(validated.path) / "summary.json").read_text())
    for key, value in summary.items():
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            metrics.log_metric(key, float(value))
            validated.metadata[key] = value
