from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components import IMAGE


@dsl.component(base_image=IMAGE)
def train_op(params_json: str, tensors: Input[Dataset], model: Output[Model], metrics: Output[Metrics]):
    """Train the VAE (DDP when train.nproc > 1); MLflow location comes from the pod's env."""
    import json
    from pathlib import Path

    from lpdvae.params import params_from_dict
    from lpdvae.steps.train import train

    params = params_from_dict(json.loads(params_json), source="params_json")
    train(Path(tensors.path), Path(model.path), params)
    summary = json.loads((Path(model.path) / "train_metrics.json").read_text())
    for key, value in summary.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            metrics.log_metric(key, float(value))
    model.metadata["mlflow"] = json.loads((Path(model.path) / "mlflow_run.json").read_text())
