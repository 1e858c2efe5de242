"""One place that decides which MLflow store a step talks to.

Order: params `mlflow.tracking_uri`, then `$MLFLOW_TRACKING_URI`, then the embedded default
(`sqlite:///mlflow.db` + `mlartifacts/` in the working directory), so `make run` needs no server.
"""

from __future__ import annotations

import os
from pathlib import Path

from lpdvae.params import Params

DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"


def tracking_uri(params: Params, root: str | Path = ".") -> str:
    if params.mlflow.tracking_uri:
        return params.mlflow.tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path(root).resolve() / DEFAULT_DB}"


def setup_mlflow(params: Params, root: str | Path = ".") -> str:
    """Point mlflow at the store and make sure the experiment exists; returns its id."""
    import mlflow

    uri = tracking_uri(params, root)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    exp = mlflow.get_experiment_by_name(params.mlflow.experiment)
    if exp is not None:
        mlflow.set_experiment(params.mlflow.experiment)
        return exp.experiment_id
    artifact_location = None
    if uri.startswith("sqlite:"):
        # a local store keeps artifacts beside the db, not in a cwd-relative ./mlruns
        artifact_location = (Path(root).resolve() / DEFAULT_ARTIFACTS).as_uri()
    exp_id = mlflow.create_experiment(params.mlflow.experiment, artifact_location=artifact_location)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id
