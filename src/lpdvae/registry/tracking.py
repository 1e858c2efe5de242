"""One place that decides which MLflow store a step talks to.

Order: params `mlflow.tracking_uri`, then `$MLFLOW_TRACKING_URI`, then the embedded default
`sqlite:///<root>/mlflow.db` with artifacts in `mlartifacts/` beside it, so `make run` needs no
server. The root is the project's: the working directory for the CLI and DVC, `--root` for
`lpdvae run`, which pins its store for the steps it runs (`pinned_store`).

A URI with `user:password@` (a server behind basic auth) is returned without them: they go into
MLflow's own `MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD` variables (which this process
and the ones it starts authenticate with), so the URI that mlflow_run.json, logs and artifacts
record carries no credential.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from lpdvae.params import Params

DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"
ENV = "MLFLOW_TRACKING_URI"
USER_ENV, PASSWORD_ENV = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"
# Free text (reasons, summaries, a version's description) is cut to this many characters: under
# the 5000 that older MLflow stores' tag columns hold.
MAX_TAG_CHARS = 4000


def blessing_tags(blessing: dict[str, Any]) -> dict[str, str]:
    """`lpdvae.blessed` and `lpdvae.blessing_reasons` of evaluate's blessing.json, as both the
    train run (evaluate) and the model version (register) carry them."""
    reasons = "; ".join(blessing.get("reasons", []))[:MAX_TAG_CHARS]
    return {"lpdvae.blessed": str(bool(blessing["blessed"])).lower(),
            "lpdvae.blessing_reasons": reasons or "all checks passed"}


def tracking_uri(params: Params, root: str | Path = ".") -> str:
    """The store's URI, without credentials (see the module doc)."""
    if params.mlflow.tracking_uri:
        return credentials_to_env(params.mlflow.tracking_uri)
    if os.environ.get(ENV):
        return credentials_to_env(os.environ[ENV])
    return f"sqlite:///{Path(root).resolve() / DEFAULT_DB}"


def env_credentials_to_env() -> None:
    """$MLFLOW_TRACKING_URI's user:password@ into MLflow's auth variables, for the steps that
    connect to the store a model's mlflow_run.json names (recorded without credentials)."""
    if os.environ.get(ENV):
        credentials_to_env(os.environ[ENV])


def credentials_to_env(uri: str) -> str:
    """`uri` without its `user:password@`, which go into MLFLOW_TRACKING_USERNAME/PASSWORD
    (percent-decoded); a URI without userinfo comes back unchanged and sets nothing."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    os.environ[USER_ENV] = unquote(user)
    os.environ[PASSWORD_ENV] = unquote(password)
    return urlunsplit(parts._replace(netloc=host))


@contextmanager
def pinned_store(params: Params, root: str | Path) -> Iterator[str]:
    """Within the block, every step of this process and every process it starts (torchrun
    ranks) uses `tracking_uri(params, root)`: the store is put in `$MLFLOW_TRACKING_URI`,
    MLflow's own variable, and the previous value comes back afterwards. Yields the URI."""
    uri = tracking_uri(params, root)
    before = os.environ.get(ENV)
    os.environ[ENV] = uri
    try:
        yield uri
    finally:
        if before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = before


def artifact_root(uri: str) -> Path | None:
    """Where a local sqlite store keeps its artifacts: `mlartifacts/` beside the db file (not a
    cwd-relative ./mlruns); None for other stores, whose server decides."""
    if not uri.startswith("sqlite:///"):
        return None
    db = uri.removeprefix("sqlite:///").split("?", 1)[0]  # SQLAlchemy: ////abs, ///relative
    return Path(db).resolve().parent / DEFAULT_ARTIFACTS


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
    artifacts = artifact_root(uri)
    exp_id = mlflow.create_experiment(params.mlflow.experiment,
                                      artifact_location=artifacts.as_uri() if artifacts else None)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id
