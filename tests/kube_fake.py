"""A loopback fake of the Kubernetes API for TrainJobs: the one thing the suite fakes (no cluster
can run on this machine). It speaks the REST paths `kubernetes.client.CustomObjectsApi` calls for
`trainer.kubeflow.org/v1alpha1` trainjobs (create, get, list by label, delete) and
`argoproj.io/v1alpha1` workflows (get), plays the Trainer's part (a created job ends in the
outcome scripted for it after a few GETs; a Complete one has written its model to S3, as its node
0 would) and records every verb it was asked for, so a test can hold the Role to exactly those.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

ROUTE = re.compile(r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)/namespaces/(?P<ns>[^/]+)/(?P<res>[^/]+)"
                   r"(?:/(?P<name>[^/]+))?$")
TRAINJOB_GROUP = "trainer.kubeflow.org"


def verb(method: str, named: bool, query: dict[str, list[str]]) -> str:
    """The RBAC verb of a request, as the API server's authorizer names it."""
    if method == "GET":
        return "get" if named else ("watch" if query.get("watch") == ["true"] else "list")
    if method == "DELETE":
        return "delete" if named else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}[method]


def not_found(what: str) -> tuple[int, dict[str, Any]]:
    return 404, {"kind": "Status", "code": 404, "reason": "NotFound", "message": f"{what} not found"}


class FakeKube:
    """The i-th TrainJob created ends `outcomes[i]` ('' or past the list: never ends) once it has
    been read `polls` times; `workflows` maps Argo Workflow names to their uids."""

    def __init__(self, outcomes: tuple[str, ...] = ("Complete",), polls: int = 2, reason: str = "",
                 message: str = "", workflows: dict[str, str] | None = None):
        self.outcomes, self.polls, self.reason, self.message = list(outcomes), polls, reason, message
        self.workflows = workflows or {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.created: list[dict[str, Any]] = []
        self.deleted: list[str] = []
        self.verbs: set[tuple[str, str, str]] = set()
        self.gets: dict[str, int] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                status, out = fake.handle(self.command, self.path, body)
                data = json.dumps(out).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

        return Handler

    def handle(self, method: str, raw: str, body: Any) -> tuple[int, dict[str, Any]]:
        url = urlparse(raw)
        query = parse_qs(url.query)
        m = ROUTE.match(url.path)
        if not m:
            return not_found(url.path)
        self.verbs.add((m["group"], m["res"], verb(method, bool(m["name"]), query)))
        if (m["group"], m["res"]) == ("argoproj.io", "workflows") and method == "GET" and m["name"]:
            uid = self.workflows.get(m["name"])
            return (200, {"metadata": {"name": m["name"], "uid": uid}}) if uid else not_found(m["name"])
        if (m["group"], m["res"]) != (TRAINJOB_GROUP, "trainjobs"):
            return not_found(url.path)
        if method == "POST":
            return self.create(m["ns"], body)
        if method == "GET" and not m["name"]:
            selector = dict(s.split("=", 1) for s in query.get("labelSelector", [""])[0].split(",") if s)
            return 200, {"kind": "TrainJobList", "items": [self.view(j) for j in self.jobs.values()
                                                            if selector.items() <= j["metadata"]["labels"].items()]}
        if m["name"] not in self.jobs:
            return not_found(m["name"])
        if method == "DELETE":
            self.deleted.append(m["name"])
            return 200, self.jobs.pop(m["name"])
        self.gets[m["name"]] = self.gets.get(m["name"], 0) + 1
        return 200, self.view(self.jobs[m["name"]])

    def create(self, ns: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        name = body["metadata"]["name"]
        if name in self.jobs:
            return 409, {"kind": "Status", "code": 409, "reason": "AlreadyExists", "message": f"{name} exists"}
        if body["metadata"].get("namespace") != ns:  # the API server refuses a body naming another namespace
            return 400, {"kind": "Status", "code": 400, "reason": "BadRequest", "message": "namespace mismatch"}
        outcome = self.outcomes[len(self.created)] if len(self.created) < len(self.outcomes) else ""
        self.created.append(body)
        self.add(body, outcome)
        if outcome == "Complete":
            env = {e["name"]: e.get("value") for e in body["spec"]["trainer"]["env"]}
            write_model(env["LPDVAE_MODEL_URI"])
        return 201, self.jobs[name]

    def add(self, body: dict[str, Any], outcome: str, polls: int | None = None) -> None:
        """A job as the API server keeps it (also for a test to place an earlier attempt's job)."""
        meta = {**body["metadata"], "uid": f"u-{len(self.jobs) + 1}",
                "creationTimestamp": f"2026-12-01T00:00:{len(self.jobs):02d}Z"}
        meta.setdefault("labels", {})
        self.jobs[meta["name"]] = {**body, "metadata": meta, "_outcome": outcome,
                                   "_polls": self.polls if polls is None else polls}

    def view(self, job: dict[str, Any]) -> dict[str, Any]:
        """What a GET shows: the job, with its scripted condition once it has been read enough."""
        out = {k: v for k, v in job.items() if not k.startswith("_")}
        name = job["metadata"]["name"]
        if job["_outcome"] and self.gets.get(name, 0) >= job["_polls"]:
            out["status"] = {"conditions": [{"type": job["_outcome"], "status": "True",
                                             "reason": self.reason or f"Jobs{job['_outcome']}",
                                             "message": self.message,
                                             "lastTransitionTime": "2026-12-02T00:00:00Z"}]}
        return out

    def close(self) -> None:
        self.server.shutdown()


def write_model(uri: str) -> None:
    """What node 0 of a completed job leaves at its LPDVAE_MODEL_URI."""
    import boto3

    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    s3 = boto3.client("s3")
    for key, text in {"model.pt": "weights", "train_metrics.json": '{"val_loss": 1.5, "epochs": 2}',
                      "mlflow_run.json": '{"run_id": "r-42"}', "curves/train.csv": "step,loss\n"}.items():
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{key}", Body=text.encode())
