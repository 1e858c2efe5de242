"""No credential planted in the inputs reaches a record.

One tiny end-to-end run (`lpdvae run`, then `lpdvae audit`) in a real git project, on the
session's real MLflow server, with a credential planted in each place a user puts one: the
data source's login in a netrc file (the server refuses a request without it; a source URI
carrying user:password and a presigned query is refused by params, and its refusal echoes
neither), `MLFLOW_TRACKING_URI` (user:password) and the git origin URL (a token). Every record the run writes is read back and searched: the output
folders (manifest, stats, index, mlflow_run.json, evaluation, registered.json), the logs and
printed output of both commands, the MLflow run's params, tags and artifacts, the registered
version's tags, and the KFP metadata of the ingest component and of a trained model.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import http.server
import json
import subprocess
import sys
import tarfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import songkit
from tests.project import env, make_project

SECRETS = ("hunter2", "SIG-4f2a9", "CRED-71c0", "pw-7e1b3", "ghp-TOKEN-9c3d")


class _BasicAuthHandler(http.server.SimpleHTTPRequestHandler):
    """Files only for alice:hunter2 (HTTP Basic): the login must come from the netrc file."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.headers.get("Authorization") != "Basic " + base64.b64encode(b"alice:hunter2").decode():
            self.send_error(401)
            return
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def login_corpus(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """(clean URL, sha256, netrc file with its login) of a tar.gz of 6 songs on http.server."""
    corpus = tmp_path / "corpus"
    songkit.good_corpus(corpus, n_midi=4, n_npz=2)
    www = tmp_path / "www"
    www.mkdir()
    with tarfile.open(www / "corpus.tar.gz", "w:gz") as tf:
        tf.add(corpus / "files", arcname=".")
    sha = hashlib.sha256((www / "corpus.tar.gz").read_bytes()).hexdigest()
    handler = functools.partial(_BasicAuthHandler, directory=str(www))
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login alice password hunter2\n")
    netrc.chmod(0o600)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/corpus.tar.gz", sha, netrc
    finally:
        server.shutdown()
        server.server_close()


def leaks(label: str, data: bytes | str) -> list[str]:
    text = data if isinstance(data, str) else data.decode("utf-8", "replace")
    return [f"{label}: {s}" for s in SECRETS if s in text]


@pytest.mark.slow
def test_planted_credentials_reach_no_record(tmp_path, login_corpus, mlflow_server, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    url, sha, netrc = login_corpus
    monkeypatch.setenv("NETRC", str(netrc))  # the in-process KFP ingest below downloads too
    name = f"cred-{uuid.uuid4().hex[:8]}"
    project = make_project(tmp_path / "project", {
        "data": {"source": url, "sha256": sha},
        "mlflow": {"tracking_uri": None, "experiment": "credentials-test"},
        "register": {"model_name": name},
        "train": {"batch_size": 2},  # 6 songs: train may hold only 2 (6 phrases)
    })
    subprocess.run(["git", "remote", "add", "origin", "https://x-access-token:ghp-TOKEN-9c3d@github.com/o/r.git"],
                   cwd=project, check=True)
    host = mlflow_server.removeprefix("http://")
    run_env = {**env(), "MLFLOW_TRACKING_URI": f"http://bob:pw-7e1b3@{host}", "NETRC": str(netrc)}
    found = refused_source_leaks(project, url.replace("http://", "http://alice:hunter2@") +
                                 "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=CRED-71c0&X-Amz-Signature=SIG-4f2a9",
                                 run_env)

    def lpdvae(*argv: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "lpdvae", *argv], cwd=project, env=run_env,
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout + proc.stderr

    found += leaks("lpdvae run output", lpdvae("run", "--root", "."))
    audit = lpdvae("audit", f"models:/{name}/1")
    assert "dvc get https://***@github.com/o/r.git data/tensors" in audit  # the origin, redacted
    found += leaks("lpdvae audit output", audit)

    written = [p for top in ("data", "models", "reports") for p in (project / top).rglob("*") if p.is_file()]
    assert {"manifest.jsonl", "stats.csv", "index.json", "mlflow_run.json", "registered.json"} <= \
        {p.name for p in written}
    for path in written:
        found += leaks(str(path.relative_to(project)), path.read_bytes())
    run_record = json.loads((project / "models/vae/mlflow_run.json").read_text())
    assert run_record["tracking_uri"] == mlflow_server  # the store, without the credentials

    client = MlflowClient(tracking_uri=mlflow_server)
    version = client.get_model_version(name, "1")
    run = client.get_run(version.run_id)
    found += leaks("MLflow version tags", json.dumps(version.tags))
    found += leaks("MLflow run params/tags", json.dumps({**run.data.params, **run.data.tags}))
    artifacts = tmp_path / "artifacts"
    client.download_artifacts(version.run_id, "", str(artifacts / "run"))  # the evaluation
    logged = client.get_logged_model(version.source.removeprefix("models:/"))
    mlflow.artifacts.download_artifacts(artifact_uri=logged.artifact_location, dst_path=str(artifacts / "version"),
                                        tracking_uri=mlflow_server)  # the logged model
    files = [p for p in artifacts.rglob("*") if p.is_file()]
    # the version's generator (weights, model.json, generator.json: the files register uploads)
    assert {"model.json", "generator.json"} <= {p.name for p in files}
    assert any(p.name == "metrics.json" for p in files)
    for path in files:
        found += leaks(f"MLflow artifact {path.relative_to(artifacts)}", path.read_bytes())

    found += leaks("KFP metadata", json.dumps(kfp_metadata(project, tmp_path, url, sha, run_env)))
    assert found == []


def refused_source_leaks(project: Path, url: str, run_env: dict[str, str]) -> list[str]:
    """A source URI carrying credentials stops the command at params, in one line that names
    where credentials go and echoes none of them."""
    proc = subprocess.run([sys.executable, "-m", "lpdvae", "--set", f"data.source={url}", "ingest"],
                          cwd=project, env=run_env, capture_output=True, text=True)
    assert proc.returncode == 2 and "carries a credential" in proc.stderr and ".netrc" in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    return leaks("the refused source's message", proc.stdout + proc.stderr)


def kfp_metadata(project: Path, tmp_path: Path, url: str, sha: str, run_env: dict[str, str]) -> dict:
    """What the KFP UI would show: the ingest component's dataset metadata and a trained model's."""
    from kfp.dsl import Dataset, Model

    from components import ingest_op
    from components.runtime import report_training
    from lpdvae.params import load_params

    params = load_params(project / "params.yaml")
    raw = Dataset(uri=str(tmp_path / "kfp-raw"))
    ingest_op.python_func(params_json=json.dumps(params.to_dict()), refresh_key="k", raw=raw)
    assert raw.metadata["source"] == url
    model = Model(uri=str(tmp_path / "kfp-model"))
    report_training(project / "models/vae", model, type("Metrics", (), {"log_metric": lambda *a: None})())
    return {"raw": raw.metadata, "model": model.metadata}
