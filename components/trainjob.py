"""Multi-node training as a Kubeflow Trainer v2 TrainJob (`trainer.kubeflow.org/v1alpha1`).

The pipeline's train step, asked for more than one node, does not train itself: it submits a
TrainJob on the `lpdvae-torch-distributed` ClusterTrainingRuntime (infra/k8s/trainer) whose nodes
run `lpdvae train` under torchrun on the pipeline's own tensors artifact on S3/MinIO (each rank
streams only its own shards, `lpdvae.data.shard_stream`: no node copies the corpus; the Trainer's
torch plugin sets PET_NNODES/PET_NODE_RANK/PET_MASTER_ADDR/..., which torchrun reads), and node 0 uploads the model folder to a URI beside the step's model artifact. Global
rank 0 writes checkpoints to `<model S3 URI>.checkpoints` (every `train.checkpoint_every_steps`),
and every node starts with `--resume`: when the runtime's JobSet restarts the job after a lost
node or a crash (`failurePolicy.maxRestarts`), all ranks continue from the newest complete
checkpoint there instead of from step 0. The step
waits for the job (bounded by `activeDeadlineSeconds`, which the Trainer enforces too), reports a
failure with the job's own reason, and downloads the model into its `Output[Model]`: evaluate and
register see the same folder the single-pod path writes. The job's lifecycle (a name per attempt,
retries, deletion, ownership) is `components.trainjob_api`.

Plain functions only (no kfp import): the component body and the TrainJob's container
(`python -m components.trainjob node`) both run them inside the image.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from components.trainjob_api import GROUP, RUN_LABEL, VERSION, TrainJobFailed, run_label
from lpdvae.host.s3auth import PREFIXES

ARTIFACTS = PREFIXES["artifacts"]  # the env prefix of the pipeline root's S3 settings

log = logging.getLogger(__name__)

RUNTIME = "lpdvae-torch-distributed"
WORK = Path("/work")  # an emptyDir of the runtime's pod template
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
ENV_TENSORS, ENV_MODEL, ENV_PARAMS = "LPDVAE_TENSORS_URI", "LPDVAE_MODEL_URI", "LPDVAE_PARAMS_JSON"
ENV_CHECKPOINTS = "LPDVAE_CHECKPOINTS_URI"


@dataclass(frozen=True)
class TrainJobRequest:
    """What the train step asks the Trainer for; Secret/ConfigMap names, never their values."""

    name: str
    namespace: str
    image: str
    num_nodes: int
    procs_per_node: int
    tensors_uri: str
    model_uri: str
    params_json: str
    timeout_s: int
    checkpoints_uri: str = ""  # "": beside the model, `<model_uri without .trainjob>.checkpoints`
    runtime: str = RUNTIME
    gpus_per_node: int = 0
    run_id: str = ""  # the pipeline run: label RUN_LABEL, how a retry finds this run's jobs
    queue: str = ""  # Kueue LocalQueue ("": no queue label, the job is not Kueue's to admit)
    owner: dict[str, Any] | None = None  # ownerReference (the run's Argo Workflow)
    config_map: str = "lpdvae-config"
    artifacts_secret: str = "lpdvae-artifacts-s3"  # the pipeline root's credentials, nothing else
    mlflow_secret: str = "lpdvae-mlflow-client"


def s3_uri(artifact_uri: str) -> str:
    """The S3 URI of a KFP artifact: KFP writes MinIO artifacts as `minio://bucket/key`."""
    for scheme in ("s3://", "minio://"):
        if artifact_uri.startswith(scheme):
            return "s3://" + artifact_uri[len(scheme):].rstrip("/")
    raise ValueError(f"artifact URI {artifact_uri!r}: a TrainJob reads and writes artifacts through S3, so the "
                     "pipeline root must be s3:// or minio:// (kfp-launcher ConfigMap, defaultPipelineRoot)")


def _env(name: str, key: str, kind: str) -> dict[str, Any]:
    ref = "secretKeyRef" if kind == "secret" else "configMapKeyRef"
    optional = {"optional": True} if kind == "config" else {}
    return {"name": name, "valueFrom": {ref: {"name": key, "key": name, **optional}}}


def checkpoints_uri(model_uri: str) -> str:
    """Where a job's checkpoints go: beside its model, under the step's artifact prefix, so a
    restarted job (same env) and a taken-over one find them."""
    return model_uri.removesuffix(".trainjob") + ".checkpoints"


def _metadata(req: TrainJobRequest) -> dict[str, Any]:
    """Name, labels (part-of, the run, Kueue's queue) and the owner of the job."""
    labels = {"app.kubernetes.io/part-of": "lpdvae", "app.kubernetes.io/component": "training"}
    if req.run_id:
        labels[RUN_LABEL] = run_label(req.run_id)
    if req.queue:  # Kueue admits (and gang-admits: all nodes' quota at once) a job only with this label
        labels[KUEUE_QUEUE_LABEL] = req.queue
    meta: dict[str, Any] = {"name": req.name, "namespace": req.namespace, "labels": labels}
    if req.owner:
        meta["ownerReferences"] = [req.owner]
    return meta


def trainjob_manifest(req: TrainJobRequest) -> dict[str, Any]:
    """The TrainJob object: the runtime gives the pod (security context, volumes, GPU placement),
    this gives the image, command, sizes, deadline and the environment by reference."""
    resources: dict[str, Any] = {}
    if req.gpus_per_node:
        resources = {"limits": {"nvidia.com/gpu": req.gpus_per_node}, "requests": {"nvidia.com/gpu": req.gpus_per_node}}
    env = [
        {"name": ENV_TENSORS, "value": req.tensors_uri},
        {"name": ENV_MODEL, "value": req.model_uri},
        {"name": ENV_CHECKPOINTS, "value": req.checkpoints_uri or checkpoints_uri(req.model_uri)},
        {"name": ENV_PARAMS, "value": req.params_json},
        *(_env(f"{ARTIFACTS}{k}", req.config_map, "config") for k in ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")),
        _env("MLFLOW_TRACKING_URI", req.config_map, "config"),
        *(_env(f"{ARTIFACTS}{k}", req.artifacts_secret, "secret") for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")),
        _env("MLFLOW_TRACKING_USERNAME", req.mlflow_secret, "secret"),
        _env("MLFLOW_TRACKING_PASSWORD", req.mlflow_secret, "secret"),
    ]
    trainer: dict[str, Any] = {"image": req.image, "command": ["python", "-m", "components.trainjob", "node"],
                               "numNodes": req.num_nodes, "numProcPerNode": req.procs_per_node, "env": env}
    if resources:
        trainer["resourcesPerNode"] = resources
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainJob",
        "metadata": _metadata(req),
        "spec": {"runtimeRef": {"apiGroup": GROUP, "kind": "ClusterTrainingRuntime", "name": req.runtime},
                 "trainer": trainer, "activeDeadlineSeconds": req.timeout_s},
    }


def train_on_trainjob(params_json: str, tensors_uri: str, model_uri: str, out_dir: Path, *, num_nodes: int,
                      run_id: str, image: str, runtime: str, timeout_s: int, namespace: str, queue: str = "",
                      workflow: str | None = None, api: Any = None, poll_s: float = 30.0) -> TrainJobRequest:
    """The train step's multi-node path: find or submit this attempt's job, wait (deadline +
    5 min), download its model into `out_dir`.

    `tensors_uri`/`model_uri` are the step's KFP artifact URIs; the job writes the model to
    `<model S3 URI>.trainjob` so the launcher's own upload of `out_dir` cannot clash with it.
    A retried step waits on (or takes the model of) the run's job that is still running or
    completed; after a Failed one it submits a new job under a new name."""
    from components import trainjob_api as k8s
    from components.runtime import step_params

    train = step_params(params_json).train
    api = api or k8s.custom_objects_api()
    req = TrainJobRequest(
        name=k8s.attempt_name(run_id), namespace=namespace, image=image, num_nodes=num_nodes,
        procs_per_node=train.nproc, gpus_per_node=0 if train.device == "cpu" else train.nproc,
        tensors_uri=s3_uri(tensors_uri), model_uri=s3_uri(model_uri) + ".trainjob", params_json=params_json,
        timeout_s=timeout_s, runtime=runtime, run_id=run_id, queue=queue)
    if earlier := k8s.reusable(k8s.run_jobs(api, namespace, run_id)):
        req = _adopted(req, earlier)
    else:
        req = replace(req, owner=k8s.workflow_owner(api, namespace, workflow))
        k8s.create(api, trainjob_manifest(req))
    k8s.wait(api, req.namespace, req.name, timeout_s + 300, poll_s=poll_s)
    log.info("downloaded %d model files from %s", download_dir(req.model_uri, out_dir), req.model_uri)
    return req


def _adopted(req: TrainJobRequest, job: dict[str, Any]) -> TrainJobRequest:
    """The request as the earlier attempt `job` made it: its name, and the model URI it writes to."""
    from components.trainjob_api import state

    env = {e["name"]: e.get("value") for e in job["spec"]["trainer"].get("env", [])}
    log.info("TrainJob %s/%s of this run exists already (%s; a retried step): taking it over", req.namespace,
             job["metadata"]["name"], state(job))
    return replace(req, name=job["metadata"]["name"], model_uri=env.get(ENV_MODEL) or req.model_uri)


# --- S3 folders ---------------------------------------------------------------------------------------

def _split(uri: str) -> tuple[str, str]:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    return bucket, prefix.rstrip("/")


def download_dir(uri: str, dest: Path) -> int:
    """Every object under `uri/` into `dest` (keys relative to it); returns the file count."""
    from lpdvae.host.s3auth import s3_client

    s3, (bucket, prefix) = s3_client("artifacts"), _split(uri)
    n = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
        for obj in page.get("Contents", []):
            target = Path(dest) / obj["Key"][len(prefix) + 1:]
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj["Key"], str(target))
            n += 1
    if n == 0:
        raise TrainJobFailed(f"nothing under {uri}: the TrainJob finished without writing the model there")
    return n


def upload_dir(src: Path, uri: str) -> int:
    """Every file under `src` to `uri/<relative path>`; returns the file count."""
    from lpdvae.host.s3auth import s3_client

    s3, (bucket, prefix) = s3_client("artifacts"), _split(uri)
    files = sorted(p for p in Path(src).rglob("*") if p.is_file())
    for path in files:
        s3.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(src).as_posix()}")
    return len(files)


# --- inside the TrainJob ------------------------------------------------------------------------------

def node_command(params_file: Path, tensors: str | Path, out: Path, checkpoints: str) -> list[str]:
    """`lpdvae train` under torchrun (nnodes/nproc/rank/master from the PET_* variables), always
    with `--resume`: a first start finds no checkpoint and starts fresh, a restart continues."""
    return ["torchrun", "-m", "lpdvae", "--params", str(params_file), "train", "--tensors", str(tensors),
            "--out", str(out), "--checkpoints", checkpoints, "--resume"]


def node_main(work: Path = WORK) -> int:
    """One TrainJob node: train under torchrun on the tensors' S3 prefix (each rank fetches its own
    shards), node 0 uploads the model."""
    from lpdvae.host.s3auth import refuse_placeholders

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    refuse_placeholders()
    out, params_file = work / "model", work / "params.json"
    params_file.parent.mkdir(parents=True, exist_ok=True)
    params_file.write_text(os.environ[ENV_PARAMS], encoding="utf-8")  # JSON is YAML: lpdvae --params reads it
    rc = subprocess.call(node_command(params_file, os.environ[ENV_TENSORS], out, os.environ[ENV_CHECKPOINTS]))
    if rc != 0:
        return rc
    if os.environ.get("PET_NODE_RANK", "0") == "0":  # global rank 0 lives here and wrote the model
        log.info("uploaded %d model files to %s", upload_dir(out, os.environ[ENV_MODEL]), os.environ[ENV_MODEL])
    return 0


if __name__ == "__main__":
    if sys.argv[1:] != ["node"]:
        sys.exit("usage: python -m components.trainjob node   (the command of a TrainJob node)")
    sys.exit(node_main())
