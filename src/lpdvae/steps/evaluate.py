"""Evaluate: MuseGAN metrics of generated music next to the data's own, reconstruction quality,
listenable samples, and the blessing that decides whether the model may ship."""

from __future__ import annotations

import html
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lpdvae.errors import DataError
from lpdvae.io import atomic_dir, atomic_write_json, atomic_write_text
from lpdvae.metrics import frame_prf, musegan_metrics, note_prf
from lpdvae.model import MusicVAE, kl_per_sample_dim, load_model, recon_per_sample
from lpdvae.params import EvaluateParams, Params, RepresentationParams
from lpdvae.roll import plot_png, render_wav, to_multitrack, write_midi
from lpdvae.shards import load_split, read_index

log = logging.getLogger(__name__)
METRIC_PHRASES = 128  # phrases per side for the MuseGAN statistics (a bounded subset)
MIN_GENERATED = 64  # generated phrases measured, even when fewer are written as samples
N_RECONSTRUCTIONS = 2
ELBO_SEED = 0


@dataclass(frozen=True)
class EvaluateResult:
    out_dir: Path
    metrics: dict[str, float]
    blessed: bool
    reasons: list[str]


def _test_phrases(tensor_dir: Path) -> tuple[str, np.ndarray]:
    for split in ("test", "val", "train"):
        arr = load_split(tensor_dir, split, limit=METRIC_PHRASES)
        if len(arr):
            if split != "test":
                log.warning("test split is empty; evaluating on %s", split)
            return split, arr
    raise ValueError(f"{tensor_dir}: no phrases in any split")


@torch.no_grad()
def reconstruct(vae: MusicVAE, x: np.ndarray, batch: int = 32) -> tuple[np.ndarray, float]:
    """Probabilities decoded from the posterior means, and the negative ELBO in nats per phrase
    (unweighted BCE + KL, one seeded posterior sample per phrase)."""
    gen = torch.Generator().manual_seed(ELBO_SEED)
    probs, nelbo = [], []
    for i in range(0, len(x), batch):
        xb = torch.from_numpy(x[i : i + batch].astype(np.float32))
        mu, logvar = vae.encode(xb)
        probs.append(torch.sigmoid(vae.decode(mu)).numpy())
        eps = torch.randn(mu.shape, generator=gen)
        logits = vae.decode(mu + torch.exp(0.5 * logvar) * eps)
        nelbo.append((recon_per_sample(logits, xb, 1.0) + kl_per_sample_dim(mu, logvar).sum(1)).numpy())
    return np.concatenate(probs), float(np.concatenate(nelbo).mean())


def bless(metrics: dict[str, float], params: Params, champion: dict[str, Any] | None) -> list[str]:
    """Reasons the candidate fails; empty means blessed.

    Every metric in `evaluate.tolerances` must be within its tolerance of the data reference,
    recon F1 must reach `min_recon_f1`, and against the champion (if any) recon F1 may drop by at
    most `champion_margin` and each metric's gap to the data may grow by at most
    `champion_margin * tolerance`.
    """
    ev = params.evaluate
    reasons = []
    for key, tol in sorted(ev.tolerances.items()):
        gen, ref = metrics.get(f"generated.{key}"), metrics.get(f"reference.{key}")
        if gen is None or ref is None:
            reasons.append(f"{key}: not measured (generated music has no notes)" if gen is None
                           else f"{key}: the data reference has no value")
        elif abs(gen - ref) > tol:
            reasons.append(f"{key}: generated {gen:.3f} vs data {ref:.3f} (tolerance {tol})")
    if metrics["recon_f1"] < ev.min_recon_f1:
        reasons.append(f"recon_f1 {metrics['recon_f1']:.3f} < min_recon_f1 {ev.min_recon_f1}")
    return reasons + _versus_champion(metrics, params, champion) if champion else reasons


def _versus_champion(metrics: dict[str, float], params: Params, champion: dict[str, Any]) -> list[str]:
    ev, who = params.evaluate, f"champion v{champion.get('version')}"
    reasons = []
    if "recon_f1" in champion and metrics["recon_f1"] < champion["recon_f1"] - ev.champion_margin:
        reasons.append(f"recon_f1 {metrics['recon_f1']:.3f} worse than {who} "
                       f"{champion['recon_f1']:.3f} by more than {ev.champion_margin}")
    for key, tol in sorted(ev.tolerances.items()):
        mine, theirs = metrics.get(f"gap.{key}"), champion.get(f"gap.{key}")
        if mine is not None and theirs is not None and mine > theirs + ev.champion_margin * tol:
            reasons.append(f"{key}: gap to the data {mine:.3f} worse than {who} {theirs:.3f} "
                           f"by more than {ev.champion_margin * tol:.3f}")
    return reasons


def gaps(metrics: dict[str, float]) -> dict[str, float]:
    """|generated - reference| of every track-mean MuseGAN metric measured on both sides."""
    out = {}
    for key, gen in metrics.items():
        name = key.removeprefix("generated.")
        if key.startswith("generated.") and "/" not in name and f"reference.{name}" in metrics:
            out[f"gap.{name}"] = abs(gen - metrics[f"reference.{name}"])
    return out


def champion_metrics(params: Params) -> dict[str, Any] | None:
    """The current champion's recorded metrics, or None (no registry, no champion)."""
    try:
        from lpdvae.registry import CHAMPION, alias_version, client

        mv = alias_version(client(params), params.register.model_name, CHAMPION)
    except Exception as exc:  # an unreachable registry must not block evaluation
        log.warning("could not read the champion: %s", exc)
        return None
    if mv is None:
        return None
    out: dict[str, Any] = {"version": mv.version}
    for k, v in mv.tags.items():
        if k.startswith("lpdvae.metric."):
            try:
                out[k.removeprefix("lpdvae.metric.")] = float(v)
            except ValueError:
                pass
    return out


def evaluate(model_dir: Path, tensor_dir: Path, out_dir: Path, params: Params) -> EvaluateResult:
    """Measure, render and bless the model in `model_dir` against the tensors in `tensor_dir`."""
    model_dir, tensor_dir, out_dir = Path(model_dir), Path(tensor_dir), Path(out_dir)
    ev = params.evaluate
    vae = load_model(model_dir)
    rep = RepresentationParams(**vae.meta["representation"])
    tracks = vae.meta["tracks"]
    _check_shape(vae, tensor_dir)

    split, test = _test_phrases(tensor_dir)
    reference = load_split(tensor_dir, "train", limit=METRIC_PHRASES)
    if not len(reference):
        reference = test
    n_gen = max(ev.n_samples, MIN_GENERATED)
    generated = (vae.sample(n_gen, ev.seed, ev.temperature).numpy() > ev.threshold).astype(np.uint8)
    recon_probs, nelbo = reconstruct(vae, test)
    recon = (recon_probs > ev.threshold).astype(np.uint8)
    metrics = measure(generated, reference, test, recon, tracks, rep)
    metrics["neg_elbo"] = nelbo

    champion = champion_metrics(params)
    reasons = bless(metrics, params, champion)
    blessing = {"blessed": not reasons, "reasons": reasons, "evaluated_on": split,
                "champion": champion}

    with atomic_dir(out_dir) as tmp:
        atomic_write_json(tmp / "metrics.json", metrics)
        atomic_write_json(tmp / "blessing.json", blessing)
        samples = _write_samples(tmp / "samples", generated[: ev.n_samples], recon[:N_RECONSTRUCTIONS],
                                 test[:N_RECONSTRUCTIONS], tracks, rep, ev)
        atomic_write_text(tmp / "index.html", _page(metrics, blessing, samples))
    _log_to_mlflow(model_dir, out_dir, metrics, blessing)
    log.info("evaluate: recon F1 %.3f, blessed=%s %s", metrics["recon_f1"], not reasons, reasons)
    return EvaluateResult(out_dir, metrics, not reasons, reasons)


def measure(generated: np.ndarray, reference: np.ndarray, test: np.ndarray, recon: np.ndarray,
            tracks: list[dict[str, Any]], rep: RepresentationParams) -> dict[str, float]:
    """The flat metrics dict: MuseGAN metrics per side, their gaps, recon P/R/F1 (finite values only)."""
    names = [t["name"] for t in tracks]
    drums = [bool(t.get("is_drum", False)) for t in tracks]
    metrics: dict[str, float] = {}
    for side, arr in (("generated", generated), ("reference", reference), ("test", test)):
        for k, v in musegan_metrics(arr, names, drums, rep).items():
            metrics[f"{side}.{k}"] = v
    metrics.update(gaps(metrics))
    metrics.update({f"recon_{k}": v for k, v in note_prf(recon, test).items()})
    metrics.update({f"recon_frame_{k}": v for k, v in frame_prf(recon, test).items()})
    metrics["n_test_phrases"] = float(len(test))
    return {k: v for k, v in metrics.items() if math.isfinite(v)}  # metrics.json is strict JSON


def _check_shape(vae: MusicVAE, tensor_dir: Path) -> None:
    shape = tuple(read_index(tensor_dir)["shape"])
    if shape != tuple(vae.shape):
        raise DataError(f"{tensor_dir}: phrases are {list(shape)} but the model was trained on "
                        f"{list(vae.shape)} (tracks, bars, steps, pitches)")


def _write_samples(folder: Path, generated: np.ndarray, recon: np.ndarray, originals: np.ndarray,
                   tracks: list[dict[str, Any]], rep: RepresentationParams,
                   ev: EvaluateParams) -> list[dict[str, str]]:
    """MIDI + PNG (+ WAV) per phrase; returns the page entries with paths relative to out_dir."""
    items = [(f"generated-{i:02d}", p) for i, p in enumerate(generated)]
    items += [(f"reconstruction-{i:02d}", p) for i, p in enumerate(recon)]
    items += [(f"original-{i:02d}", p) for i, p in enumerate(originals)]
    out = []
    for name, phrase in items:
        mt = to_multitrack(phrase, tracks, rep)
        entry = {"name": name, "midi": f"samples/{name}.mid", "png": f"samples/{name}.png"}
        write_midi(mt, folder / f"{name}.mid")
        plot_png(mt, folder / f"{name}.png")
        if ev.render_audio and render_wav(folder / f"{name}.mid", folder / f"{name}.wav", ev.soundfont):
            entry["wav"] = f"samples/{name}.wav"
        out.append(entry)
    return out


SIDES = ("generated", "test", "reference")


def _page(metrics: dict[str, float], blessing: dict[str, Any], samples: list[dict[str, str]]) -> str:
    """index.html: verdict, every sample (image, audio, MIDI link), metrics side by side."""
    verdict = "blessed" if blessing["blessed"] else "not blessed: " + "; ".join(blessing["reasons"])
    cards = []
    for s in samples:
        name = html.escape(s["name"])
        audio = f'<audio controls src="{s["wav"]}"></audio>' if "wav" in s else ""
        cards.append(f'<div class="s"><h3>{name}</h3><img src="{s["png"]}" alt="{name}">'
                     f'{audio}<a href="{s["midi"]}">MIDI</a></div>')
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>lpdvae evaluation</title>"
        "<style>body{font-family:sans-serif;margin:2em}.s{display:inline-block;margin:1em;"
        "vertical-align:top}img{max-width:640px;display:block}td,th{padding:0 1em;text-align:right}"
        "</style></head><body>"
        f"<h1>lpdvae evaluation</h1><p><b>{html.escape(verdict)}</b></p>"
        f"<h2>Samples</h2>{''.join(cards)}"
        f"<h2>MuseGAN metrics</h2>{_side_by_side(metrics)}"
        f"<h2>Reconstruction</h2>{_table(['metric', 'value'], _other_rows(metrics))}"
        "</body></html>\n"
    )


def _side_by_side(metrics: dict[str, float]) -> str:
    names = sorted({k.split(".", 1)[1] for k in metrics if k.split(".", 1)[0] in SIDES})
    rows = [[n, *(_fmt(metrics.get(f"{side}.{n}")) for side in SIDES)] for n in names]
    return _table(["metric", "generated", "test", "training data (reference)"], rows)


def _other_rows(metrics: dict[str, float]) -> list[list[str]]:
    return [[k, _fmt(v)] for k, v in sorted(metrics.items())
            if k.split(".", 1)[0] not in (*SIDES, "gap")]


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


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
