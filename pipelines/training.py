"""The training pipeline: params -> ingest -> validate -> tensorize -> train -> evaluate -> register.

Every params.yaml knob is a typed pipeline parameter (`train__epochs: int`, ...; see
components.knobs) whose default is the value in the params file the pipeline is built from.
Register runs after every evaluation (an unblessed model becomes a version without aliases, as
under every runner) and ends the run: its `summary` Markdown artifact says whether the new version
was promoted and why, beside the version's model card (`model_card` Markdown, `model_card_page`
HTML). Validate and tensorize fan out over chunks of the songs
with `dsl.ParallelFor` and a merge (`fanout=True`), each chunk task reading only its own songs from
where ingest's output is stored (`raw_uri`); kfp.local cannot pass a list of artifacts to a task,
so local runs use the single validate and tensorize tasks (`fanout=False`), whose outputs are
byte-identical.

On a cluster (`cluster=ClusterConfig()`), each task gets only the config it needs, by reference:
ingest the data source's S3 Secret (env `LPDVAE_DATA_*`), the tasks that read ingest's output
where it is stored (validate and tensorize chunks, register: `raw_uri`, not a downloaded copy) and the TrainJob
step the pipeline root's (`LPDVAE_ARTIFACTS_*`), validate/train/evaluate/register the MLflow ConfigMap keys and client Secret
(validate reads the champion's training statistics for the drift check); train
asks for GPUs (`train.nproc` of them unless fixed), tolerates the GPU taint and selects GPU nodes.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfp import dsl, kubernetes

from components import (
    evaluate_op,
    ingest_op,
    make_params_op,
    merge_tensors_op,
    merge_validate_op,
    plan_chunks_op,
    record_status_op,
    register_op,
    tensorize_chunk_op,
    tensorize_op,
    train_op,
    train_trainjob_op,
    validate_chunk_op,
    validate_op,
)
from components.image import IMAGE, cuda_image
from components.knobs import knob_descriptions, knobs
from lpdvae.host.s3auth import PREFIXES
from lpdvae.params import Params

PIPELINE_NAME = "lpdvae-training"
DESCRIPTION = ("lpdvae: ingest, validate, tensorize, train, evaluate and register a "
               "multitrack music VAE. One parameter per params.yaml key: section__key.")


@dataclass(frozen=True)
class Resources:
    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str


@dataclass(frozen=True)
class ClusterConfig:
    """Kubernetes settings of the tasks: names of a ConfigMap/Secrets, never their values."""

    config_map: str = "lpdvae-config"
    data_secret: str = "lpdvae-data-s3"  # the data source's S3 keys: ingest only
    artifacts_secret: str = "lpdvae-artifacts-s3"  # the pipeline root's S3 keys: tasks reading raw_uri, TrainJob
    mlflow_secret: str = "lpdvae-mlflow-client"
    accelerator: str = "nvidia.com/gpu"
    gpus: int | None = None  # None: train.nproc GPUs, decided per run
    gpu_node_label: tuple[str, str] | None = ("nvidia.com/gpu.present", "true")
    gpu_taint_key: str | None = "nvidia.com/gpu"
    use_gpu: bool = True
    train_image: str | None = None  # default on GPU clusters: the steps' image + "-cuda"
    trainjob_runtime: str | None = "lpdvae-torch-distributed"  # None: no multi-node (TrainJob) branch
    train_timeout_s: int = 48 * 3600  # train's pod, and a TrainJob's activeDeadlineSeconds
    shm_size: str = "8Gi"
    step: Resources = Resources("1", "2", "2Gi", "8Gi")
    tensorize: Resources = Resources("2", "4", "4Gi", "16Gi")
    train: Resources = Resources("4", "8", "16Gi", "32Gi")
    evaluate: Resources = Resources("2", "4", "4Gi", "16Gi")


MLFLOW_CONFIG_KEYS = {"MLFLOW_TRACKING_URI": "MLFLOW_TRACKING_URI"}


def _prefixed(purpose: str, keys: tuple[str, ...]) -> dict[str, str]:
    """Secret/ConfigMap key -> env var of one S3 purpose: the same prefixed name on both sides,
    so a pod of one purpose never holds a variable another purpose's client reads."""
    return {PREFIXES[purpose] + k: PREFIXES[purpose] + k for k in keys}


S3_CONFIG = ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")
S3_SECRET = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
MLFLOW_SECRET_KEYS = {"MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME",
                      "MLFLOW_TRACKING_PASSWORD": "MLFLOW_TRACKING_PASSWORD"}

FANOUT_DEFAULTS = {"fanout_songs_per_chunk": 2000, "fanout_max_chunks": 16}
FANOUT_PARALLELISM = 8  # chunk tasks of one fan-out running at once (the fan-out may be wider)
# steps that talk to the network (S3/HTTP sources, MLflow, the Kubernetes API) retry with backoff;
# train in its own pod does not (a rerun retrains from scratch); its TrainJob path takes over the
# run's running or completed job, and submits a new one after a Failed one (components.trainjob_api)
RETRIES = {"ingest": 3, "trainjob": 2, "evaluate": 2, "register": 3}
BACKOFF = {"backoff_duration": "60s", "backoff_factor": 2.0, "backoff_max_duration": "1800s"}
RUN_AS_USER = 10001  # the image's user (infra/docker/Dockerfile)
ARGO_WORKFLOW_LABEL = "workflows.argoproj.io/workflow"  # on every pod Argo starts: the TrainJob's owner
TRAINJOB_GRACE_S = 900  # the TrainJob step waits this much past the job's own deadline
PARAMS_FILE = Path(__file__).resolve().parents[1] / "params.yaml"  # its comments describe the knobs
RUN_DESCRIPTIONS = {
    "git_revision": "git revision the pipeline was compiled from; tagged lpdvae.git_revision on the registered "
                    "model version",
    "ingest_refresh_key": "enters only ingest's cache key: the same key and params reuse the cached data steps, "
                          "a new one re-reads data.source (run --host passes the time)",
    "fanout_songs_per_chunk": "songs per task of the validate fan-out (ingested songs) and the tensorize fan-out "
                              "(accepted songs)",
    "fanout_max_chunks": "validate tasks, and tensorize tasks, at most (each fan-out's width)",
    "train_nodes": "nodes to train on: 1 trains in the train task's pod, more submit a Kubeflow Trainer v2 "
                   "TrainJob of that many nodes x train.nproc GPUs",
    "train_queue": "Kueue LocalQueue of the TrainJob (label kueue.x-k8s.io/queue-name; Kueue admits all its "
                   "nodes at once or none); empty: no queue label",
}


def parameter_descriptions(params_file: Path | None = None) -> dict[str, str]:
    """Every pipeline parameter's description: params.yaml's comments (the project's file, then
    `params_file`'s where it has its own), and the run-level parameters'."""
    found = knob_descriptions(PARAMS_FILE) if PARAMS_FILE.exists() else {}
    if params_file is not None and Path(params_file).resolve() != PARAMS_FILE:
        found.update(knob_descriptions(params_file))
    return {**found, **RUN_DESCRIPTIONS}


def _docstring(signature: inspect.Signature, descriptions: Mapping[str, str]) -> str:
    """A Google-style docstring: KFP puts each `Args:` entry into the IR as the parameter's description."""
    lines = [DESCRIPTION, "", "Args:"]
    lines += [f"    {name}: {' '.join(descriptions[name].split())}" for name in signature.parameters
              if descriptions.get(name)]
    return "\n".join(lines) + "\n"


def pipeline_signature(params: Params, git_revision: str, fanout: bool, trainjob: bool = False) -> inspect.Signature:
    """The pipeline's parameters: every knob, then the run-level ones."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    parameters = [inspect.Parameter(k.name, kind, default=k.default, annotation=k.type) for k in knobs(params)]
    parameters.append(inspect.Parameter("git_revision", kind, default=git_revision, annotation=str))
    parameters.append(inspect.Parameter("ingest_refresh_key", kind, default="", annotation=str))
    if fanout:
        parameters += [inspect.Parameter(n, kind, default=v, annotation=int) for n, v in FANOUT_DEFAULTS.items()]
    if trainjob:
        parameters.append(inspect.Parameter("train_nodes", kind, default=1, annotation=int))
        parameters.append(inspect.Parameter("train_queue", kind, default="", annotation=str))
    return inspect.Signature(parameters)


def build_pipeline(params: Params, *, git_revision: str = "", cluster: ClusterConfig | None = None,
                   fanout: bool = True,
                   image: str | None = None, descriptions: Mapping[str, str] | None = None) -> Callable[..., Any]:
    """The KFP pipeline (a GraphComponent) with defaults from `params`.

    `cluster=None` leaves out every Kubernetes setting (kfp.local). `image` replaces the
    components' image on every task; on a GPU cluster train runs in `<image>-cuda` (the CUDA
    build) unless `cluster.train_image` names one. Ingest is cached on (params, refresh key): a
    new key (`run --host`: the time; recurring runs: `[[ScheduledTime]]`) re-reads the source.
    `descriptions` (default: `parameter_descriptions()`) become the parameters' descriptions in the IR.
    """
    trainjob = None
    if cluster is not None and cluster.trainjob_runtime:
        trainjob = TrainJobWiring(_train_image(cluster, image or IMAGE), cluster.trainjob_runtime,
                                  cluster.train_timeout_s)
    signature = pipeline_signature(params, git_revision, fanout, trainjob is not None)
    knob_names = [k.name for k in knobs(params)]

    def training_pipeline(*values: Any) -> None:
        args = dict(zip(signature.parameters, values, strict=True))
        if cluster is None:  # kfp.local runs no exit handler
            tasks = _steps(args, knob_names, fanout, trainjob)
        else:
            exit_task = record_status_op(
                experiment=args["mlflow__experiment"], tracking_uri=args["mlflow__tracking_uri"],
                git_revision=args["git_revision"], pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                delete_trainjobs=trainjob is not None).set_display_name("record status")
            with dsl.ExitHandler(exit_task, name="lpdvae"):
                tasks = _steps(args, knob_names, fanout, trainjob)
            tasks["status"] = exit_task
            exit_task.set_caching_options(False).set_retry(3, **BACKOFF)
        tasks["ingest"].set_caching_options(True)
        for task in tasks.values():
            if image:
                task.set_container_image(image)
            if cluster is not None:
                kubernetes.add_pod_label(task, "app.kubernetes.io/part-of", "lpdvae")
        if cluster is not None:
            _on_cluster(tasks, cluster, args["train__nproc"], image or IMAGE)

    training_pipeline.__signature__ = signature  # type: ignore[attr-defined]
    training_pipeline.__doc__ = _docstring(signature, parameter_descriptions() if descriptions is None else descriptions)
    return dsl.pipeline(name=PIPELINE_NAME, description=DESCRIPTION)(training_pipeline)


@dataclass(frozen=True)
class TrainJobWiring:
    """How the multi-node branch launches its TrainJob (fixed at compile time)."""

    image: str
    runtime: str
    timeout_s: int


def _train_image(cfg: ClusterConfig, image: str) -> str:
    return cfg.train_image or (cuda_image(image) if cfg.use_gpu else image)


def _steps(args: dict[str, Any], knob_names: list[str], fanout: bool,
           trainjob: TrainJobWiring | None) -> dict[str, dsl.PipelineTask]:
    """The DAG; returns its tasks by role."""
    t: dict[str, dsl.PipelineTask] = {}
    t["params"] = make_params_op(**{n: args[n] for n in knob_names}).set_display_name("params")
    params_json = t["params"].output
    t["ingest"] = ingest_op(params_json=params_json, refresh_key=args["ingest_refresh_key"]).set_display_name("ingest")
    raw = t["ingest"].outputs["raw"]
    raw_uri = t["ingest"].outputs["raw_uri"]  # fanned-out tasks and register read parts of it from S3
    if fanout:  # no task takes the raw artifact: KFP would download all of it into the pod
        t["plan_validate"] = plan_chunks_op(
            n_songs=t["ingest"].outputs["n_songs"], songs_per_chunk=args["fanout_songs_per_chunk"],
            max_chunks=args["fanout_max_chunks"]).set_display_name("plan validate chunks")
        with dsl.ParallelFor(t["plan_validate"].outputs["chunks"], name="validate-chunks",
                             parallelism=FANOUT_PARALLELISM) as chunk:
            t["validate_chunk"] = validate_chunk_op(
                params_json=params_json, raw_uri=raw_uri, chunk=chunk,
                n_chunks=t["plan_validate"].outputs["n_chunks"]).set_display_name("validate chunk")
        t["validate"] = merge_validate_op(params_json=params_json,
                                          parts=dsl.Collected(t["validate_chunk"].outputs["part"]))
    else:
        t["validate"] = validate_op(params_json=params_json, raw=raw)
    t["validate"].set_display_name("validate")
    validated = t["validate"].outputs["validated"]
    if fanout:
        t["plan"] = plan_chunks_op(n_songs=t["validate"].outputs["n_accepted"],
                                   songs_per_chunk=args["fanout_songs_per_chunk"],
                                   max_chunks=args["fanout_max_chunks"]).set_display_name("plan tensorize chunks")
        with dsl.ParallelFor(t["plan"].outputs["chunks"], name="tensorize-chunks",
                             parallelism=FANOUT_PARALLELISM) as chunk:
            t["tensorize_chunk"] = tensorize_chunk_op(
                params_json=params_json, raw_uri=raw_uri, validated_uri=t["validate"].outputs["validated_uri"],
                chunk=chunk,
                n_chunks=t["plan"].outputs["n_chunks"]).set_display_name("tensorize chunk")
        t["tensorize"] = merge_tensors_op(
            params_json=params_json, chunks=dsl.Collected(t["tensorize_chunk"].outputs["tensors"]))
    else:
        t["tensorize"] = tensorize_op(params_json=params_json, raw=raw, validated=validated)
    t["tensorize"].set_display_name("tensorize")
    tensors = t["tensorize"].outputs["tensors"]
    if trainjob is None:
        t["train"] = train_op(params_json=params_json, tensors=tensors).set_display_name("train")
        model = t["train"].outputs["model"]
    else:  # one node: train in the task's own pod; more: a Trainer v2 TrainJob, same model artifact
        with dsl.If(args["train_nodes"] > 1, name="multi-node"):
            t["trainjob"] = train_trainjob_op(
                params_json=params_json, tensors=tensors, num_nodes=args["train_nodes"],
                pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, image=trainjob.image, runtime=trainjob.runtime,
                timeout_s=trainjob.timeout_s, queue=args["train_queue"]).set_display_name("train (TrainJob)")
        with dsl.Else(name="single-pod"):
            t["train"] = train_op(params_json=params_json, tensors=tensors).set_display_name("train")
        model = dsl.OneOf(t["trainjob"].outputs["model"], t["train"].outputs["model"])
    t["evaluate"] = evaluate_op(params_json=params_json, model=model, tensors=tensors).set_display_name("evaluate")
    t["register"] = register_op(
        params_json=params_json, git_revision=args["git_revision"],
        pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, model=model,
        evaluation=t["evaluate"].outputs["evaluation"], raw_uri=raw_uri, validated=validated, tensors=tensors,
    ).set_display_name("register")
    # never from cache: side effects in MLflow (train, evaluate, register), or a result that depends
    # on the registry as well as the inputs (validate's drift check against the current champion)
    for role in ("validate", "train", "trainjob", "evaluate", "register"):
        if role in t:
            t[role].set_caching_options(False)
    for role, n in RETRIES.items():
        if role in t:
            t[role].set_retry(n, **BACKOFF)
    return t


def _artifacts_s3(task: dsl.PipelineTask, cfg: ClusterConfig) -> None:
    """The pipeline root's S3 key, endpoint and region (`LPDVAE_ARTIFACTS_*`), by reference."""
    kubernetes.use_secret_as_env(task, cfg.artifacts_secret, _prefixed("artifacts", S3_SECRET), optional=True)
    kubernetes.use_config_map_as_env(task, cfg.config_map, _prefixed("artifacts", S3_CONFIG), optional=True)


def _on_cluster(t: dict[str, dsl.PipelineTask], cfg: ClusterConfig, nproc: Any, image: str) -> None:
    """Kubernetes settings: config by reference, resources, and the GPUs and image of train."""
    kubernetes.use_secret_as_env(t["ingest"], cfg.data_secret, _prefixed("data", S3_SECRET), optional=True)
    kubernetes.use_config_map_as_env(t["ingest"], cfg.config_map, _prefixed("data", S3_CONFIG), optional=True)
    for role in ("validate", "train", "evaluate", "register", "status"):  # validate: the drift reference
        kubernetes.use_config_map_as_env(t[role], cfg.config_map, MLFLOW_CONFIG_KEYS)
        kubernetes.use_secret_as_env(t[role], cfg.mlflow_secret, MLFLOW_SECRET_KEYS)
    for role, task in t.items():  # the image's uid; the kubelet refuses to start it as root
        kubernetes.set_security_context(task, run_as_user=RUN_AS_USER, run_as_group=0, run_as_non_root=True)
        res = {"tensorize": cfg.tensorize, "tensorize_chunk": cfg.tensorize, "validate_chunk": cfg.tensorize,
               "train": cfg.train,
               "evaluate": cfg.evaluate}.get(role, cfg.step)
        task.set_cpu_request(res.cpu_request).set_cpu_limit(res.cpu_limit)
        task.set_memory_request(res.memory_request).set_memory_limit(res.memory_limit)
    for role in ("validate_chunk", "tensorize_chunk", "register"):  # they read ingest's output where it is stored
        if role in t:
            _artifacts_s3(t[role], cfg)
    train = t["train"]
    kubernetes.set_timeout(train, cfg.train_timeout_s)
    if "trainjob" in t:  # a small CPU pod that submits, waits and downloads: S3 env, its namespace
        launcher = t["trainjob"]
        _artifacts_s3(launcher, cfg)
        kubernetes.use_field_path_as_env(launcher, "POD_NAMESPACE", "metadata.namespace")
        kubernetes.use_field_path_as_env(launcher, "ARGO_WORKFLOW", f"metadata.labels['{ARGO_WORKFLOW_LABEL}']")
        # the exit handler deletes the run's unfinished TrainJobs, in its own namespace
        kubernetes.use_field_path_as_env(t["status"], "POD_NAMESPACE", "metadata.namespace")
        kubernetes.set_timeout(launcher, cfg.train_timeout_s + TRAINJOB_GRACE_S)
    kubernetes.empty_dir_mount(train, volume_name="dshm", mount_path="/dev/shm", medium="Memory",
                               size_limit=cfg.shm_size)
    if cfg.train_image or cfg.use_gpu:
        train.set_container_image(_train_image(cfg, image))
    if not cfg.use_gpu:
        return
    train.set_accelerator_type(cfg.accelerator).set_accelerator_limit(cfg.gpus if cfg.gpus else nproc)
    if cfg.gpu_taint_key:
        kubernetes.add_toleration(train, key=cfg.gpu_taint_key, operator="Exists", effect="NoSchedule")
    if cfg.gpu_node_label:
        kubernetes.add_node_selector(train, label_key=cfg.gpu_node_label[0], label_value=cfg.gpu_node_label[1])
