"""The six components chained into one pipeline; params.yaml sections become pipeline parameters.

On a cluster the train task asks for a GPU (kfp-kubernetes: accelerator, toleration, node
selector) and takes MLflow/S3 settings from a ConfigMap and a Secret by reference only.
"""


import json
from dataclasses import dataclass
from pathlib import Path

from kfp import dsl, kubernetes

from components import (
    evaluate_op,
    ingest_op,
    make_params_op,
    register_op,
    tensorize_op,
    train_op,
    validate_op,
)
from lpdvae.lineage import git_revision
from lpdvae.params import load_params

SECTIONS = ("data", "tracks", "representation", "validate", "tensorize", "model", "train",
            "evaluate", "register", "mlflow")
PIPELINE_NAME = "lpdvae-training"


@dataclass(frozen=True)
class ClusterConfig:
    """Kubernetes knobs of the train task; names of a Secret/ConfigMap, never their values."""

    gpus: int = 1
    accelerator: str = "nvidia.com/gpu"
    gpu_node_label: tuple[str, str] = ("nvidia.com/gpu.present", "true")
    s3_secret: str = "lpdvae-s3"
    config_map: str = "lpdvae-config"


S3_KEYS = {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}
CONFIG_KEYS = {"MLFLOW_TRACKING_URI": "MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL": "AWS_ENDPOINT_URL",
               "MLFLOW_S3_ENDPOINT_URL": "MLFLOW_S3_ENDPOINT_URL"}


def section_defaults(params_path: str | Path = "params.yaml") -> dict[str, str]:
    """Each params.yaml section as a JSON string: the pipeline parameters' defaults."""
    params = load_params(params_path).to_dict()
    return {name: json.dumps(params[name], sort_keys=True) for name in SECTIONS}


def _with_cluster_env(task: dsl.PipelineTask, cfg: ClusterConfig) -> dsl.PipelineTask:
    kubernetes.use_secret_as_env(task, secret_name=cfg.s3_secret, secret_key_to_env=S3_KEYS)
    kubernetes.use_config_map_as_env(task, config_map_name=cfg.config_map, config_map_key_to_env=CONFIG_KEYS)
    return task


def build_pipeline(params_path: str | Path = "params.yaml", cluster: ClusterConfig | None = ClusterConfig()):
    """The pipeline function, defaults taken from `params_path`; `cluster=None` for kfp.local."""
    d = section_defaults(params_path)
    revision = git_revision(Path(params_path).resolve().parent) or ""

    @dsl.pipeline(name=PIPELINE_NAME, description="lpdvae: ingest, validate, tensorize, train, "
                  "evaluate, register a multitrack music VAE")
    def training_pipeline(
        data: str = d["data"], tracks: str = d["tracks"], representation: str = d["representation"],
        validate: str = d["validate"], tensorize: str = d["tensorize"], model: str = d["model"],
        train: str = d["train"], evaluate: str = d["evaluate"], register: str = d["register"],
        mlflow: str = d["mlflow"], git_revision: str = revision,
    ):
        p = make_params_op(data=data, tracks=tracks, representation=representation, validate=validate,
                           tensorize=tensorize, model=model, train=train, evaluate=evaluate,
                           register=register, mlflow=mlflow).set_display_name("params")
        params_json = p.output
        ing = ingest_op(params_json=params_json).set_display_name("ingest")
        val = validate_op(params_json=params_json, raw=ing.outputs["raw"]).set_display_name("validate")
        ten = tensorize_op(params_json=params_json, raw=ing.outputs["raw"],
                           validated=val.outputs["validated"]).set_display_name("tensorize")
        trn = train_op(params_json=params_json, tensors=ten.outputs["tensors"]).set_display_name("train")
        trn.set_caching_options(False)
        ev = evaluate_op(params_json=params_json, model=trn.outputs["model"],
                         tensors=ten.outputs["tensors"]).set_display_name("evaluate")
        ev.set_caching_options(False)
        with dsl.If(ev.outputs["blessed"] == True, name="blessed"):  # noqa: E712 (KFP condition)
            reg = register_op(
                params_json=params_json, git_revision=git_revision, model=trn.outputs["model"],
                evaluation=ev.outputs["evaluation"], raw=ing.outputs["raw"],
                validated=val.outputs["validated"], tensors=ten.outputs["tensors"],
            ).set_display_name("register")
            reg.set_caching_options(False)
        if cluster is not None:
            trn.set_accelerator_type(cluster.accelerator).set_accelerator_limit(cluster.gpus)
            kubernetes.add_toleration(trn, key=cluster.accelerator, operator="Exists", effect="NoSchedule")
            kubernetes.add_node_selector(trn, label_key=cluster.gpu_node_label[0],
                                         label_value=cluster.gpu_node_label[1])
            for task in (ing, trn, ev, reg):
                _with_cluster_env(task, cluster)

    return training_pipeline
