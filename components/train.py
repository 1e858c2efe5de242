"""train: the VAE on the tensor shards, one MLflow run."""

from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import step_component


@step_component
def train_op(params_json: str, tensors: Input[Dataset], model: Output[Model], metrics: Output[Metrics]):
    """Train (DDP under torchrun when `train.nproc` > 1); the MLflow location comes from the
    pod's environment (`MLFLOW_TRACKING_URI` from the lpdvae-config ConfigMap) unless the
    params name one."""
    import json
    import math
    from pathlib import Path

    from lpdvae.params import params_from_dict
    from lpdvae.training.launcher import launch

    params = params_from_dict(json.loads(params_json), source="params_json")
    out = Path(model.path)
    launch(Path(tensors.path), out, params)
    for key, value in json.loads((out / "train_metrics.json").read_text()).items():
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            metrics.log_metric(key, float(value))
    run = json.loads((out / "mlflow_run.json").read_text())
    model.metadata.update({f"mlflow_{k}": str(v) for k, v in run.items()})
    model.metadata["framework"] = "pytorch"
