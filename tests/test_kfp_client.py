"""upload / schedule send the right KFP API calls, checked against a recorded v2beta1 contract.

There is no cluster here: a loopback HTTP server answers with the recorded responses and keeps
every request, so the test sees exactly what kfp.Client would send to Kubeflow Pipelines.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from pipelines.remote import schedule, upload

CONTRACT = json.loads((Path(__file__).parent / "contracts" / "kfp" / "v2beta1.json").read_text())


class FakeKfp:
    def __init__(self, pipeline_exists: bool) -> None:
        self.requests: list[dict] = []
        self.pipeline_exists = pipeline_exists
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _answer(self) -> None:
                url = urlparse(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fake.requests.append({"method": self.command, "path": url.path, "query": parse_qs(url.query),
                                      "body": body, "headers": dict(self.headers)})
                key = f"{self.command} {url.path}"
                if key == "GET /apis/v2beta1/pipelines" and fake.pipeline_exists:
                    key += "#existing"
                if key not in CONTRACT:
                    self.send_response(404)
                    self.end_headers()
                    self.wfile.write(json.dumps({"error": f"not in contract: {key}"}).encode())
                    return
                data = json.dumps(CONTRACT[key]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def calls(self) -> list[str]:
        return [f"{r['method']} {r['path']}" for r in self.requests if not r["path"].endswith("healthz")]


@pytest.fixture
def kfp_api(request, monkeypatch):
    monkeypatch.delenv("KFP_TOKEN", raising=False)
    fake = FakeKfp(pipeline_exists=getattr(request, "param", False))
    fake.thread.start()
    yield fake
    fake.server.shutdown()


REPO = Path(__file__).resolve().parents[1]


def test_upload_creates_the_pipeline_then_a_version_named_from_git(kfp_api):
    pipeline_id, version_id, name = upload(kfp_api.host, REPO / "params.yaml")
    assert (pipeline_id, version_id) == ("p-123", "v-456")
    assert kfp_api.calls() == ["GET /apis/v2beta1/pipelines", "POST /apis/v2beta1/pipelines/upload",
                               "POST /apis/v2beta1/pipelines/upload_version"]
    upload_req = kfp_api.requests[-1]
    assert upload_req["query"]["name"] == [name] and upload_req["query"]["pipelineid"] == ["p-123"]
    assert b"lpdvae-training" in upload_req["body"] and b"deploymentSpec" in upload_req["body"]


@pytest.mark.parametrize("kfp_api", [True], indirect=True)
def test_upload_of_an_existing_pipeline_only_adds_a_version(kfp_api):
    upload(kfp_api.host, REPO / "params.yaml")
    assert kfp_api.calls() == ["GET /apis/v2beta1/pipelines", "POST /apis/v2beta1/pipelines/upload_version"]


@pytest.mark.parametrize("kfp_api", [True], indirect=True)
def test_schedule_creates_a_weekly_recurring_run_of_the_newest_version(kfp_api):
    job_id = schedule(kfp_api.host, REPO / "params.yaml", "0 0 3 * * 1", "lpdvae", "lpdvae-weekly-retraining")
    assert job_id == "rr-1"
    calls = kfp_api.calls()
    assert calls[0] == "GET /apis/v2beta1/pipelines"
    assert "GET /apis/v2beta1/pipelines/p-123/versions" in calls
    assert calls[-1] == "POST /apis/v2beta1/recurringruns"
    body = json.loads(kfp_api.requests[-1]["body"])
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 1"
    assert body["pipeline_version_reference"] == {"pipeline_id": "p-123", "pipeline_version_id": "v-456"}
    assert body["experiment_id"] == "e-789"
    assert body["max_concurrency"] in ("1", 1) and body["no_catchup"] is True


def test_upload_sends_no_credentials_it_was_not_given(kfp_api, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "SUPER-SECRET-VALUE-123")
    upload(kfp_api.host, REPO / "params.yaml")
    for r in kfp_api.requests:
        assert b"SUPER-SECRET-VALUE-123" not in r["body"]
        assert "Authorization" not in r["headers"]
