"""Upload, schedule and run the pipeline on a Kubeflow Pipelines API (v2beta1) with kfp.Client.

Credentials come from the environment only: `KFP_TOKEN` (a bearer token) or, in a pod, the
projected service-account token (audience `pipelines.kubeflow.org`) at
`$KF_PIPELINES_SA_TOKEN_PATH` or `/var/run/secrets/kubeflow/pipelines/token`. Nothing secret is
written to the pipeline, its parameters or the logs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Uploaded:
    pipeline_id: str
    version_id: str
    version_name: str
    created: bool  # False: this version already existed (same clean git revision)


SA_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"


def bearer_token() -> str | None:
    """`$KFP_TOKEN`, else the pod's projected pipelines token, else None (no auth)."""
    if os.environ.get("KFP_TOKEN"):
        return os.environ["KFP_TOKEN"]
    path = Path(os.environ.get("KF_PIPELINES_SA_TOKEN_PATH", SA_TOKEN_PATH))
    return path.read_text().strip() if path.is_file() else None


def connect(host: str, namespace: str | None = None):
    """A kfp.Client for `host` that sends `bearer_token()` when there is one."""
    import kfp

    return kfp.Client(host=host, existing_token=bearer_token(), namespace=namespace)


def package_digest(package_path: str | Path) -> str:
    """sha256 (12 hex) of a compiled pipeline's content; YAML comments and key order aside."""
    import yaml

    docs = list(yaml.safe_load_all(Path(package_path).read_text()))
    return hashlib.sha256(json.dumps(docs, sort_keys=True).encode()).hexdigest()[:12]


def version_name(revision: str | None, digest: str, now: dt.datetime | None = None) -> str:
    """`git-<sha12>-<content12>` for a clean checkout, so uploading the same code compiled the
    same way again is a no-op; a dirty or non-git checkout gets a UTC stamp instead."""
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%d-%H%M%S")
    if not revision:
        return f"nogit-{stamp}"
    sha, dirty = revision.removesuffix("-dirty"), revision.endswith("-dirty")
    return f"git-{sha[:12]}-dirty-{stamp}" if dirty else f"git-{sha[:12]}-{digest}"


def _name_filter(name: str) -> str:
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})


# Minimum Kubeflow Pipelines backend (docs/kubeflow.md, "Versions"): dsl.Collected, the fan-in of
# the validate and tensorize chunks, runs from 2.14; [[ScheduledTime]] in recurring-run parameters from 2.16.
MIN_KFP = (2, 16)
SCHEDULED_TIME = "[[ScheduledTime]]"


def reported_version(host: str) -> tuple[int, ...] | None:
    """The backend's version where its API reports one: `tag_name` of /apis/v1beta1/healthz
    (older servers; the v2beta1 healthz has no version field, and KFP 2.x servers may omit it)."""
    import requests

    url = (host if "://" in host else f"http://{host}").rstrip("/") + "/apis/v1beta1/healthz"
    token = bearer_token()
    try:
        resp = requests.get(url, headers={"Authorization": f"Bearer {token}"} if token else {}, timeout=30)
        tag = resp.json().get("tag_name", "") if resp.ok else ""
    except (requests.RequestException, ValueError):
        return None
    numbers = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", str(tag))
    return tuple(int(n) for n in numbers.groups() if n is not None) if numbers else None


def check_server(client, host: str, namespace: str | None) -> None:
    """Refuse a backend this pipeline cannot run on, before anything is uploaded: one older than
    MIN_KFP (when it says its version), or a multi-user one without --namespace (from 2.17 an
    upload outside a namespace needs rights in the KFP system namespace: 403 for a profile user)."""
    if client.get_kfp_healthz().multi_user and not namespace:
        raise ValueError("this Kubeflow Pipelines is multi-user: pass --namespace <your profile namespace> "
                         "(the pipeline, its versions, experiments and runs live there)")
    version = reported_version(host)
    if version is None:
        log.warning("the KFP API did not report its version: this pipeline needs a backend >= %s "
                    "(docs/kubeflow.md, Versions); check it by hand", ".".join(map(str, MIN_KFP)))
    elif version[:2] < MIN_KFP:
        raise ValueError(f"Kubeflow Pipelines {'.'.join(map(str, version))} is older than "
                         f"{'.'.join(map(str, MIN_KFP))}: dsl.Collected (the validate and tensorize fan-ins, >= 2.14) and "
                         "[[ScheduledTime]] (the weekly run's fresh ingest, >= 2.16) would not work")


def find_pipeline(client, pipeline_name: str, namespace: str | None = None) -> str | None:
    """The id of the pipeline named `pipeline_name` in `namespace` (None: the shared ones)."""
    found = client.list_pipelines(page_size=2, filter=_name_filter(pipeline_name), namespace=namespace)
    pipelines = found.pipelines or []
    if len(pipelines) > 1:
        raise LookupError(f"{len(pipelines)} pipelines are named {pipeline_name!r}: the name must be unique")
    return pipelines[0].pipeline_id if pipelines else None


def upload(client, package_path: str, pipeline_name: str, version: str, description: str,
           namespace: str | None = None) -> Uploaded:
    """Create the pipeline when it is new (in `namespace`: a namespaced pipeline), and the
    version `version` unless it exists."""
    pipeline_id = find_pipeline(client, pipeline_name, namespace)
    if pipeline_id is None:
        pipeline_id = client.upload_pipeline(package_path, pipeline_name=pipeline_name,
                                             description=description, namespace=namespace).pipeline_id
        log.info("created pipeline %s (%s) in %s", pipeline_name, pipeline_id, namespace or "the shared namespace")
    existing = client.list_pipeline_versions(pipeline_id, page_size=1, filter=_name_filter(version))
    if existing.pipeline_versions:
        return Uploaded(pipeline_id, existing.pipeline_versions[0].pipeline_version_id, version, False)
    created = client.upload_pipeline_version(package_path, pipeline_version_name=version,
                                             pipeline_id=pipeline_id, description=description)
    return Uploaded(pipeline_id, created.pipeline_version_id, version, True)


def find_version(client, pipeline_name: str, version: str, namespace: str | None = None) -> Uploaded:
    """An uploaded version by name, or the newest one for `latest`."""
    pipeline_id = find_pipeline(client, pipeline_name, namespace)
    if pipeline_id is None:
        raise LookupError(f"no pipeline named {pipeline_name!r}: upload it first")
    if version == "latest":
        found = client.list_pipeline_versions(pipeline_id, page_size=1, sort_by="created_at desc")
    else:
        found = client.list_pipeline_versions(pipeline_id, page_size=1, filter=_name_filter(version))
    if not found.pipeline_versions:
        raise LookupError(f"pipeline {pipeline_name!r} has no version {version!r}")
    v = found.pipeline_versions[0]
    return Uploaded(pipeline_id, v.pipeline_version_id, v.display_name, False)


def schedule(client, uploaded: Uploaded, experiment: str, job_name: str, cron: str,
             params: dict[str, Any], namespace: str | None = None, service_account: str | None = None) -> str:
    """(Re)create the recurring run `job_name` of `uploaded` in `experiment`; returns its id.

    An older recurring run of the same name in the experiment is deleted first, so the schedule
    always points at the version just uploaded. Runs never overlap and missed ones are not
    caught up. `ingest_refresh_key` is `[[ScheduledTime]]` (expanded per run from KFP 2.16,
    kubeflow/pipelines#12494), so each weekly run re-reads its source while a rerun or clone of
    one week's run can still reuse that week's ingest from cache.
    """
    exp = client.create_experiment(experiment, namespace=namespace)
    old = client.list_recurring_runs(experiment_id=exp.experiment_id, filter=_name_filter(job_name))
    for rr in old.recurring_runs or []:
        client.delete_recurring_run(rr.recurring_run_id)
        log.info("replaced recurring run %s", rr.recurring_run_id)
    job = client.create_recurring_run(
        experiment_id=exp.experiment_id, job_name=job_name, cron_expression=cron,
        pipeline_id=uploaded.pipeline_id, version_id=uploaded.version_id,
        params={"ingest_refresh_key": SCHEDULED_TIME, **params}, enabled=True, max_concurrency=1,
        no_catchup=True, service_account=service_account,
        description=f"lpdvae retraining of {uploaded.version_name} ({cron})",
    )
    return job.recurring_run_id


def run(client, uploaded: Uploaded, experiment: str, run_name: str, params: dict[str, Any],
        namespace: str | None = None, service_account: str | None = None) -> str:
    """One run of `uploaded` now, re-reading the data source (a fresh `ingest_refresh_key`
    unless `params` has one); returns the run id."""
    exp = client.create_experiment(experiment, namespace=namespace)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    result = client.run_pipeline(
        experiment_id=exp.experiment_id, job_name=run_name, pipeline_id=uploaded.pipeline_id,
        version_id=uploaded.version_id, params={"ingest_refresh_key": stamp, **params},
        service_account=service_account,
    )
    return result.run_id


def cron_with_seconds(expr: str) -> str:
    """KFP crons have 6 fields (seconds first); a 5-field crontab line gets `0` seconds."""
    fields = expr.split()
    if len(fields) == 5:
        return "0 " + " ".join(fields)
    if len(fields) == 6:
        return " ".join(fields)
    raise ValueError(f"cron {expr!r}: expected 5 (crontab) or 6 (KFP, with seconds) fields")
