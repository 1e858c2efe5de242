"""The statistics of the data the current champion was trained on, found through its lineage.

The registry's `champion` version carries `lpdvae.dvc.validated`, the DVC md5 (`<md5>.dir`) of
the validated folder it was trained on. That folder is content-addressed, so the lookup does not
depend on which runner made it; the `.dir` object lists each file's md5, and `stats.csv` and
`quarantine.jsonl` are read by md5 from, in order:

1. the local DVC cache of the project (`.dvc/cache/files/md5/xx/…`, found from `root` upwards),
2. the project's default DVC remote (local folder or S3, through DVC's own remote filesystem, so
   endpoint and credentials come from DVC's config and the environment as for `dvc pull`),
3. the champion's MLflow run, where register logs the validated folder as the `validated/`
   artifact (`lpdvae.registry.drift_log`): this works under every runner (`lpdvae run` without
   `dvc commit`, a KFP pod without a DVC cache). The downloaded folder's DVC hash must equal the
   tag, so a stale or foreign artifact is never compared against.

No champion, no store, no tag or no copy of the data anywhere: `None` with the reason, and the
drift check passes with verdict `no_reference`.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lpdvae.io import read_jsonl
from lpdvae.params import Params
from lpdvae.registry.drift_log import ARTIFACT_DIR

log = logging.getLogger(__name__)
TAG = "lpdvae.dvc.validated"


@dataclass(frozen=True)
class Reference:
    table: pd.DataFrame  # stats rows of the songs the champion was trained on (accepted ones)
    info: dict[str, str] = field(default_factory=dict)  # version, run_id, dvc_validated, found_in


def accepted_rows(stats: pd.DataFrame, quarantine: list[dict]) -> pd.DataFrame:
    """The stats rows of songs that were read and not quarantined (what tensorize used)."""
    out = stats[stats["load_error"].isna()] if "load_error" in stats else stats
    bad = {q.get("path") for q in quarantine}
    return out[~out["path"].isin(bad)].reset_index(drop=True)


def read_validated(folder: Path) -> pd.DataFrame:
    """A validated folder's accepted songs' stats rows."""
    return accepted_rows(pd.read_csv(folder / "stats.csv"), read_jsonl(folder / "quarantine.jsonl"))


def champion_reference(params: Params, root: str | Path = ".") -> Reference | str:
    """The champion's training statistics, or why there are none (a one-line reason)."""
    from lpdvae.registry.tracking import tracking_uri

    name = params.register.model_name
    uri = tracking_uri(params, root)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///").split("?", 1)[0]).exists():
        return "no MLflow store yet (first run): no champion to compare with"
    # imported past the first-run check: a fresh demo's validate need not pay for MLflow's import
    from mlflow.exceptions import MlflowException

    from lpdvae.registry.aliases import CHAMPION, alias_version

    try:
        c = _client(uri)
        mv = alias_version(c, name, CHAMPION)
    except (MlflowException, OSError) as exc:
        return f"the MLflow registry could not be read ({type(exc).__name__}): no champion to compare with"
    if mv is None:
        return f"{name} has no champion yet (first run): nothing to compare with"
    info = {"model": name, "version": str(mv.version), "run_id": str(mv.run_id or "")}
    md5 = mv.tags.get(TAG, "")
    info["dvc_validated"] = md5
    for where, read in (("dvc cache", _from_dvc_cache), ("dvc remote", _from_dvc_remote),
                        ("mlflow artifact", _from_mlflow_run)):
        try:
            table = read(c, mv, md5, Path(root))
        except Exception as exc:  # noqa: BLE001 - one source failing must not hide the next
            log.debug("drift: champion data not in the %s: %r", where, exc)
            continue
        if table is not None:
            log.info("drift: champion %s version %s's training data (%s) read from the %s", name, mv.version,
                     md5 or "no dvc hash", where)
            return Reference(table, {**info, "found_in": where})
    return (f"{name} champion version {mv.version}'s training data ({TAG}={md5 or 'missing'}) is in neither the "
            "DVC cache, the DVC remote nor its MLflow run: nothing to compare with")


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _dvc_root(start: Path) -> Path | None:
    for folder in (start.resolve(), *start.resolve().parents):
        if (folder / ".dvc").is_dir():
            return folder
    return None


def _from_odb(odb, md5: str) -> pd.DataFrame | None:
    """stats.csv and quarantine.jsonl of the `.dir` object `md5` in a DVC object store."""
    if not md5.endswith(".dir"):
        return None
    listing = json.loads(odb.fs.read_text(odb.oid_to_path(md5)))
    files = {entry["relpath"]: entry["md5"] for entry in listing}
    stats = pd.read_csv(io.BytesIO(odb.fs.read_bytes(odb.oid_to_path(files["stats.csv"]))))
    text = odb.fs.read_text(odb.oid_to_path(files["quarantine.jsonl"]))
    return accepted_rows(stats, [json.loads(line) for line in text.splitlines() if line])


def _from_dvc_cache(_c, _mv, md5: str, root: Path) -> pd.DataFrame | None:
    from dvc.repo import Repo

    project = _dvc_root(root)
    if project is None:
        return None
    with Repo(str(project)) as repo:
        return _from_odb(repo.cache.local, md5)


def _from_dvc_remote(_c, _mv, md5: str, root: Path) -> pd.DataFrame | None:
    from dvc.repo import Repo

    project = _dvc_root(root)
    if project is None:
        return None
    with Repo(str(project)) as repo:
        return _from_odb(repo.cloud.get_remote_odb(None, "drift"), md5)


def _from_mlflow_run(c, mv, md5: str, _root: Path) -> pd.DataFrame | None:
    from lpdvae.registry.lineage import dvc_hash

    if not mv.run_id:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(c.download_artifacts(mv.run_id, ARTIFACT_DIR, tmp))
        if md5 and dvc_hash(folder) != md5:
            log.warning("drift: champion run %s's %s/ artifact is not the data its version names (%s); not used",
                        mv.run_id, ARTIFACT_DIR, md5)
            return None
        return read_validated(folder)
