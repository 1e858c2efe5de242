"""Upload and schedule against a Kubeflow Pipelines API (v2beta1) with kfp.Client.

Auth comes from the environment only: `KFP_TOKEN` (a bearer token) or kfp's own in-cluster
service-account token discovery; nothing is written to the pipeline or the logs.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from pathlib import Path

from pipelines.training import PIPELINE_NAME, build_pipeline

from lpdvae.lineage import git_revision


def client(host: str):
    import kfp

    return kfp.Client(host=host, existing_token=os.environ.get("KFP_TOKEN") or None)


def version_name(params_path: str | Path) -> str:
    """`<git sha[:12]>-<UTC stamp>`: a new version per upload, traceable to the code."""
    rev = (git_revision(Path(params_path).resolve().parent) or "nogit").replace("-dirty", "-d")
    return f"{rev[:14]}-{dt.datetime.now(dt.UTC).strftime('%Y%m%d%H%M%S')}"


def _compiled(params_path: str | Path, folder: str) -> str:
    from kfp import compiler

    path = str(Path(folder) / "pipeline.yaml")
    compiler.Compiler().compile(build_pipeline(params_path), package_path=path)
    return path


def upload(host: str, params_path: str | Path, name: str | None = None) -> tuple[str, str, str]:
    """Create the pipeline, or add a version when it exists; returns (pipeline id, version id, name)."""
    name = name or PIPELINE_NAME
    c = client(host)
    vname = version_name(params_path)
    with tempfile.TemporaryDirectory() as tmp:
        package = _compiled(params_path, tmp)
        pipeline_id = c.get_pipeline_id(name)
        if pipeline_id is None:
            pipeline = c.upload_pipeline(package, pipeline_name=name,
                                         description="lpdvae training pipeline")
            pipeline_id = pipeline.pipeline_id
        version = c.upload_pipeline_version(package, pipeline_version_name=vname, pipeline_id=pipeline_id)
    return pipeline_id, version.pipeline_version_id, vname


def schedule(host: str, params_path: str | Path, cron: str, experiment: str, job_name: str) -> str:
    """A recurring run of the pipeline's newest version (uploading one first if needed)."""
    c = client(host)
    pipeline_id = c.get_pipeline_id(PIPELINE_NAME)
    if pipeline_id is None:
        pipeline_id, version_id, _ = upload(host, params_path)
    else:
        versions = c.list_pipeline_versions(pipeline_id, sort_by="created_at desc", page_size=1)
        version_id = versions.pipeline_versions[0].pipeline_version_id
    exp = c.create_experiment(experiment)
    job = c.create_recurring_run(
        experiment_id=exp.experiment_id, job_name=job_name, cron_expression=cron,
        pipeline_id=pipeline_id, version_id=version_id, enabled=True, max_concurrency=1,
        no_catchup=True,
    )
    return job.recurring_run_id
