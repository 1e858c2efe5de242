"""The files a training run leaves in its output folder, and the result read back from them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lpdvae.training.checkpoints import checkpoint_dir

METRICS_FILE = "train_metrics.json"
RUN_FILE = "mlflow_run.json"
HISTORY_FILE = "history.csv"  # per step; DVC plots read it (dvc.yaml `plots:`)
EPOCHS_FILE = "epochs.csv"  # per epoch: validation loss, neg ELBO, KL nats, active units
STEP_KEYS = ("loss", "recon", "kl", "active_units", "grad_norm")
HISTORY_COLUMNS = ["step", "epoch", "beta", "lr", *STEP_KEYS]
EPOCH_COLUMNS = ["epoch", "step", "val_loss", "val_recon", "val_kl", "val_neg_elbo",
                 "val_active_units"]


@dataclass(frozen=True)
class TrainResult:
    """What the step produced; `run_id`/`model_uri` are None on ranks other than 0."""

    out_dir: Path
    run_id: str | None
    train_loss: float | None
    val_loss: float | None
    steps: int
    checkpoint_dir: Path
    metrics: dict[str, Any]
    model_uri: str | None = None
    experiment_id: str | None = None
    tracking_uri: str | None = None


def make_result(out_dir: Path, metrics: dict[str, Any], run: dict[str, Any] | None) -> TrainResult:
    run = run or {}
    return TrainResult(
        out_dir=out_dir, run_id=run.get("run_id"), train_loss=metrics.get("train_loss"),
        val_loss=metrics.get("val_loss"), steps=int(metrics.get("steps", 0)),
        checkpoint_dir=checkpoint_dir(out_dir), metrics=metrics, model_uri=run.get("model_uri"),
        experiment_id=run.get("experiment_id"), tracking_uri=run.get("tracking_uri"),
    )


def read_result(out_dir: Path) -> TrainResult:
    """The result of a finished run, from its output files (after a torchrun launch)."""
    metrics = json.loads((out_dir / METRICS_FILE).read_text())
    return make_result(out_dir, metrics, json.loads((out_dir / RUN_FILE).read_text()))
