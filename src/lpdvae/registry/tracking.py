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
    db = sqlite_path(uri)
    return None if db is None else db.resolve().parent / DEFAULT_ARTIFACTS


def setup_mlflow(params: Params, root: str | Path = ".") -> str:
    """Point mlflow at the store and make sure the experiment exists; returns its id."""
    import mlflow

    uri = tracking_uri(params, root)
    check_store(uri)
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


# --- the store's health and the runs a killed process left open

TAG_OWNER = "lpdvae.owner"  # host:pid of the process writing a run
TAG_OWNER_STARTED = "lpdvae.owner_started"  # its start time: a reused pid is another process
SQLITE_HEADER = b"SQLite format 3\x00"
QUICK_CHECK_MAX_BYTES = 256 << 20  # a larger store gets the header and schema read, not a full scan


def owner_tags() -> dict[str, str]:
    """Tags naming this process as the one writing a run (`mark_killed_runs` reads them)."""
    from lpdvae.io import process_owner

    me = process_owner()
    return {TAG_OWNER: f"{me['host']}:{me['pid']}", TAG_OWNER_STARTED: str(me["started"])}


def _owner(tags: dict[str, str]) -> dict[str, Any] | None:
    host, _, pid = tags.get(TAG_OWNER, "").rpartition(":")
    if not host or not pid.isdigit():
        return None
    return {"host": host, "pid": int(pid), "started": tags.get(TAG_OWNER_STARTED)}


def mark_killed_runs(client: Any, experiment_id: str) -> list[str]:
    """RUNNING runs of the experiment whose owner process (on this host) is gone: a train,
    evaluate or register killed outright, which could not end its run. They become KILLED, with
    a tag saying why; returns their ids. Runs of live processes or other hosts are left alone."""
    import logging

    from lpdvae.io import owner_gone

    killed = []
    for run in client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'"):
        owner = _owner(run.data.tags)
        if owner is None or not owner_gone(owner):
            continue
        client.set_terminated(run.info.run_id, status="KILLED")
        client.set_tag(run.info.run_id, "lpdvae.killed_reason",
                       f"process {owner['host']}:{owner['pid']} ended without closing the run; "
                       f"marked KILLED by {owner_tags()[TAG_OWNER]}")
        logging.getLogger(__name__).warning("MLflow run %s was left RUNNING by process %s:%s, which is gone: "
                                            "marked KILLED", run.info.run_id, owner["host"], owner["pid"])
        killed.append(run.info.run_id)
    return killed


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` store URI; None for other stores."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])  # SQLAlchemy: ////abs, ///relative


def store_problem(uri: str, detail: str) -> str:
    """One line: which store is broken, why, and what to do."""
    path = sqlite_path(uri)
    where = f"MLflow store {path}" if path else f"MLflow store {uri.split('://', 1)[0]}://…"
    todo = (f"restore it from a backup, or move it aside (mv {path} {path}.broken) to start an empty "
            "registry; or point mlflow.tracking_uri / $MLFLOW_TRACKING_URI at a working store") if path else \
        "check the tracking server's database"
    return f"{where} is unusable ({detail}): {todo}"


def check_store(uri: str) -> None:
    """Refuse, in one line (`store_problem`), a local store that is not a readable SQLite
    database (a corrupted or foreign `mlflow.db`), before MLflow prints a traceback. A missing
    or empty file is fine: MLflow creates the tables."""
    import sqlite3

    from lpdvae.errors import RegistryError

    path = sqlite_path(uri)
    if path is None or not path.is_file() or path.stat().st_size == 0:
        return
    try:
        with open(path, "rb") as fh:
            if fh.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                raise RegistryError(store_problem(uri, "not an SQLite database"))
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            check = "PRAGMA quick_check(3)" if path.stat().st_size <= QUICK_CHECK_MAX_BYTES else \
                "SELECT 'ok' FROM sqlite_master LIMIT 1"
            bad = [r[0] for r in con.execute(check) if r[0] != "ok"]
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise RegistryError(store_problem(uri, f"SQLite: {exc}")) from None
    if bad:
        raise RegistryError(store_problem(uri, f"SQLite integrity check: {'; '.join(bad)}"))
