"""Promotion records the MLflow user the server authenticated, asked of a real `mlflow server
--app-name basic-auth` (the cluster's MLflow runs that app), not the OS login."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest
import requests

from lpdvae.errors import RegistryError
from lpdvae.registry.aliases import promoter
from tests.conftest import BIN, free_port, stop, wait_for_port

ADMIN = ("admin", "admin-password-for-tests")


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory) -> Iterator[str]:
    """MLflow with basic auth on 127.0.0.1 and one user, alice."""
    root = tmp_path_factory.mktemp("mlflow-auth")
    ini = root / "basic_auth.ini"
    ini.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{root / 'auth.db'}\n"
                   f"admin_username = {ADMIN[0]}\nadmin_password = {ADMIN[1]}\n"
                   "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    port, log = free_port(), open(root / "server.log", "wb")
    env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-only-key",
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen([str(BIN / "mlflow"), "server", "--app-name", "basic-auth", "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1",
                             "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port, proc, f"mlflow server --app-name basic-auth (log: {root / 'server.log'})", timeout=300)
        made = requests.post(f"{url}/api/2.0/mlflow/users/create", auth=ADMIN, timeout=60,
                             json={"username": "alice", "password": "alice-password-123"})
        assert made.ok, made.text
        yield url
    finally:
        stop(proc)
        log.close()


@pytest.mark.slow
def test_promotion_records_the_mlflow_user_the_server_authenticated(auth_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "alice-password-123")
    monkeypatch.setenv("USER", "root")  # the OS login, which must not be what is recorded
    assert promoter(auth_server) == "alice"


@pytest.mark.slow
def test_a_login_the_server_refuses_stops_the_promotion(auth_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-her-password")
    with pytest.raises(RegistryError, match="refused the login .HTTP 401"):
        promoter(auth_server)


def test_a_local_store_records_that_nobody_authenticated():
    assert promoter("sqlite:///mlflow.db") == "unauthenticated (local store sqlite)"
