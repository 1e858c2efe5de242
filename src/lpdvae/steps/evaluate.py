"""Evaluate: MuseGAN metrics of generated music next to the data's own, reconstruction quality,
listenable samples, and the blessing that decides whether the model may ship."""

from __future__ import annotations

import argparse
import html
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lpdvae.io import atomic_dir, atomic_write_json, atomic_write_text
from lpdvae.metrics import frame_prf, musegan_metrics, note_prf
from lpdvae.model import MusicVAE, kl_per_sample_dim, load_model, recon_per_sample
from lpdvae.params import Params
from lpdvae.roll import plot_png, render_wav, to_multitrack, write_midi
from lpdvae.shards import load_split

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
    model_dir, tensor_dir, out_dir = Path(model_dir), Path(tensor_dir), Path(out_dir)
    ev, rep = params.evaluate, params.representation
    vae = load_model(model_dir)
    tracks = vae.meta["tracks"]
    names = [t["name"] for t in tracks]
    drums = [bool(t["is_drum"]) for t in tracks]

    split, test = _test_phrases(tensor_dir)
    reference = load_split(tensor_dir, "train", limit=METRIC_PHRASES)
    if not len(reference):
        reference = test
    n_gen = max(ev.n_samples, MIN_GENERATED)
    generated = (vae.sample(n_gen, ev.seed, ev.temperature).numpy() > ev.threshold).astype(np.uint8)
    recon_probs, nelbo = reconstruct(vae, test)
    recon = (recon_probs > ev.threshold).astype(np.uint8)

    metrics: dict[str, float] = {}
    for side, arr in (("generated", generated), ("reference", reference), ("test", test)):
        for k, v in musegan_metrics(arr, names, drums, rep).items():
            metrics[f"{side}.{k}"] = v
    metrics.update(gaps(metrics))
    metrics.update({f"recon_{k}": v for k, v in note_prf(recon, test).items()})
    metrics.update({f"recon_frame_{k}": v for k, v in frame_prf(recon, test).items()})
    metrics["neg_elbo"] = nelbo
    metrics["n_test_phrases"] = float(len(test))
    metrics = {k: v for k, v in metrics.items() if math.isfinite(v)}  # metrics.json is strict JSON

    champion = champion_metrics(params)
    reasons = bless(metrics, params, champion)
    blessing = {"blessed": not reasons, "reasons": reasons, "evaluated_on": split,
                "champion": champion}

    with atomic_dir(out_dir) as tmp:
        atomic_write_json(tmp / "metrics.json", metrics)
        atomic_write_json(tmp / "blessing.json", blessing)
        samples = _write_samples(tmp / "samples", generated[: ev.n_samples], recon[:N_RECONSTRUCTIONS],
                                 test[:N_RECONSTRUCTIONS], tracks, params)
        atomic_write_text(tmp / "index.html", _page(metrics, blessing, samples))
    _log_to_mlflow(model_dir, out_dir, metrics, blessing)
    log.info("evaluate: recon F1 %.3f, blessed=%s %s", metrics["recon_f1"], not reasons, reasons)
    return EvaluateResult(out_dir, metrics, not reasons, reasons)


def _write_samples(folder: Path, generated, recon, originals, tracks, params: Params) -> list[dict[str, str]]:
    ev, rep = params.evaluate, params.representation
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


def _page(metrics: dict[str, float], blessing: dict[str, Any], samples: list[dict[str, str]]) -> str:
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td></tr>" for k, v in sorted(metrics.items()))
    verdict = "blessed" if blessing["blessed"] else "not blessed: " + "; ".join(blessing["reasons"])
    cards = []
    for s in samples:
        audio = f'<audio controls src="{s["wav"]}"></audio>' if "wav" in s else ""
        cards.append(f'<div class="s"><h3>{s["name"]}</h3><img src="{s["png"]}" alt="{s["name"]}">'
                     f'{audio}<a href="{s["midi"]}">MIDI</a></div>')
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>lpdvae evaluation</title>"
        "<style>body{font-family:sans-serif;margin:2em}.s{display:inline-block;margin:1em;"
        "vertical-align:top}img{max-width:640px;display:block}td{padding:0 1em}</style></head><body>"
        f"<h1>lpdvae evaluation</h1><p><b>{html.escape(verdict)}</b></p>"
        f"<h2>Samples</h2>{''.join(cards)}<h2>Metrics</h2><table>{rows}</table></body></html>\n"
    )


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
        mlflow.set_tag("lpdvae.blessed", str(blessing["blessed"]).lower())
        mlflow.log_artifacts(str(out_dir), artifact_path="evaluation")


def _cmd(args: argparse.Namespace, params: Params) -> int:
    result = evaluate(Path(args.model), Path(args.tensors), Path(args.out), params)
    verdict = "blessed" if result.blessed else "NOT blessed: " + "; ".join(result.reasons)
    print(f"evaluate: recon F1 {result.metrics['recon_f1']:.3f}, neg ELBO {result.metrics['neg_elbo']:.1f}; "
          f"{verdict}; samples in {result.out_dir / 'index.html'}")
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="metrics, samples (MIDI/PNG/WAV) and the blessing",
                       description="Compare generated music with the data (MuseGAN metrics), measure "
                       "reconstruction, render samples and decide the blessing.")
    p.add_argument("--model", default="models/vae", help="trained model folder (default: %(default)s)")
    p.add_argument("--tensors", default="data/tensors", help="tensor folder (default: %(default)s)")
    p.add_argument("--out", default="reports/eval", help="output folder (default: %(default)s)")
    p.set_defaults(func=_cmd)
