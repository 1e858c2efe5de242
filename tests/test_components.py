"""The KFP components: knobs <-> params, and the component bodies themselves on a tiny corpus.

Component bodies run here through `component.python_func` with local artifacts, i.e. the same
code KFP runs in the pod, on real step functions. The tensorize fan-out (plan -> chunks ->
merge) must give byte for byte what one tensorize task gives.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
from kfp.dsl import HTML, Dataset, Markdown, Metrics

from components import (
    make_params_op,
    merge_tensors_op,
    plan_chunks_op,
    tensorize_chunk_op,
    tensorize_op,
)
from components.knobs import knob_values, knobs, params_from_knobs, params_json_from_knobs
from components.sharding import chunk_rows, n_chunks
from lpdvae.evaluation.sandbox_page import sandbox_page
from lpdvae.params import ParamsError, load_params

REPO = Path(__file__).resolve().parents[1]
VOICES = {"Soprano": (67, 79), "Alto": (60, 72), "Tenor": (52, 64), "Bass": (40, 52)}


def write_song(path: Path, seed: int, n_bars: int = 10) -> None:
    """Four voices of quarter notes in 4/4 (a chorale-like MIDI file the demo corpus resembles)."""
    rng = np.random.default_rng(seed)
    pm = pretty_midi.PrettyMIDI(initial_tempo=100.0)
    pm.time_signature_changes.append(pretty_midi.TimeSignature(4, 4, 0.0))
    beat = 0.6
    for name, (lo, hi) in VOICES.items():
        inst = pretty_midi.Instrument(program=52, name=name)
        for b in range(n_bars * 4):
            inst.notes.append(pretty_midi.Note(80, int(rng.integers(lo, hi)), b * beat, (b + 0.8) * beat))
        pm.instruments.append(inst)
    path.parent.mkdir(parents=True, exist_ok=True)
    pm.write(str(path))


# --- knobs -----------------------------------------------------------------------------------

def test_every_params_key_is_a_knob_and_the_round_trip_is_exact():
    params = load_params(REPO / "params.yaml")
    names = {k.name for k in knobs(params)}
    for dotted in params.flat():
        assert dotted.replace(".", "__") in names, dotted
    assert params_from_knobs(knob_values(params)) == params


def test_knob_values_from_the_kfp_ui_are_parsed_and_validated():
    values = knob_values(load_params(REPO / "params.yaml"))
    values.update({"data__sha256": "", "validate__require_time_signature": "", "train__lr": 1,
                   "evaluate__temperatures": "[0.5, 1.0]",  # "" is null; JSON typed into a text field
                   "tracks": [{**t, "program": float(t["program"])} for t in values["tracks"]]})  # doubles
    params = params_from_knobs(values)
    assert params.data.sha256 is None and params.validate.require_time_signature is None
    assert params.train.lr == 1.0 and params.evaluate.temperatures == (0.5, 1.0)
    with pytest.raises(ParamsError, match="train.epochs"):
        params_from_knobs({**values, "train__epochs": 0})
    with pytest.raises(ParamsError, match="unknown key"):
        params_from_knobs({**values, "train__epoch": 3})


def test_make_params_has_one_typed_input_per_knob_and_returns_the_params_json():
    spec = make_params_op.component_spec
    assert set(spec.inputs) == {k.name for k in knobs(load_params(REPO / "params.yaml"))}
    assert spec.inputs["train__epochs"].type == "Integer" and spec.inputs["tracks"].type == "List"
    params = load_params(REPO / "params.yaml", {"train.epochs": 3})
    out = make_params_op.python_func(**knob_values(params))
    assert json.loads(out) == params.to_dict() == json.loads(params_json_from_knobs(knob_values(params)))


# --- fan-out planning ------------------------------------------------------------------------

@pytest.mark.parametrize(("songs", "per", "most", "expected"),
                         [(0, 10, 4, 1), (5, 10, 4, 1), (25, 10, 4, 3), (1000, 10, 4, 4), (7, 1, 16, 7)])
def test_chunk_count(songs, per, most, expected):
    assert n_chunks(songs, per, most) == expected


def test_chunks_partition_the_songs_in_path_order():
    rows = [{"path": f"files/{i:03d}.mid"} for i in range(10)][::-1]
    parts = [chunk_rows(rows, c, 3) for c in range(3)]
    assert [len(p) for p in parts] == [3, 3, 4]
    assert [r["path"] for p in parts for r in p] == sorted(r["path"] for r in rows)
    with pytest.raises(ValueError):
        chunk_rows(rows, 3, 3)


# --- the component bodies on a tiny corpus ----------------------------------------------------

@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """ingest + validate components over 7 songs; params with 4-phrase shards."""
    from components import ingest_op, validate_op

    root = tmp_path_factory.mktemp("corpus")
    for i in range(7):
        write_song(root / "songs" / f"song{i}.mid", seed=i, n_bars=8 + i)
    params = load_params(REPO / "params.yaml", {
        "data.source": str(root / "songs"), "tensorize.shard_size": 4, "tensorize.workers": 1,
        "tensorize.train_fraction": 0.6, "tensorize.val_fraction": 0.2})
    params_json = json.dumps(params.to_dict())
    raw = Dataset(uri=str(root / "raw"))
    ingest_op.python_func(params_json=params_json, refresh_key="week-1", raw=raw)
    validated, docs, metrics = Dataset(uri=str(root / "validated")), HTML(uri=str(root / "docs.html")), \
        Metrics(uri=str(root / "validate-metrics"))
    validate_op.python_func(params_json=params_json, raw=raw, validated=validated, data_docs=docs, metrics=metrics)
    return {"root": root, "params_json": params_json, "raw": raw, "validated": validated, "docs": docs,
            "metrics": metrics}


def test_ingest_and_validate_components_write_their_artifacts(corpus):
    assert corpus["raw"].metadata["files"] == 7 and corpus["raw"].metadata["refresh_key"] == "week-1"
    assert (Path(corpus["validated"].path) / "accepted.jsonl").exists()
    page = Path(corpus["docs"].path).read_text()
    assert "<html" in page.lower()
    assert corpus["metrics"].metadata, "validation counts are logged as metrics"


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_tensorize_fan_out_is_byte_identical_to_one_task(corpus):
    root, params_json = corpus["root"], corpus["params_json"]
    raw, validated = corpus["raw"], corpus["validated"]
    single = Dataset(uri=str(root / "tensors-single"))
    tensorize_op.python_func(params_json=params_json, raw=raw, validated=validated, tensors=single)

    plan = plan_chunks_op.python_func(validated=validated, songs_per_chunk=2, max_chunks=3)
    assert plan.n_chunks == 3 and plan.chunks == [0, 1, 2]
    parts = []
    for chunk in reversed(plan.chunks):  # any completion order: merge sorts by chunk number
        part = Dataset(uri=str(root / f"chunk-{chunk}"))
        tensorize_chunk_op.python_func(params_json=params_json, raw=raw, validated=validated, chunk=chunk,
                                       n_chunks=plan.n_chunks, tensors=part)
        parts.append(part)
    merged = Dataset(uri=str(root / "tensors-merged"))
    merge_tensors_op.python_func(params_json=params_json, chunks=parts, tensors=merged)

    want, got = tree(Path(single.path)), tree(Path(merged.path))
    assert want == got
    index = json.loads(want["index.json"])
    assert sum(len(s["shards"]) for s in index["splits"].values()) > 3, "several shards per split"
    assert merged.metadata["dvc_hash"] == single.metadata["dvc_hash"]
    assert merged.metadata["n_train"] == index["splits"]["train"]["n"]


def test_html_pages_become_one_file_with_local_images_inlined_and_downloads_named_by_path(tmp_path):
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "a.png").write_bytes(b"\x89PNG fake")
    (tmp_path / "samples" / "a.mid").write_bytes(b"MThd")
    (tmp_path / "index.html").write_text('<body><img src="samples/a.png"><a href="samples/a.mid">m</a>'
                                         '<a href="other.html">o</a><img src="https://x.example/y.png">'
                                         '<img src="../outside.png"></body>')
    (tmp_path.parent / "outside.png").write_bytes(b"no")
    page = sandbox_page(tmp_path / "index.html", "card", note="where the files are")
    assert 'src="data:image/png;base64,' in page and "m: <code>samples/a.mid</code>" in page
    assert 'href="other.html"' in page and 'src="https://x.example/y.png"' in page
    assert 'src="../outside.png"' in page, "nothing outside the page's folder is embedded"
    assert page.startswith('<body><p class="kfp-note"') and "where the files are</p>" in page


def test_a_page_that_names_no_file_by_path_gets_no_kfp_note(tmp_path):
    (tmp_path / "index.html").write_text('<body><a href="#drift">ok</a><a href="drift.html">d</a></body>')
    assert sandbox_page(tmp_path / "index.html", "data_docs") == (tmp_path / "index.html").read_text()


def test_evaluate_writes_the_blessing_markdown_and_a_blessed_parameter(tmp_path, monkeypatch):
    """evaluate_op around a stand-in step result: the KFP-facing outputs, NaN metrics dropped."""
    import lpdvae.steps.evaluate as step
    from components import evaluate_op

    out_dir = tmp_path / "evaluation"

    def fake_evaluate(model_dir, tensor_dir, out, params):
        out.mkdir(parents=True)
        (out / "index.html").write_text("<html>samples</html>")
        return step.EvaluateResult(out, {"recon_note_f1": 0.5, "generated.empty_bar_rate": float("nan")},
                                   False, ["recon_note_f1 0.500 < min_note_f1 0.6"])

    monkeypatch.setattr(step, "evaluate", fake_evaluate)
    metrics, blessing = Metrics(uri=str(tmp_path / "m")), Markdown(uri=str(tmp_path / "blessing.md"))
    result = evaluate_op.python_func(
        params_json=json.dumps(load_params(REPO / "params.yaml").to_dict()), model=Dataset(uri=str(tmp_path)),
        tensors=Dataset(uri=str(tmp_path)), evaluation=Dataset(uri=str(out_dir)),
        samples_page=HTML(uri=str(tmp_path / "page.html")), metrics=metrics, blessing=blessing)
    assert result.blessed is False
    assert metrics.metadata == {"recon_note_f1": 0.5}
    assert "**not blessed**" in Path(blessing.path).read_text() and "recon_note_f1" in Path(blessing.path).read_text()


def test_register_registers_an_unblessed_model_with_the_lineage_of_its_artifacts(tmp_path, monkeypatch):
    """No gate in the task: an unblessed evaluation reaches the register step (which gives it no
    alias), with `lpdvae.registry.lineage.lineage` of the task's own artifacts and KFP's run id."""
    from kfp.dsl import Artifact, Model

    import lpdvae.steps.register as step
    from components import register_op
    from lpdvae.registry.lineage import lineage

    raw, validated, tensors = (tmp_path / n for n in ("raw", "validated", "tensors"))
    for folder, name, text in ((raw, "manifest.jsonl", '{"path": "files/a.mid", "source": "s3://u:pw@b/p"}\n'),
                               (validated, "quarantine.jsonl", '{"path": "files/b.mid"}\n'),
                               (tensors, "index.json", "{}")):
        folder.mkdir()
        (folder / name).write_text(text)
    (tmp_path / "evaluation").mkdir()
    (tmp_path / "evaluation" / "blessing.json").write_text('{"blessed": false, "reasons": ["too few notes"]}')
    params = load_params(REPO / "params.yaml")
    seen = {}

    def fake_register(model_dir, eval_dir, out_path, p, lineage_tags, *, tensor_dir, report_dir, validated):
        seen.update(eval_dir=eval_dir, lineage=lineage_tags, tensor_dir=tensor_dir, validated=validated)
        (report_dir / "samples").mkdir(parents=True)
        (report_dir / "samples" / "g.png").write_bytes(b"\x89PNG")
        (report_dir / "model_card.md").write_text("# Model card\n")
        (report_dir / "model_card.html").write_text('<html><img src="samples/g.png"></html>')
        (report_dir / "summary.md").write_text("# v3: not promoted\n")
        return step.RegisterResult(p.register.model_name, "3", [], "r-1", "runs:/r-1/generator", False, False,
                                   "not promoted: not blessed by evaluation: too few notes")

    monkeypatch.setattr(step, "register", fake_register)
    registration = Artifact(uri=str(tmp_path / "registration"))
    register_op.python_func(params_json=json.dumps(params.to_dict()), git_revision="abc", pipeline_run_id="run-1",
                            model=Model(uri=str(tmp_path / "model")), evaluation=Dataset(uri=str(tmp_path / "evaluation")),
                            raw=Dataset(uri=str(raw)), validated=Dataset(uri=str(validated)),
                            tensors=Dataset(uri=str(tensors)), registration=registration,
                            model_card=Markdown(uri=str(tmp_path / "card.md")),
                            model_card_page=HTML(uri=str(tmp_path / "card.html")),
                            summary=Markdown(uri=str(tmp_path / "summary.md")))
    assert seen["eval_dir"] == tmp_path / "evaluation" and seen["tensor_dir"] == tensors
    assert seen["validated"] == validated  # logged into the run: what a later drift check compares with
    assert seen["lineage"] == lineage(raw, validated, tensors, git_revision="abc", params_digest=params.digest(),
                                      run_id="run-1")
    assert seen["lineage"]["lpdvae.pipeline_run_id"] == "run-1" and seen["lineage"]["lpdvae.source"] == "s3://***@b/p"
    assert registration.metadata["registered"] is True and registration.metadata["aliases"] == []
    assert (tmp_path / "summary.md").read_text() == "# v3: not promoted\n"  # the run's last word
    assert (tmp_path / "card.md").read_text() == "# Model card\n"
    assert 'src="data:image/png;base64,' in (tmp_path / "card.html").read_text()  # one self-contained page


# --- multi-node training: a Kubeflow Trainer v2 TrainJob -----------------------------------------
# The Kubernetes API is the one thing faked here (no cluster can run on this machine): a loopback
# HTTP server that speaks the TrainJob REST paths and plays the Trainer's part; S3 is moto's server.

TRAINJOB_SCHEMA = REPO / "tests" / "contracts" / "trainer" / "trainjob-v1alpha1.schema.json"
TRAINJOBS = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/{ns}/trainjobs"


class FakeTrainer:
    """TrainJob create/get on 127.0.0.1. On create it does what the job's node 0 would (writes
    the model folder to the job's LPDVAE_MODEL_URI); after `polls` GETs the job ends `outcome`."""

    def __init__(self, outcome: str = "Complete", polls: int = 2, reason: str = "", message: str = ""):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.outcome, self.polls, self.reason, self.message = outcome, polls, reason, message
        self.jobs: dict[str, dict] = {}
        self.created: list[dict] = []
        self.gets = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, body: dict) -> None:
                out = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self._send(*fake.create(self.path, body))

            def do_GET(self):
                self._send(*fake.get(self.path))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def create(self, path: str, body: dict) -> tuple[int, dict]:
        name = body["metadata"]["name"]
        if path != TRAINJOBS.format(ns=body["metadata"]["namespace"]):
            return 404, {"kind": "Status", "code": 404, "message": f"no route {path}"}
        if name in self.jobs:
            return 409, {"kind": "Status", "code": 409, "reason": "AlreadyExists", "message": f"{name} exists"}
        self.created.append(body)
        self.jobs[name] = {**body, "metadata": {**body["metadata"], "uid": "u-1"}}
        if self.outcome == "Complete":
            env = {e["name"]: e.get("value") for e in body["spec"]["trainer"]["env"]}
            self.write_model(env["LPDVAE_MODEL_URI"])
        return 201, self.jobs[name]

    def get(self, path: str) -> tuple[int, dict]:
        name = path.rsplit("/", 1)[-1]
        if name not in self.jobs:
            return 404, {"kind": "Status", "code": 404, "reason": "NotFound"}
        self.gets += 1
        job = dict(self.jobs[name])
        if self.outcome and self.gets >= self.polls:
            job["status"] = {"conditions": [{"type": self.outcome, "status": "True", "reason": self.reason or
                                             f"Jobs{self.outcome}", "message": self.message,
                                             "lastTransitionTime": "2026-12-02T00:00:00Z"}]}
        return 200, job

    @staticmethod
    def write_model(uri: str) -> None:
        import boto3

        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        s3 = boto3.client("s3")
        for key, text in {"model.pt": "weights", "train_metrics.json": '{"val_loss": 1.5, "epochs": 2}',
                          "mlflow_run.json": '{"run_id": "r-42"}', "curves/train.csv": "step,loss\n"}.items():
            s3.put_object(Bucket=bucket, Key=f"{prefix}/{key}", Body=text.encode())

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def fake_trainer(monkeypatch):
    made: list[FakeTrainer] = []

    def make(**kwargs) -> FakeTrainer:
        made.append(FakeTrainer(**kwargs))
        monkeypatch.setenv("LPDVAE_KUBE_API", made[-1].url)
        return made[-1]

    yield make
    for f in made:
        f.close()


@pytest.fixture
def tensors_artifact(s3_bucket):
    """The pipeline's tensors artifact as KFP stores it: a folder under the pipeline root."""
    import boto3

    s3 = boto3.client("s3")
    for key in ("index.json", "train-00000.npy"):
        s3.put_object(Bucket=s3_bucket, Key=f"v2/artifacts/run-1/merge-tensors-op/tensors/{key}", Body=b"x")
    return f"s3://{s3_bucket}/v2/artifacts/run-1/merge-tensors-op/tensors"


def run_trainjob_step(tmp_path, tensors_uri, **kwargs):
    from components.trainjob import train_on_trainjob

    params = load_params(REPO / "params.yaml", {"train.nproc": 4, "train.device": "cuda"})
    model_uri = tensors_uri.replace("merge-tensors-op/tensors", "train-trainjob-op/model")
    args = dict(num_nodes=2, run_id="run-1", image="registry.example.com/lpdvae:git-0123456789ab-cdef01234567-cuda",
                runtime="lpdvae-torch-distributed", timeout_s=3600, namespace="kubeflow-user-example-com",
                poll_s=0.01)
    args.update(kwargs)
    return train_on_trainjob(json.dumps(params.to_dict()), tensors_uri, model_uri, tmp_path / "model", **args)


@pytest.mark.slow
def test_the_trainjob_the_train_step_submits_validates_against_the_trainer_v2_schema(
        tmp_path, fake_trainer, tensors_artifact):
    import jsonschema

    fake = fake_trainer()
    run_trainjob_step(tmp_path, tensors_artifact)
    [job] = fake.created
    jsonschema.validate(job, json.loads(TRAINJOB_SCHEMA.read_text()))
    spec = job["spec"]
    assert spec["runtimeRef"] == {"apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime",
                                  "name": "lpdvae-torch-distributed"}
    assert spec["activeDeadlineSeconds"] == 3600
    trainer = spec["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (2, 4)
    assert trainer["resourcesPerNode"]["limits"] == {"nvidia.com/gpu": 4}
    assert trainer["command"] == ["python", "-m", "components.trainjob", "node"]
    env = {e["name"]: e for e in trainer["env"]}
    assert env["LPDVAE_TENSORS_URI"]["value"] == tensors_artifact, "the pipeline's own tensors artifact"
    assert env["LPDVAE_MODEL_URI"]["value"].endswith("/train-trainjob-op/model.trainjob")
    assert json.loads(env["LPDVAE_PARAMS_JSON"]["value"])["train"]["nproc"] == 4
    for secret in ("AWS_SECRET_ACCESS_KEY", "MLFLOW_TRACKING_PASSWORD"):
        assert set(env[secret]) == {"name", "valueFrom"}, "secrets by reference only"


def test_the_vendored_trainjob_schema_rejects_what_the_api_server_would(tmp_path):
    import jsonschema

    from components.trainjob import TrainJobRequest, trainjob_manifest

    schema = json.loads(TRAINJOB_SCHEMA.read_text())
    good = trainjob_manifest(TrainJobRequest("lpdvae-train-abc", "ns", "img", 2, 4, "s3://b/t", "s3://b/m", "{}", 60))
    jsonschema.validate(good, schema)
    for bad in ({**good, "spec": {**good["spec"], "trainer": {**good["spec"]["trainer"], "numNode": 2}}},
                {**good, "spec": {k: v for k, v in good["spec"].items() if k != "runtimeRef"}},
                {**good, "spec": {**good["spec"], "activeDeadlineSeconds": 0}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


@pytest.mark.slow
def test_the_train_step_waits_for_the_trainjob_and_downloads_its_model(tmp_path, fake_trainer, tensors_artifact):
    from kfp.dsl import Model

    from components.runtime import report_training

    fake = fake_trainer(polls=3)
    req = run_trainjob_step(tmp_path, tensors_artifact)
    assert fake.gets >= 3, "the step waited until the job was Complete"
    out = tmp_path / "model"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == \
        ["curves/train.csv", "mlflow_run.json", "model.pt", "train_metrics.json"]
    model, metrics = Model(uri=str(out)), Metrics(uri=str(tmp_path / "metrics"))
    report_training(out, model, metrics)  # what evaluate and register then see: as from train_op
    assert model.metadata["mlflow_run_id"] == "r-42" and metrics.metadata == {"val_loss": 1.5, "epochs": 2.0}
    assert req.name.startswith("lpdvae-train-")


@pytest.mark.slow
def test_a_failed_trainjob_fails_the_train_step_with_the_jobs_reason(tmp_path, fake_trainer, tensors_artifact):
    from components.trainjob import TrainJobFailed

    fake_trainer(outcome="Failed", reason="DeadlineExceeded", message="TrainJob exceeded its activeDeadlineSeconds")
    with pytest.raises(TrainJobFailed, match="failed: DeadlineExceeded: TrainJob exceeded its activeDeadline"):
        run_trainjob_step(tmp_path, tensors_artifact)
    assert not (tmp_path / "model").exists()


@pytest.mark.slow
def test_a_trainjob_that_never_finishes_fails_the_step_at_its_timeout(tmp_path, fake_trainer, tensors_artifact):
    from components.trainjob import TrainJobFailed, custom_objects_api, wait

    fake = fake_trainer(outcome="")
    run_id_job = "lpdvae-train-x"
    fake.jobs[run_id_job] = {"metadata": {"name": run_id_job}}
    with pytest.raises(TrainJobFailed, match="did not complete within 0 s"):
        wait(custom_objects_api(), "ns", run_id_job, timeout_s=0.2, poll_s=0.05)


@pytest.mark.slow
def test_a_retried_train_step_waits_on_the_trainjob_it_already_submitted(tmp_path, fake_trainer, tensors_artifact):
    fake = fake_trainer()
    first = run_trainjob_step(tmp_path / "try-1", tensors_artifact)
    second = run_trainjob_step(tmp_path / "try-2", tensors_artifact)
    assert first.name == second.name and len(fake.created) == 1
    assert (tmp_path / "try-2" / "model" / "model.pt").exists()


def test_artifact_uris_other_than_s3_or_minio_are_refused_with_the_reason():
    from components.trainjob import s3_uri

    assert s3_uri("minio://mlpipeline/v2/artifacts/x/") == "s3://mlpipeline/v2/artifacts/x"
    with pytest.raises(ValueError, match="pipeline root must be s3:// or minio://"):
        s3_uri("gs://bucket/x")


# --- the exit handler -------------------------------------------------------------------------------

def final_status(state: str, error: str = ""):
    from kfp.dsl import PipelineTaskFinalStatus

    return PipelineTaskFinalStatus(state=state, pipeline_job_resource_name="projects/p/pipelineJobs/run-7",
                                   pipeline_task_name="train-op", error_code=9 if error else None,
                                   error_message=error or None)


def test_the_exit_handler_records_a_failed_run_as_a_failed_mlflow_run(tmp_path):
    import mlflow

    from components import record_status_op

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    record_status_op.python_func(status=final_status("FAILED", "train: TrainJob ns/x failed: DeadlineExceeded"),
                                 experiment="lpdvae-exit", tracking_uri=uri, git_revision="abc123")
    mlflow.set_tracking_uri(uri)
    [run] = mlflow.search_runs(experiment_names=["lpdvae-exit"], output_format="list")
    assert run.info.status == "FAILED"
    assert run.data.tags["lpdvae.pipeline_error"] == "train: TrainJob ns/x failed: DeadlineExceeded"
    assert run.data.tags["lpdvae.pipeline_run"].endswith("run-7") and run.data.tags["lpdvae.git_revision"] == "abc123"


def test_the_exit_handler_records_nothing_for_a_run_that_succeeded(tmp_path):
    from components import record_status_op

    record_status_op.python_func(status=final_status("SUCCEEDED"), experiment="lpdvae-exit",
                                 tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", git_revision="")
    assert not (tmp_path / "mlflow.db").exists(), "MLflow was not touched"
