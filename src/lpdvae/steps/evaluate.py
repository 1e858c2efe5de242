"""evaluate: is the model worth promoting? The metrics are a function of the model, the tensors
and params (the same inputs give the same metrics); the step writes them with the samples page
into its output folder and, when the model has an MLflow run (mlflow_run.json), logs the metrics,
the blessing tags and that folder into it.

Everything chosen is chosen without the test split (`choose`: the sampling temperature, the
average-cell threshold, the voice ranges and the copy check's calibration read validation and
training phrases only). On the test split it then reports, each with a song-bootstrap interval
(`lpdvae.evaluation.intervals`; the songs of one tune resampled together, `phrase_groups`):
reconstruction note F1 (overall and per track) beside every
baseline of `lpdvae.evaluation.baselines` and the paired interval of the difference, the
statistics of generated phrases beside the data's, diversity, the calibrated copy check, KL in
nats and bits and active units. The gate (`lpdvae.evaluation.gate`) turns these into the
blessing; the champion comparison belongs to register, which talks to the registry.
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

from lpdvae.data.shards import load_split, phrase_groups
from lpdvae.errors import DataError, LpdvaeError
from lpdvae.evaluation.baselines import baseline_counts, information_bits
from lpdvae.evaluation.copy_check import copy_check
from lpdvae.evaluation.evalset import (
    METRIC_PHRASES,
    Measured,
    measure,
    phrase_statistics,
    reconstruct,
    write_per_phrase,
)
from lpdvae.evaluation.gate import bless
from lpdvae.evaluation.intervals import (
    f1_draws,
    group_index,
    interval,
    put_interval,
    reconstruction_intervals,
    resample_weights,
    stat_draws,
)
from lpdvae.evaluation.metrics import (
    CellBaseline,
    aggregate_metrics,
    diversity,
    fit_cell_baseline,
    frame_prf,
    note_counts,
    note_prf,
    prf_from_counts,
)
from lpdvae.evaluation.samples_page import write_page
from lpdvae.io import atomic_dir, atomic_write_json
from lpdvae.model.files import load_model
from lpdvae.model.loss import active_units
from lpdvae.model.prior import kl_per_sample_dim
from lpdvae.model.vae import MusicVAE
from lpdvae.params import EvaluateParams, Params, RepresentationParams
from lpdvae.registry.tracking import blessing_tags, owner_tags

log = logging.getLogger(__name__)
COPY_PHRASES = 32768  # training phrases the copies search and the copy check compares with (spread over the split)
ELBO_SEED = 0
TEST = "test"


@dataclass(frozen=True)
class EvaluateResult:
    out_dir: Path
    metrics: dict[str, float]
    blessed: bool
    reasons: list[str]


@dataclass(frozen=True)
class Choices:
    """What evaluate decides before it looks at test: read from validation and training only."""

    measured: Measured
    corpus: np.ndarray  # training phrases the copy baselines and the copy check search
    cell: CellBaseline
    copy: dict[str, float]  # the calibrated copy check (samples and validation vs training)
    transpose: int


def choose(vae: MusicVAE, tensor_dir: Path, params: Params) -> Choices:
    """Temperature, cell threshold, voice ranges and the copy check: no test phrase is read."""
    measured = measure(vae, tensor_dir, params.evaluate)
    corpus = load_split(tensor_dir, "train", limit=COPY_PHRASES)
    k = params.train.transpose
    cell = fit_cell_baseline(corpus, measured.val)
    return Choices(measured, corpus, cell, copy_check(measured.generated, measured.val, corpus, k, params.evaluate), k)


def evaluate(model_dir: Path, tensor_dir: Path, out_dir: Path, params: Params) -> EvaluateResult:
    """Measure, render and bless the model in `model_dir` against the tensors in `tensor_dir`."""
    from lpdvae.host.cpus import torch_threads

    model_dir, tensor_dir, out_dir = Path(model_dir), Path(tensor_dir), Path(out_dir)
    torch_threads()  # the pod's CPU quota, not the node's cores
    ev = params.evaluate
    try:
        vae = load_model(model_dir)
    except (FileNotFoundError, ValueError) as exc:
        raise LpdvaeError(str(exc)) from None
    chosen = choose(vae, tensor_dir, params)
    test = load_split(tensor_dir, TEST, limit=METRIC_PHRASES)
    if not len(test):
        raise DataError(f"{tensor_dir}: the test split is empty: nothing to evaluate on "
                        "(more songs, or a larger 1 - train_fraction - val_fraction)")
    weights = resample_weights(group_index(phrase_groups(tensor_dir, TEST, METRIC_PHRASES), len(test)),
                               ev.bootstrap_resamples, ev.seed)
    recon = reconstruct(vae, test)
    metrics = {"n_test_phrases": float(len(test)), "n_val_phrases": float(len(chosen.measured.val)),
               "temperature": chosen.measured.temperature, **chosen.copy}
    metrics.update(reconstruction_metrics(vae, test, recon, chosen, weights, ev))
    metrics.update(statistics_metrics(vae, test, chosen, weights, ev))
    metrics.update(diversity(chosen.measured.generated))
    metrics = {k: float(v) for k, v in sorted(metrics.items()) if math.isfinite(v)}
    reasons = bless(metrics, ev)
    blessing = {"blessed": not reasons, "reasons": reasons, "evaluated_on": TEST,
                "temperature": chosen.measured.temperature}
    _write(out_dir, vae, metrics, blessing, chosen, test, recon, ev)
    _log_to_mlflow(model_dir, out_dir, metrics, blessing)
    log.info("evaluate: note F1 %.3f [%.3f, %.3f], blessed=%s %s", metrics["recon_note_f1"],
             metrics.get("recon_note_f1.lo", math.nan), metrics.get("recon_note_f1.hi", math.nan),
             not reasons, reasons)
    return EvaluateResult(out_dir, metrics, not reasons, reasons)


def reconstruction_metrics(vae: MusicVAE, test: np.ndarray, recon: np.ndarray, chosen: Choices,
                           weights: np.ndarray, ev: EvaluateParams) -> dict[str, float]:
    """Note F1 of the model, per track and of every baseline, each with its song-bootstrap
    interval, the paired interval of (model - baseline), the bits each uses, and the rest."""
    counts = note_counts(recon, test)
    m: dict[str, float] = {f"recon_note_{k}": v for k, v in prf_from_counts(counts).items()}
    m.update(reconstruction_intervals(counts, baseline_counts(test, chosen.corpus, chosen.cell, chosen.transpose),
                                      weights, ev.confidence))
    m.update({f"recon_frame_{k}": v for k, v in frame_prf(recon > 0, test > 0).items()})
    for t, name in enumerate(spec["name"] for spec in vae.meta["tracks"]):
        track = note_counts(recon[:, t : t + 1], test[:, t : t + 1])
        put_interval(m, f"recon_note_f1/{name}", interval(prf_from_counts(track)["f1"], f1_draws(track, weights),
                                                          ev.confidence))
    m.update({f"baseline.{k}.bits": v for k, v in
              information_bits(test, len(chosen.corpus), chosen.transpose).items()})
    train = chosen.measured.train
    m["train.recon_note_f1"] = note_prf(reconstruct(vae, train), train)["f1"]
    m["baseline.average_cell.train.recon_note_f1"] = note_prf(chosen.cell.predict(len(train)), train)["f1"]
    m["baseline.average_cell.threshold"] = chosen.cell.threshold
    m["val.recon_note_f1"] = prf_from_counts(chosen.measured.per_phrase.note_counts)["f1"]
    m.update(_latent_stats(vae, test))
    return m


def statistics_metrics(vae: MusicVAE, test: np.ndarray, chosen: Choices, weights: np.ndarray,
                       ev: EvaluateParams) -> dict[str, float]:
    """Generated vs test statistics: each side's values, and for every statistic the interval of
    (generated - data), generated phrases and test songs resampled independently. `constant.X`
    is 1 when X takes one value on both sides (nothing to gate)."""
    generated, val = chosen.measured.per_phrase.generated, aggregate_metrics(chosen.measured.per_phrase.reference)
    reference = phrase_statistics(vae, chosen.measured.voice_ranges)(test)
    m = {f"{side}.{k}": v for side, per in (("generated", generated), ("reference", reference))
         for k, v in aggregate_metrics(per).items()}
    gen_weights = resample_weights(np.arange(len(chosen.measured.generated)), len(weights), ev.seed + 1)
    for stat in sorted({k.split("/")[0] for k in reference}):
        gen, ref = m.get(f"generated.{stat}"), m.get(f"reference.{stat}")
        if ref is None:
            continue  # undefined on this data (e.g. no step where two voices both move): not gated
        values = [v for per in (generated, reference) for k, v in per.items() if k.split("/")[0] == stat]
        finite = np.concatenate([v[np.isfinite(v)] for v in values])
        m[f"constant.{stat}"] = float(finite.size > 0 and bool(np.all(finite == finite[0])))
        if stat in val:  # real held-out music's own distance to the data: part of the allowed gap
            m[f"split_gap.{stat}"] = val[stat] - ref
        if gen is not None:
            draws = stat_draws(generated, stat, gen_weights) - stat_draws(reference, stat, weights)
            put_interval(m, f"gap.{stat}", interval(gen - ref, draws, ev.confidence))
    return m


def _write(out_dir: Path, vae: MusicVAE, metrics: dict[str, float], blessing: dict[str, Any], chosen: Choices,
           test: np.ndarray, recon: np.ndarray, ev: EvaluateParams) -> None:
    rep = RepresentationParams(**vae.meta["representation"])
    with atomic_dir(out_dir) as tmp:
        atomic_write_json(tmp / "metrics.json", metrics)
        atomic_write_json(tmp / "blessing.json", blessing)
        write_per_phrase(tmp, chosen.measured.per_phrase)
        pair = test[:2]
        interpolation = vae.interpolate(torch.from_numpy(pair[0]), torch.from_numpy(pair[-1]), 5).numpy()
        write_page(tmp, metrics, blessing, chosen.measured.generated[: ev.n_samples], test[:2], recon[:2],
                   interpolation, vae.meta["tracks"], rep, ev)


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
        z = mu + torch.exp(0.5 * logvar) * eps
        nll.append(vae.recon_nll(vae.decode(z, xb), xb))  # teacher-forced
        kls.append(kl_per_sample_dim(*vae.prior_relative(mu, logvar, z)).sum(1))
        mus.append(mu)
    kl, mu = torch.cat(kls), torch.cat(mus)
    return {"kl_nats": float(kl.mean()), "kl_bits": float(kl.mean()) / math.log(2),
            "active_units": float(active_units(mu.var(0, unbiased=False))),
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
        mlflow.set_tags(owner_tags())  # this process writes the run now (tracking.mark_killed_runs)
        mlflow.log_metrics({f"eval.{k}".replace("/", "."): v for k, v in metrics.items()})
        mlflow.set_tags(blessing_tags(blessing))
        mlflow.log_artifacts(str(out_dir), artifact_path="evaluation")


__all__ = ["METRIC_PHRASES", "EvaluateParams", "EvaluateResult", "evaluate"]
