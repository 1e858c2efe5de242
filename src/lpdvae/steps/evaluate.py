"""evaluate: is the model worth promoting? A pure function of the model, the tensors and params.

On the test split: reconstruction note F1 beside the average-cell baseline (same split, and the
same pair on the training split), the MuseGAN statistics of generated phrases beside the data's,
diversity, copying, KL in nats and active units. The sampling temperature is chosen on the
validation split. The gate (`lpdvae.evaluation.gate`) turns these into the blessing; the champion
comparison belongs to register, which talks to the registry.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lpdvae.errors import LpdvaeError
from lpdvae.evaluation.evalset import METRIC_PHRASES, measure, reconstruct, write_per_phrase
from lpdvae.evaluation.gate import bless
from lpdvae.io import atomic_dir, atomic_write_json
from lpdvae.evaluation.metrics import (
    aggregate_metrics,
    diversity,
    fit_cell_baseline,
    frame_prf,
    nearest_train_f1,
    note_prf,
    prf_from_counts,
)
from lpdvae.model.vae import MusicVAE, active_units, kl_per_sample_dim, load_model
from lpdvae.params import EvaluateParams, Params, RepresentationParams
from lpdvae.evaluation.samples_page import write_page
from lpdvae.data.shards import load_split

log = logging.getLogger(__name__)
COPY_PHRASES = 4096  # training phrases searched for the nearest neighbour of each sample
ELBO_SEED = 0


@dataclass(frozen=True)
class EvaluateResult:
    out_dir: Path
    metrics: dict[str, float]
    blessed: bool
    reasons: list[str]


def evaluate(model_dir: Path, tensor_dir: Path, out_dir: Path, params: Params) -> EvaluateResult:
    """Measure, render and bless the model in `model_dir` against the tensors in `tensor_dir`."""
    model_dir, tensor_dir, out_dir = Path(model_dir), Path(tensor_dir), Path(out_dir)
    ev = params.evaluate
    try:
        vae = load_model(model_dir)
    except (FileNotFoundError, ValueError) as exc:
        raise LpdvaeError(str(exc)) from None
    rep = RepresentationParams(**vae.meta["representation"])
    tracks = vae.meta["tracks"]
    measured = measure(vae, tensor_dir, ev)  # the same function measures the champion in register
    test, val, train = measured.test, measured.val, measured.train
    corpus = load_split(tensor_dir, "train", limit=COPY_PHRASES)

    metrics: dict[str, float] = {"n_test_phrases": float(len(test)), "n_val_phrases": float(len(val))}
    recon = measured.recon
    metrics.update({f"recon_note_{k}": v for k, v in prf_from_counts(measured.per_phrase.note_counts).items()})
    metrics.update({f"recon_frame_{k}": v for k, v in frame_prf(recon > 0, test > 0).items()})
    metrics["train.recon_note_f1"] = note_prf(reconstruct(vae, train), train)["f1"]
    baseline = fit_cell_baseline(corpus, val)
    metrics["baseline.recon_note_f1"] = note_prf(baseline.predict(len(test)), test)["f1"]
    metrics["baseline.train.recon_note_f1"] = note_prf(baseline.predict(len(train)), train)["f1"]
    metrics["baseline.threshold"] = baseline.threshold
    metrics.update(_latent_stats(vae, test))

    temperature, generated, record = measured.temperature, measured.generated, measured.per_phrase
    metrics["temperature"] = temperature
    for side, per in (("generated", record.generated), ("reference", record.reference)):
        metrics.update({f"{side}.{k}": v for k, v in aggregate_metrics(per).items()})
    metrics.update(diversity(generated))
    metrics["copy.nearest_train_note_f1"] = nearest_train_f1(generated, corpus)
    metrics = {k: float(v) for k, v in sorted(metrics.items()) if math.isfinite(v)}

    reasons = bless(metrics, ev)
    blessing = {"blessed": not reasons, "reasons": reasons, "evaluated_on": "test",
                "temperature": temperature}
    with atomic_dir(out_dir) as tmp:
        atomic_write_json(tmp / "metrics.json", metrics)
        atomic_write_json(tmp / "blessing.json", blessing)
        write_per_phrase(tmp, record)
        pair = test[:2]
        interpolation = vae.interpolate(torch.from_numpy(pair[0]), torch.from_numpy(pair[-1]), 5).numpy()
        write_page(tmp, metrics, blessing, generated[: ev.n_samples], test[:2], recon[:2],
                   interpolation, tracks, rep, ev)
    _log_to_mlflow(model_dir, out_dir, metrics, blessing)
    log.info("evaluate: note F1 %.3f (baseline %.3f), blessed=%s %s", metrics["recon_note_f1"],
             metrics["baseline.recon_note_f1"], not reasons, reasons)
    return EvaluateResult(out_dir, metrics, not reasons, reasons)


@torch.no_grad()
def _latent_stats(vae: MusicVAE, x: np.ndarray, batch: int = 64) -> dict[str, float]:
    """KL nats per phrase, active units (Var_x E[z|x] > 0.01) and the negative ELBO (one seeded
    posterior sample per phrase) on `x`."""
    gen = torch.Generator().manual_seed(ELBO_SEED)
    mus, kls, nll = [], [], []
    for i in range(0, len(x), batch):
        xb = torch.from_numpy(x[i : i + batch])
        mu, logvar = vae.encode(xb)
        eps = torch.randn(mu.shape, generator=gen)
        nll.append(vae.recon_nll(vae.decode(mu + torch.exp(0.5 * logvar) * eps, xb), xb))  # teacher-forced
        kls.append(kl_per_sample_dim(mu, logvar).sum(1))
        mus.append(mu)
    kl, mu = torch.cat(kls), torch.cat(mus)
    return {"kl_nats": float(kl.mean()), "active_units": float(active_units(mu.var(0, unbiased=False))),
            "neg_elbo": float((torch.cat(nll) + kl).mean())}


def _log_to_mlflow(model_dir: Path, out_dir: Path, metrics: dict[str, float], blessing: dict[str, Any]) -> None:
    run_file = model_dir / "mlflow_run.json"
    if not run_file.exists():
        log.info("no %s: metrics not logged to MLflow", run_file)
        return
    import mlflow

    run = json.loads(run_file.read_text())
    mlflow.set_tracking_uri(run["tracking_uri"])
    with mlflow.start_run(run_id=run["run_id"]):
        mlflow.log_metrics({f"eval.{k}".replace("/", "."): v for k, v in metrics.items()})
        mlflow.set_tags({"lpdvae.blessed": str(blessing["blessed"]).lower(),
                         "lpdvae.blessing_reasons": "; ".join(blessing["reasons"])[:4000] or "all checks passed"})
        mlflow.log_artifacts(str(out_dir), artifact_path="evaluation")


__all__ = ["METRIC_PHRASES", "EvaluateParams", "EvaluateResult", "evaluate"]
