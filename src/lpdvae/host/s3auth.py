"""S3 credentials per purpose, each under its own environment prefix, so no key serves two.

A pipeline pod may hold the credentials of one purpose only: ingest the data source's
(`LPDVAE_DATA_AWS_ACCESS_KEY_ID`, ...), the TrainJob step and its nodes the pipeline root's
(`LPDVAE_ARTIFACTS_AWS_...`); MLflow's artifact store keys stay in the MLflow server's pod. A
purpose without its own variables falls back to boto3's default chain (plain `AWS_*`, a
workload identity, ~/.aws): what a laptop or the test suite uses. Placeholder values
(`CHANGE_ME`, what the committed secret templates hold) are refused before anything connects.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from lpdvae.errors import LpdvaeError

PREFIXES = {"data": "LPDVAE_DATA_", "artifacts": "LPDVAE_ARTIFACTS_"}
KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")
PLACEHOLDER = "CHANGE_ME"
MAX_ATTEMPTS = 5  # botocore "standard" retries: throttling, 5xx, connection errors


def purpose_env(purpose: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The `AWS_*` settings of `purpose`, read from its prefixed variables only."""
    env = os.environ if environ is None else environ
    prefix = PREFIXES[purpose]
    return {key: env[prefix + key] for key in KEYS if env.get(prefix + key)}


def refuse_placeholders(environ: Mapping[str, str] | None = None) -> None:
    """Raise when a variable still holds the templates' placeholder: a Secret applied from an
    unedited `*.env.example` copy would otherwise fail later as a confusing 403, or work with a
    guessable password. Names the variables, never a value."""
    env = os.environ if environ is None else environ
    names = sorted(k for k, v in env.items() if v.strip() == PLACEHOLDER)
    if names:
        raise LpdvaeError(f"placeholder secret values ({PLACEHOLDER}) in {', '.join(names)}: fill in the env files "
                          "beside the *.env.example templates and apply the overlay again (docs/kubeflow.md, day one)")


def s3_client(purpose: str, config: Any = None, environ: Mapping[str, str] | None = None) -> Any:
    """A boto3 S3 client with `purpose`'s credentials, endpoint and region (boto3's defaults for
    what the purpose does not set)."""
    import boto3

    env = purpose_env(purpose, environ)
    refuse_placeholders(env)
    session = boto3.session.Session(
        aws_access_key_id=env.get("AWS_ACCESS_KEY_ID"), aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=env.get("AWS_SESSION_TOKEN"), region_name=env.get("AWS_DEFAULT_REGION"))
    endpoint = env.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL") or None
    return session.client("s3", endpoint_url=endpoint, config=config)


def retrying(max_attempts: int = MAX_ATTEMPTS, connections: int = 10) -> Any:
    """botocore's Config for every client here: transient errors retried with exponential backoff
    ("standard" mode), `connections` pooled (botocore keeps 10 and warns past them)."""
    from botocore.config import Config

    return Config(retries={"max_attempts": max_attempts, "mode": "standard"}, max_pool_connections=connections)
