"""Multi-node training as a Kubeflow Trainer v2 TrainJob, and its lifecycle: a name per attempt,
retries, deletion on cancel and timeout, ownership, the Kueue queue label, and a Role that grants
exactly the verbs the client calls.

The Kubernetes API is the one thing faked (tests/kube_fake.py: a loopback server speaking the
REST paths the kubernetes client calls); S3 is moto's server, MLflow a real store.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from components.trainjob import TrainJobRequest, trainjob_manifest
from components.trainjob_api import RUN_LABEL, TrainJobFailed, custom_objects_api, run_label
from lpdvae.params import load_params
from tests.kube_fake import FakeKube

REPO = Path(__file__).resolve().parents[1]
TRAINJOB_SCHEMA = REPO / "tests" / "contracts" / "trainer" / "trainjob-v1alpha1.schema.json"
RBAC = REPO / "infra" / "k8s" / "runner" / "rbac.yaml"
NS, RUN = "kubeflow-user-example-com", "0b6d9d2e-5c1a-4f7e-9a57-3c2f0e8b1a11"


@pytest.fixture
def kube(monkeypatch):
    made: list[FakeKube] = []

    def make(**kwargs) -> FakeKube:
        made.append(FakeKube(**kwargs))
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


def run_step(out: Path, tensors_uri: str = "s3://b/v2/artifacts/run-1/merge-tensors-op/tensors", **kwargs):
    from components.trainjob import train_on_trainjob

    params = load_params(REPO / "params.yaml", {"train.nproc": 4, "train.device": "cuda"})
    model_uri = tensors_uri.replace("merge-tensors-op/tensors", "train-trainjob-op/model")
    args = dict(num_nodes=2, run_id=RUN, image="registry.example.com/lpdvae:git-0123456789ab-cdef01234567-cuda",
                runtime="lpdvae-torch-distributed", timeout_s=3600, namespace=NS, poll_s=0.01)
    args.update(kwargs)
    return train_on_trainjob(json.dumps(params.to_dict()), tensors_uri, model_uri, out / "model", **args)


def request(**kwargs) -> TrainJobRequest:
    base = dict(name="lpdvae-train-abc", namespace=NS, image="img", num_nodes=2, procs_per_node=4,
                tensors_uri="s3://b/t", model_uri="s3://b/m", params_json="{}", timeout_s=60, run_id=RUN)
    return TrainJobRequest(**{**base, **kwargs})


def running_job(fake: FakeKube, name: str, run_id: str = RUN, outcome: str = "") -> None:
    """An earlier attempt's job, as a lost launcher pod would have left it."""
    fake.add(trainjob_manifest(request(name=name, run_id=run_id, model_uri=f"s3://b/{name}")), outcome)


# --- the TrainJob object --------------------------------------------------------------------------

@pytest.mark.slow
def test_the_trainjob_the_train_step_submits_validates_against_the_trainer_v2_schema(
        tmp_path, kube, tensors_artifact):
    import jsonschema

    fake = kube()
    run_step(tmp_path, tensors_artifact)
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
    assert env["LPDVAE_CHECKPOINTS_URI"]["value"].endswith("/train-trainjob-op/model.checkpoints")
    assert json.loads(env["LPDVAE_PARAMS_JSON"]["value"])["train"]["nproc"] == 4
    for name, var in env.items():
        if "SECRET" in name or "PASSWORD" in name:
            assert set(var) == {"name", "valueFrom"}, f"{name}: secrets by reference only"


def test_the_vendored_trainjob_schema_rejects_what_the_api_server_would():
    import jsonschema

    schema = json.loads(TRAINJOB_SCHEMA.read_text())
    good = trainjob_manifest(request(queue="gpu-queue", owner={"apiVersion": "argoproj.io/v1alpha1",
                                                               "kind": "Workflow", "name": "wf", "uid": "u"}))
    jsonschema.validate(good, schema)
    for bad in ({**good, "spec": {**good["spec"], "trainer": {**good["spec"]["trainer"], "numNode": 2}}},
                {**good, "spec": {k: v for k, v in good["spec"].items() if k != "runtimeRef"}},
                {**good, "spec": {**good["spec"], "activeDeadlineSeconds": 0}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_every_trainjob_node_resumes_from_the_jobs_checkpoints_on_s3():
    from components.trainjob import node_command
    from lpdvae.cli import build_parser

    job = trainjob_manifest(request(model_uri="s3://b/v2/artifacts/run-1/train-trainjob-op/model.trainjob"))
    env = {e["name"]: e.get("value") for e in job["spec"]["trainer"]["env"]}
    uri = env["LPDVAE_CHECKPOINTS_URI"]
    assert uri == "s3://b/v2/artifacts/run-1/train-trainjob-op/model.checkpoints", "beside the model, per step"
    tensors = env["LPDVAE_TENSORS_URI"]
    cmd = node_command(Path("/work/params.json"), tensors, Path("/work/model"), uri)
    assert cmd[:3] == ["torchrun", "-m", "lpdvae"]
    args = build_parser("train").parse_args(cmd[3:])  # what `lpdvae` makes of it under torchrun
    assert args.resume and args.checkpoints == uri and args.out == Path("/work/model")
    assert args.tensors == tensors and tensors.startswith("s3://"), "the ranks stream the tensors from S3"


def test_the_trainjob_carries_the_kueue_queue_label_of_the_train_queue_parameter():
    labels = trainjob_manifest(request(queue="lpdvae-gpu"))["metadata"]["labels"]
    assert labels["kueue.x-k8s.io/queue-name"] == "lpdvae-gpu"
    assert labels[RUN_LABEL] == RUN, "the run's jobs are found by label"


def test_a_trainjob_without_a_queue_has_no_kueue_label():
    assert "kueue.x-k8s.io/queue-name" not in trainjob_manifest(request(queue=""))["metadata"]["labels"]


def test_a_run_id_that_is_no_label_value_is_hashed_into_one():
    assert run_label(RUN) == RUN
    assert run_label("projects/p/runs/x y") != "projects/p/runs/x y" and len(run_label("a/b")) == 40


def test_the_trainjob_is_owned_by_the_runs_argo_workflow(tmp_path, kube):
    fake = kube(outcomes=("Failed",), workflows={"lpdvae-training-x7k2p": "wf-uid-1"})
    with pytest.raises(TrainJobFailed):
        run_step(tmp_path, workflow="lpdvae-training-x7k2p")
    [job] = fake.created
    assert job["metadata"]["ownerReferences"] == [{"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
                                                   "name": "lpdvae-training-x7k2p", "uid": "wf-uid-1",
                                                   "blockOwnerDeletion": False}]


# --- the lifecycle --------------------------------------------------------------------------------

@pytest.mark.slow
def test_the_train_step_waits_for_the_trainjob_and_downloads_its_model(tmp_path, kube, tensors_artifact):
    from kfp.dsl import Metrics, Model

    from components.runtime import report_training

    fake = kube(polls=3)
    req = run_step(tmp_path, tensors_artifact)
    assert fake.gets[req.name] >= 3, "the step waited until the job was Complete"
    out = tmp_path / "model"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == \
        ["curves/train.csv", "mlflow_run.json", "model.pt", "train_metrics.json"]
    model, metrics = Model(uri=str(out)), Metrics(uri=str(tmp_path / "metrics"))
    report_training(out, model, metrics)  # what evaluate and register then see: as from train_op
    assert model.metadata["mlflow_run_id"] == "r-42" and metrics.metadata == {"val_loss": 1.5, "epochs": 2.0}


def test_a_failed_trainjob_fails_the_train_step_with_the_jobs_reason(tmp_path, kube):
    kube(outcomes=("Failed",), reason="DeadlineExceeded", message="TrainJob exceeded its activeDeadlineSeconds")
    with pytest.raises(TrainJobFailed, match="failed: DeadlineExceeded: TrainJob exceeded its activeDeadline"):
        run_step(tmp_path)
    assert not (tmp_path / "model").exists()


@pytest.mark.slow
def test_a_retry_after_a_failed_trainjob_submits_a_new_job(tmp_path, kube, tensors_artifact):
    fake = kube(outcomes=("Failed", "Complete"))
    with pytest.raises(TrainJobFailed, match="failed"):
        run_step(tmp_path / "try-1", tensors_artifact)
    second = run_step(tmp_path / "try-2", tensors_artifact)
    first, again = (j["metadata"]["name"] for j in fake.created)
    assert first != again == second.name, "a new name per attempt: no 409, no reuse of the failed job"
    assert (tmp_path / "try-2" / "model" / "model.pt").exists()


def test_a_retry_waits_on_the_runs_trainjob_that_is_still_running(tmp_path, kube):
    fake = kube()
    running_job(fake, "lpdvae-train-lost-pod", outcome="Failed")  # ends only when polled: still running now
    with pytest.raises(TrainJobFailed, match="lpdvae-train-lost-pod failed"):
        run_step(tmp_path)
    assert fake.created == [], "the running job was taken over, not duplicated"


@pytest.mark.slow
def test_a_retry_after_a_completed_trainjob_takes_its_model_without_resubmitting(tmp_path, kube, tensors_artifact):
    fake = kube()
    first = run_step(tmp_path / "try-1", tensors_artifact)
    second = run_step(tmp_path / "try-2", tensors_artifact)
    assert first.name == second.name and len(fake.created) == 1
    assert (tmp_path / "try-2" / "model" / "model.pt").exists()


def test_a_trainjob_that_outlives_the_steps_wait_is_deleted(kube):
    from components.trainjob_api import wait

    fake = kube(outcomes=())
    running_job(fake, "lpdvae-train-stuck")
    with pytest.raises(TrainJobFailed, match="did not complete within 0 s .deleted it"):
        wait(custom_objects_api(), NS, "lpdvae-train-stuck", timeout_s=0.2, poll_s=0.05)
    assert fake.deleted == ["lpdvae-train-stuck"]


def test_a_trainjob_deleted_while_the_step_waits_fails_the_step(kube):
    from components.trainjob_api import wait

    kube()
    with pytest.raises(TrainJobFailed, match="was deleted before it completed"):
        wait(custom_objects_api(), NS, "lpdvae-train-gone", timeout_s=5, poll_s=0.05)


# --- the exit handler -------------------------------------------------------------------------------

def final_status(state: str, error: str = ""):
    from kfp.dsl import PipelineTaskFinalStatus

    return PipelineTaskFinalStatus(state=state, pipeline_job_resource_name=f"runs/{RUN}",
                                   pipeline_task_name="train-trainjob-op", error_code=9 if error else None,
                                   error_message=error or None)


def exit_handler(tmp_path: Path, state: str) -> None:
    from components import record_status_op

    record_status_op.python_func(status=final_status(state, "cancelled"), experiment="lpdvae-exit",
                                 tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", git_revision="",
                                 pipeline_run_id=RUN, delete_trainjobs=True)


@pytest.mark.slow
def test_the_exit_handler_of_a_cancelled_run_deletes_its_unfinished_trainjobs(tmp_path, kube, monkeypatch):
    fake = kube()
    monkeypatch.setenv("POD_NAMESPACE", NS)
    running_job(fake, "lpdvae-train-running")
    running_job(fake, "lpdvae-train-done", outcome="Complete")
    fake.gets["lpdvae-train-done"] = 99  # read to its end: Complete
    running_job(fake, "lpdvae-train-other-run", run_id="another-run")
    exit_handler(tmp_path, "CANCELED")
    assert fake.deleted == ["lpdvae-train-running"], "only this run's jobs that could still hold nodes"


def test_the_exit_handler_of_a_run_that_succeeded_deletes_nothing(tmp_path, kube, monkeypatch):
    fake = kube()
    monkeypatch.setenv("POD_NAMESPACE", NS)
    running_job(fake, "lpdvae-train-running")
    exit_handler(tmp_path, "SUCCEEDED")
    assert fake.deleted == [] and fake.verbs == set()


# --- RBAC: exactly the verbs the client calls -----------------------------------------------------

def granted(resources: set[tuple[str, str]]) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) that the lpdvae-pipeline Role grants on `resources`."""
    role = next(d for d in yaml.safe_load_all(RBAC.read_text()) if d["kind"] == "Role"
                and d["metadata"]["name"] == "lpdvae-pipeline")
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"] if (g, r) in resources}


def every_call(tmp_path: Path, kube, monkeypatch) -> FakeKube:
    """Every path of the client against one fake: submit (with an owner), fail, retry, take over
    a running job, time out, clean up."""
    from components.trainjob_api import wait

    fake = kube(outcomes=("Failed", "Failed"), workflows={"wf": "wf-uid"})
    monkeypatch.setenv("POD_NAMESPACE", NS)
    for attempt in ("a", "b"):
        with pytest.raises(TrainJobFailed):
            run_step(tmp_path / attempt, workflow="wf")
    running_job(fake, "lpdvae-train-stuck")
    with pytest.raises(TrainJobFailed):
        wait(custom_objects_api(), NS, "lpdvae-train-stuck", timeout_s=0, poll_s=0)
    running_job(fake, "lpdvae-train-left")
    exit_handler(tmp_path, "FAILED")
    return fake


@pytest.mark.slow
def test_the_pipeline_role_grants_exactly_the_verbs_the_trainjob_client_calls(tmp_path, kube, monkeypatch):
    from components.trainjob_api import VERBS

    used = every_call(tmp_path, kube, monkeypatch).verbs
    resources = {(g, r) for g, r, _ in used | VERBS}
    assert used == VERBS, "VERBS names what the client calls"
    assert granted(resources) - used == set(), "granted but never called"
    assert used - granted(resources) == set(), "called but not granted"
