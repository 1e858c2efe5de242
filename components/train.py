"""train: the VAE on the tensor shards, one MLflow run: in this pod, or as a Trainer v2 TrainJob."""

from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import step_component


@step_component
def train_op(params_json: str, tensors: Input[Dataset], model: Output[Model], metrics: Output[Metrics]):
    """Train (DDP under torchrun when `train.nproc` > 1); the MLflow location comes from the
    pod's environment (`MLFLOW_TRACKING_URI` from the lpdvae-config ConfigMap) unless the
    params name one."""
    from pathlib import Path

    from components.runtime import report_training, step_params
    from lpdvae.steps.train import launch

    out = Path(model.path)
    launch(Path(tensors.path), out, step_params(params_json))
    report_training(out, model, metrics)


@step_component
def train_trainjob_op(params_json: str, tensors: Input[Dataset], num_nodes: int, pipeline_run_id: str,
                      image: str, runtime: str, timeout_s: int, queue: str, model: Output[Model],
                      metrics: Output[Metrics]):
    """Train on `num_nodes` nodes x `train.nproc` GPUs as a Kubeflow Trainer v2 TrainJob (runtime
    `runtime`, image `image`, Kueue LocalQueue `queue` unless empty) that reads this step's
    `tensors` from S3 and writes the model beside this step's `model` artifact; waits at most
    `timeout_s` (the job's activeDeadlineSeconds too), fails with the job's reason, and downloads
    the model so evaluate and register see what the single-pod step writes. The TrainJob's
    namespace is this pod's (`POD_NAMESPACE`), its owner the run's Argo Workflow
    (`ARGO_WORKFLOW`, the pod's workflow label)."""
    import os
    from pathlib import Path

    from components.runtime import report_training
    from components.trainjob import train_on_trainjob

    out = Path(model.path)
    req = train_on_trainjob(params_json, tensors.uri, model.uri, out, num_nodes=num_nodes, run_id=pipeline_run_id,
                            image=image, runtime=runtime, timeout_s=timeout_s, namespace=os.environ["POD_NAMESPACE"],
                            queue=queue, workflow=os.environ.get("ARGO_WORKFLOW"))
    report_training(out, model, metrics)
    model.metadata.update({"trainjob": f"{req.namespace}/{req.name}", "nodes": num_nodes})
