"""Real services on loopback for the whole suite: an S3 API (moto's server) and an MLflow server.

Nothing here is mocked: the processes are the same programs a user runs, started on free
127.0.0.1 ports and torn down at the end of the session.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lpdvae.params import Params, load_params
from tests.project import small_model_dotted

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing-key-id",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited early with code {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout}s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1; AWS_* variables point boto3, DVC and MLflow at it."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    proc = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in [*S3_ENV, "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL"]}
    os.environ.update(S3_ENV)
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    os.environ["MLFLOW_S3_ENDPOINT_URL"] = endpoint
    try:
        wait_for_port(port, proc, "moto_server")
        yield endpoint
    finally:
        stop(proc)
        log.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_server: str) -> str:
    """A new, empty bucket on the session's S3 server."""
    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def mlflow_server(s3_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1: sqlite backend, artifacts proxied to a bucket on moto."""
    import boto3

    root = tmp_path_factory.mktemp("mlflow")
    bucket = f"mlflow-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
    port = free_port()
    log = open(root / "server.log", "wb")
    proc = subprocess.Popen(
        [
            str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1",
            "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination", f"s3://{bucket}/artifacts",
        ],
        stdout=log, stderr=subprocess.STDOUT,
        # no job runner: MLflow 3's server otherwise starts 7 busy-polling huey consumers that
        # outlive it and take a core on a 2-core machine
        env={**os.environ, "MLFLOW_S3_ENDPOINT_URL": s3_server,
             "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    try:
        wait_for_port(port, proc, f"mlflow server (log: {root / 'server.log'})", timeout=300)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)
        log.close()


@pytest.fixture
def tiny_params() -> Params:
    """The project's params.yaml shrunk for seconds-long runs: 2 tracks, a small model, 1 epoch."""
    return load_params(
        REPO / "params.yaml",
        {
            "data.source": "demo://bach-chorales?songs=6",
            "tracks": [
                {"name": "soprano", "kind": "monophonic", "program": 52, "is_drum": False,
                 "names": ["soprano"], "programs": []},
                {"name": "bass", "kind": "monophonic", "program": 52, "is_drum": False,
                 "names": ["bass"], "programs": []},
            ],
            **small_model_dotted(),
            "train.epochs": 1,
            "train.batch_size": 4,
            "train.checkpoint_every_steps": 5,
            "evaluate.n_samples": 2,
            "evaluate.n_generated": 8,
            "evaluate.temperatures": [1.0],
            "evaluate.render_audio": False,
        },
    )


def have(program: str) -> bool:
    return shutil.which(program) is not None
