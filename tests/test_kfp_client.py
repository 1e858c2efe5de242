"""upload / schedule / run send the right KFP API calls, replayed against a hand-written v2beta1 contract.

There is no cluster here: a loopback HTTP server replays the scenarios in
tests/contracts/kfp-handwritten/ (written by hand, not recorded: see its README), rejects any
request out of sequence and keeps what it got, so each test sees exactly what `python -m pipelines`
sends to Kubeflow Pipelines through kfp.Client. The hand-written responses are checked against
kfp_server_api, the client generated from the same API, so they cannot drift from its schema.
"""

from __future__ import annotations

import fnmatch
import inspect
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import kfp_server_api
import pytest

from pipelines import remote
from pipelines.__main__ import main

REPO = Path(__file__).resolve().parents[1]
CONTRACTS = Path(__file__).parent / "contracts" / "kfp-handwritten"
SCENARIOS = sorted(p.stem for p in CONTRACTS.glob("*.json") if not p.stem.startswith("healthz"))
SECRET = "SUPER-SECRET-VALUE-123"
pytestmark = pytest.mark.filterwarnings("ignore:This client only works:FutureWarning")


def load(name: str) -> dict[str, Any]:
    return json.loads((CONTRACTS / f"{name}.json").read_text())


# --- the contract against kfp_server_api ------------------------------------------------------

def api_operations() -> list[tuple[str, re.Pattern[str]]]:
    """(method, path regex) of every v2beta1 operation the generated client knows."""
    ops = []
    for module in vars(kfp_server_api.api).values():
        if not inspect.ismodule(module):
            continue
        for path, method in re.findall(r"'(/apis/v2beta1/[^']*)', '(GET|POST|DELETE|PATCH|PUT)'",
                                       inspect.getsource(module)):
            ops.append((method, re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$")))
    return ops


def conformance_errors(data: Any, type_name: str, where: str) -> list[str]:
    """Fields or types of `data` that the kfp_server_api type `type_name` does not have."""
    # proto3 JSON writes int64 fields as strings (the models say str) and parsers take numbers too
    simple = {"str": (str, int), "bool": bool, "object": object, "datetime": str, "float": (int, float)}
    if type_name in simple:
        return [] if isinstance(data, simple[type_name]) else [f"{where}: {data!r} is not {type_name}"]
    if type_name == "int":
        return [] if isinstance(data, int) or str(data).isdigit() else [f"{where}: {data!r} is not int"]
    if m := re.fullmatch(r"list\[(.+)\]", type_name):
        return [e for i, v in enumerate(data) for e in conformance_errors(v, m.group(1), f"{where}[{i}]")]
    if m := re.fullmatch(r"dict\(str, (.+)\)", type_name):
        return [e for k, v in data.items() for e in conformance_errors(v, m.group(1), f"{where}.{k}")]
    model = getattr(kfp_server_api, type_name)
    if not model.openapi_types:  # an enum
        allowed = [v for k, v in vars(model).items() if k.isupper() and isinstance(v, str)]
        return [] if data in allowed else [f"{where}: {data!r} not in {type_name} {allowed}"]
    by_json = {j: p for p, j in model.attribute_map.items()}
    errors = [f"{where}.{k}: not a field of {type_name}" for k in data if k not in by_json]
    for k, v in data.items():
        if k in by_json:
            errors += conformance_errors(v, model.openapi_types[by_json[k]], f"{where}.{k}")
    return errors


def interactions(name: str) -> list[dict[str, Any]]:
    doc = load(name)
    return doc.get("interactions", [doc])


@pytest.mark.parametrize("name", [*SCENARIOS, "healthz", "healthz_v1beta1"])
def test_contract_says_it_is_hand_written(name):
    assert "hand-written" in load(name)["provenance"] and "not recorded" in load(name)["provenance"]


@pytest.mark.parametrize("name", [*SCENARIOS, "healthz"])
def test_contract_matches_the_generated_kfp_client(name):
    """The hand-written requests and responses use only operations, fields and types of kfp_server_api."""
    ops = api_operations()
    assert len(ops) > 20, "kfp_server_api operations were not found"
    if name != "healthz" and "healthz" in load(name):  # a scenario's own v2beta1 healthz answer
        assert not conformance_errors(load(name)["healthz"], "V2beta1GetHealthzResponse", f"{name}.healthz")
    for i, it in enumerate(interactions(name)):
        req, resp = it["request"], it["response"]
        assert any(m == req["method"] and p.match(req["path"]) for m, p in ops), f"{name}[{i}]: {req}"
        if resp["model"]:
            assert not conformance_errors(resp["body"], resp["model"], f"{name}[{i}].response")
        if "body_includes" in req:
            assert not conformance_errors(req["body_includes"], req["body_model"], f"{name}[{i}].request")


# --- a loopback server that replays one scenario ----------------------------------------------

@dataclass
class Replay:
    expected: list[dict[str, Any]]
    got: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # the probes answered at any time: the v2beta1 healthz (kfp.Client's, multi_user) and the
    # v1beta1 one (the server's version); a scenario may give its own bodies
    healthz: dict[str, Any] = field(default_factory=lambda: load("healthz")["response"]["body"])
    healthz_v1beta1: dict[str, Any] = field(default_factory=lambda: load("healthz_v1beta1")["response"]["body"])

    def answer(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        url = urlparse(raw_path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        headers = {k.lower(): v for k, v in headers.items()}
        self.got.append({"method": method, "path": url.path, "query": query, "headers": headers, "body": body})
        if (method, url.path) == ("GET", "/apis/v2beta1/healthz"):
            return 200, self.healthz
        if (method, url.path) == ("GET", "/apis/v1beta1/healthz"):
            return 200, self.healthz_v1beta1
        if not self.expected:
            return self._reject(f"unexpected extra request {method} {url.path}")
        want = self.expected.pop(0)
        problem = mismatch(want["request"], method, url.path, query, headers, body)
        return self._reject(problem) if problem else (200, want["response"]["body"])

    def _reject(self, problem: str) -> tuple[int, Any]:
        self.errors.append(problem)
        return 400, {"error": problem, "code": 3, "message": problem}


def mismatch(req: dict[str, Any], method: str, path: str, query: dict[str, str], headers: dict[str, str],
             body: bytes) -> str:
    """Why a request does not match the hand-written one ('' when it does)."""
    if (req["method"], req["path"]) != (method, path):
        return f"expected {req['method']} {req['path']}, got {method} {path}"
    for key, pattern in req.get("query_includes", {}).items():
        if not fnmatch.fnmatchcase(query.get(key, "\0"), pattern):
            return f"{method} {path}: query {key}={query.get(key)!r} does not match {pattern!r}"
    for text in req.get("multipart_includes", []):
        if "multipart/form-data" not in headers.get("content-type", "") or text.encode() not in body:
            return f"{method} {path}: multipart upload without {text!r}"
    if "body_includes" in req:
        sent = json.loads(body or b"{}")
        if errors := conformance_errors(sent, req["body_model"], "request"):
            return f"{method} {path}: {errors}"
        if diff := subset_diff(req["body_includes"], sent, "body"):
            return f"{method} {path}: {diff}"
    return ""


def subset_diff(want: Any, got: Any, where: str) -> str:
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return f"{where}: expected an object, got {got!r}"
        return next((d for k, v in want.items() if (d := subset_diff(v, got.get(k), f"{where}.{k}"))), "")
    if isinstance(want, str) and "*" in want and isinstance(got, str):
        return "" if fnmatch.fnmatchcase(got, want) else f"{where}: {got!r} does not match {want!r}"
    return "" if want == got or str(want) == str(got) else f"{where}: expected {want!r}, got {got!r}"


@pytest.fixture
def kfp_api(monkeypatch, tmp_path) -> Iterator[Any]:
    """Start a replay server; `kfp_api(scenario)` arms it and returns (host, Replay)."""
    monkeypatch.delenv("KFP_TOKEN", raising=False)
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.config/kfp context of the user
    state: dict[str, Replay] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _handle(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, data = state["replay"].answer(self.command, self.path, dict(self.headers), body)
            out = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        do_GET = do_POST = do_DELETE = do_PATCH = _handle

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def arm(scenario: str) -> tuple[str, Replay]:
        doc = load(scenario)
        state["replay"] = Replay([it for it in interactions(scenario)],
                                 **{k: doc[k] for k in ("healthz", "healthz_v1beta1") if k in doc})
        return f"http://127.0.0.1:{server.server_address[1]}", state["replay"]

    yield arm
    server.shutdown()


def done(replay: Replay) -> None:
    assert not replay.errors, replay.errors
    assert not replay.expected, f"requests never sent: {[e['request'] for e in replay.expected]}"


@pytest.fixture
def clean_revision(monkeypatch):
    """Pretend the checkout is clean at a fixed commit (version names are predictable)."""
    monkeypatch.setattr("pipelines.__main__.git_revision", lambda cwd: "0123456789abcdef0123")


# --- the commands ------------------------------------------------------------------------------

@pytest.mark.slow
def test_upload_creates_the_pipeline_then_a_version_named_from_git(kfp_api, clean_revision, capsys):
    host, replay = kfp_api("upload_new_pipeline")
    assert main(["--params", str(REPO / "params.yaml"), "upload", "--host", host]) == 0
    done(replay)
    name = replay.got[-1]["query"]["name"]
    assert re.fullmatch(r"git-0123456789ab-[0-9a-f]{12}", name), name
    assert f"uploaded pipeline lpdvae-training (p-123) version {name} (v-456)" in capsys.readouterr().out


@pytest.mark.slow
def test_upload_of_an_existing_pipeline_only_adds_a_version(kfp_api, clean_revision):
    host, replay = kfp_api("upload_existing_pipeline")
    assert main(["upload", "--host", host, "--params", str(REPO / "params.yaml")]) == 0
    done(replay)


@pytest.mark.slow
def test_upload_of_an_already_uploaded_clean_revision_uploads_nothing(kfp_api, clean_revision, capsys):
    host, replay = kfp_api("upload_same_revision")
    assert main(["upload", "--host", host, "--params", str(REPO / "params.yaml")]) == 0
    done(replay)
    assert "found pipeline lpdvae-training (p-123) version git-0123456789ab" in capsys.readouterr().out


def test_version_names_follow_the_revision_and_the_compiled_content(tmp_path):
    assert remote.version_name("0123456789abcdef0123", "c0ffee") == "git-0123456789ab-c0ffee"
    assert re.fullmatch(r"git-0123456789ab-dirty-\d{8}-\d{6}",
                        remote.version_name("0123456789abcdef0123-dirty", "c0ffee"))
    assert remote.version_name(None, "c0ffee").startswith("nogit-")
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("# header\nx: {p: 1, q: 2}\n---\ny: 1\n")
    b.write_text("x: {q: 2, p: 1}\n---\ny: 1\n")
    assert remote.package_digest(a) == remote.package_digest(b)


@pytest.mark.slow
def test_schedule_replaces_the_weekly_recurring_run_with_one_of_the_new_version(kfp_api, clean_revision):
    host, replay = kfp_api("schedule_weekly")
    rc = main(["schedule", "--host", host, "--params", str(REPO / "params.yaml"), "--set", "train.epochs=20",
               "--service-account", "lpdvae-pipeline"])
    assert rc == 0
    done(replay)
    params = json.loads(replay.got[-1]["body"])["runtime_config"]["parameters"]
    assert params == {"ingest_refresh_key": "[[ScheduledTime]]", "train__epochs": 20}, \
        "what --set changed, and a refresh key KFP sets to each run's scheduled time (each week re-reads the source)"


@pytest.mark.slow
def test_upload_with_a_namespace_creates_a_namespaced_pipeline(kfp_api, clean_revision):
    host, replay = kfp_api("upload_namespaced")
    assert main(["upload", "--host", host, "--params", str(REPO / "params.yaml"),
                 "--namespace", "kubeflow-user-example-com"]) == 0
    done(replay)


def test_upload_to_a_backend_older_than_the_minimum_is_refused_before_uploading(kfp_api, clean_revision, capsys):
    host, replay = kfp_api("upload_refused_old_backend")
    assert main(["upload", "--host", host, "--params", str(REPO / "params.yaml")]) == 1
    done(replay)
    assert "Kubeflow Pipelines 2.5.0 is older than 2.16" in capsys.readouterr().err


def test_upload_to_a_multi_user_backend_without_a_namespace_is_refused(kfp_api, clean_revision, capsys):
    host, replay = kfp_api("upload_refused_without_namespace")
    assert main(["upload", "--host", host, "--params", str(REPO / "params.yaml")]) == 1
    done(replay)
    assert "pass --namespace" in capsys.readouterr().err


def test_a_backend_that_reports_no_version_is_not_refused_on_a_guess(kfp_api):
    host, replay = kfp_api("upload_refused_old_backend")
    replay.healthz_v1beta1 = {"commit_sha": "unknown", "tag_name": "unknown", "multi_user": False}
    assert remote.reported_version(host) is None


def test_run_latest_starts_one_run_of_the_newest_version_without_uploading(kfp_api):
    host, replay = kfp_api("run_latest")
    rc = main(["run", "--host", host, "--params", str(REPO / "params.yaml"), "--version", "latest",
               "--run-name", "lpdvae-weekly-retraining", "--service-account", "lpdvae-pipeline"])
    assert rc == 0
    done(replay)
    assert not any("upload" in r["path"] for r in replay.got)


def test_crontab_lines_become_kfp_crons_with_seconds():
    assert remote.cron_with_seconds("0 3 * * 1") == "0 0 3 * * 1"
    assert remote.cron_with_seconds("0 0 3 * * 1") == "0 0 3 * * 1"
    with pytest.raises(ValueError):
        remote.cron_with_seconds("weekly")


@pytest.mark.slow
def test_credentials_come_only_from_the_environment(kfp_api, clean_revision, monkeypatch, tmp_path):
    host, replay = kfp_api("upload_same_revision")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
    assert main(["upload", "--host", host, "--params", str(REPO / "params.yaml")]) == 0
    assert all("authorization" not in r["headers"] for r in replay.got), "no token was given"
    assert all(SECRET.encode() not in r["body"] for r in replay.got)

    token = tmp_path / "token"
    token.write_text("projected-sa-token\n")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token))
    host, replay = kfp_api("upload_same_revision")
    assert main(["upload", "--host", host, "--params", str(REPO / "params.yaml")]) == 0
    assert {r["headers"].get("authorization") for r in replay.got} == {"Bearer projected-sa-token"}
