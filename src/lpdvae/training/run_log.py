"""The training run's MLflow record (rank 0 only): params, tags, batched step metrics, the model.

Per-step `log_metric` calls cost training throughput (docs/decisions.md), so step metrics are
queued and sent in batches every `MLFLOW_EVERY` steps, asynchronously.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lpdvae.data.redact import redact_uri
from lpdvae.params import Params
from lpdvae.registry import lineage

log = logging.getLogger(__name__)

MLFLOW_EVERY = 50  # steps per MLflow batch
MLFLOW_BATCH_LIMIT = 1000  # metrics per log_batch request (MLflow's limit)


class RunLog:
    """One MLflow run, resumable by id; every method is a no-op-free call on rank 0 only."""

    def __init__(self, params: Params, tensor_dir: str | Path) -> None:
        self.params, self.tensor_dir = params, tensor_dir
        self.active = False
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.tracking_uri: str | None = None
        self._pending: list[Any] = []
        self._sent_step = 0

    def start(self, run_id: str | None, run_params: dict[str, Any]) -> str:
        """Start (or continue, when `run_id` still exists) the run; returns its id."""
        import mlflow

        from lpdvae.registry.tracking import mark_killed_runs, setup_mlflow, tracking_uri

        self.experiment_id = setup_mlflow(self.params)
        self.tracking_uri = tracking_uri(self.params)
        mark_killed_runs(mlflow.MlflowClient(), self.experiment_id)  # a killed train's run, left RUNNING
        system = importlib.util.find_spec("psutil") is not None
        if system:
            mlflow.set_system_metrics_sampling_interval(5)
            mlflow.set_system_metrics_samples_before_logging(1)
        run_id = run_id if _run_exists(run_id) else None
        run = mlflow.start_run(run_id=run_id, experiment_id=None if run_id else self.experiment_id,
                               log_system_metrics=system)
        self.active = True
        self.run_id = run.info.run_id
        if run_id is None:
            # the record of every param; URIs (data.source, mlflow.tracking_uri) without credentials
            flat = {k: redact_uri(v) if isinstance(v, str) else v for k, v in self.params.flat().items()}
            mlflow.log_params({**flat, **run_params})
        mlflow.set_tags(self._tags())
        log.info("MLflow run %s in experiment %s at %s", self.run_id, self.experiment_id,
                 self.tracking_uri)
        return self.run_id

    def _tags(self) -> dict[str, str]:
        from lpdvae.registry.tracking import owner_tags

        return {
            **owner_tags(),  # this process writes the run: the next start marks it KILLED if it dies
            "lpdvae.step": "train",
            # an s3:// prefix is not hashed here (that would read every shard): its KFP artifact records it
            **({} if str(self.tensor_dir).startswith("s3://")
               else {"lpdvae.dataset_dvc_hash": lineage.dvc_hash(self.tensor_dir)}),
            "lpdvae.params_digest": self.params.digest(),
            "lpdvae.git_revision": lineage.git_revision() or "unknown",
            "lpdvae.tensor_dir": str(self.tensor_dir),
        }

    def queue_steps(self, rows: list[dict[str, Any]], step: int, throughput: float) -> None:
        """Queue per-step metrics; they go out in one batch every MLFLOW_EVERY steps."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for r in rows:
            values = {f"train_{k}": r[k] for k in ("loss", "recon", "kl")}
            values.update({k: r[k] for k in ("beta", "lr", "active_units", "grad_norm")})
            self._pending.extend(Metric(k, float(v), now, r["step"]) for k, v in values.items())
        self._pending.append(Metric("samples_per_s", throughput, now, rows[-1]["step"]))
        if step - self._sent_step >= MLFLOW_EVERY:
            self.send(step)

    def send(self, step: int) -> None:
        """Send the queued step metrics (asynchronously, one request per 1,000 metrics)."""
        if not self._pending:
            return
        from mlflow import MlflowClient

        client = MlflowClient()
        for i in range(0, len(self._pending), MLFLOW_BATCH_LIMIT):
            client.log_batch(self.run_id, metrics=self._pending[i:i + MLFLOW_BATCH_LIMIT],
                             synchronous=False)
        self._pending, self._sent_step = [], step

    def log_epoch(self, row: dict[str, Any], epochs: int) -> None:
        import mlflow

        metrics = {k: float(v) for k, v in row.items()
                   if k.startswith("val_") and k != "val_kl_per_dim"}
        metrics["epoch"] = row["epoch"] + 1
        for i, v in enumerate(row.get("val_kl_per_dim", [])):
            metrics[f"kl_dim/{i:03d}"] = v
        mlflow.log_metrics(metrics, step=row["step"], synchronous=False)
        log.info("epoch %d/%d: %s", row["epoch"] + 1, epochs,
                 ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k.startswith("val_")))

    def log_model(self, vae: torch.nn.Module, example: np.ndarray, model_dir: Path) -> Any:
        """Log the reconstruction view of `vae` (note codes -> reconstructed codes) to the run.

        A loader-module pyfunc over the saved `model.pt` + `model.json` in `model_dir` (this
        module's `_load_pyfunc`): no pickled object, so loading it runs nothing from the store.
        Not `pt2`: a `torch.export` trace is much slower (docs/decisions.md)."""
        import shutil
        import tempfile

        import mlflow.pyfunc
        from mlflow.models import infer_signature

        from lpdvae.model.files import META_FILE, MODEL_FILE
        from lpdvae.registry.serving import code_paths, pip_requirements

        example = example.astype(np.float32)
        output = ReconstructionView(vae).predict(example)
        with tempfile.TemporaryDirectory(prefix="lpdvae-logged-") as tmp:
            data = Path(tmp) / "vae"
            data.mkdir()
            for name in (MODEL_FILE, META_FILE):
                shutil.copyfile(model_dir / name, data / name)
            return mlflow.pyfunc.log_model(
                name="model", loader_module=__name__, data_path=str(data),
                signature=infer_signature(example, output), input_example=example,
                code_paths=code_paths(), pip_requirements=pip_requirements(),
            )

    def finish(self, step: int, final_metrics: dict[str, Any]) -> None:
        import mlflow

        self.send(step)
        mlflow.log_metrics({f"final_{k}": float(v) for k, v in final_metrics.items()
                            if isinstance(v, int | float) and not isinstance(v, bool)})
        mlflow.flush_async_logging()
        mlflow.end_run()
        self.active = False

    def fail(self) -> None:
        if self.active:
            import mlflow

            mlflow.end_run(status="FAILED")
            self.active = False


def _run_exists(run_id: str | None) -> bool:
    if not run_id:
        return False
    import mlflow

    try:
        mlflow.get_run(run_id)
        return True
    except Exception:
        return False


class ReconstructionView:
    """The run's logged model: note codes `[N, T, B, S, P]` (as floats) -> the codes decoded from
    mu, as MLflow's pyfunc `predict` calls it."""

    def __init__(self, vae: torch.nn.Module) -> None:
        from lpdvae.model.files import unwrap
        from lpdvae.model.vae import Reconstructor

        self.module = Reconstructor(unwrap(vae)).eval()

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> np.ndarray:
        with torch.no_grad():
            return self.module(torch.as_tensor(np.asarray(model_input, dtype=np.float32))).numpy()


def _load_pyfunc(data_path: str) -> ReconstructionView:
    """MLflow's entry point for the run's logged model: the weights through the weights-only loader."""
    from lpdvae.model.files import load_model

    return ReconstructionView(load_model(Path(data_path)))
