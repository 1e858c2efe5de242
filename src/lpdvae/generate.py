"""`lpdvae generate`: new phrases from a trained model folder or a registered model, as MIDI + PNG."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lpdvae.params import Params, RepresentationParams


def load_any(model: str, params: Params):
    """A model folder, or a `models:/NAME@ALIAS` URI whose generator artifacts are downloaded."""
    from lpdvae.model import load_model

    if not model.startswith("models:/"):
        return load_model(Path(model))
    import mlflow

    from lpdvae.serving import ARTIFACT
    from lpdvae.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri(params))
    local = Path(mlflow.artifacts.download_artifacts(model))
    return load_model(local / "artifacts" / ARTIFACT)


def generate(model: str, out: Path, params: Params, n: int, seed: int, temperature: float) -> list[Path]:
    from lpdvae.roll import plot_png, to_multitrack, write_midi

    vae = load_any(model, params)
    rep = RepresentationParams(**vae.meta["representation"])
    phrases = (vae.sample(n, seed, temperature).numpy() > params.evaluate.threshold).astype(np.uint8)
    paths = []
    for i, phrase in enumerate(phrases):
        mt = to_multitrack(phrase, vae.meta["tracks"], rep)
        paths.append(write_midi(mt, out / f"sample-{seed}-{i:02d}.mid"))
        plot_png(mt, out / f"sample-{seed}-{i:02d}.png")
    return paths


def _cmd(args: argparse.Namespace, params: Params) -> int:
    for path in generate(args.model, Path(args.out), params, args.n, args.seed, args.temperature):
        print(path)
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="sample new phrases as MIDI + PNG",
                       description="Sample z ~ N(0, T^2 I) and decode new multitrack phrases.")
    p.add_argument("--model", default="models/vae", help="model folder or models:/NAME@ALIAS (default: %(default)s)")
    p.add_argument("--n", type=int, default=4, help="phrases to generate (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--out", default="samples", help="output folder (default: %(default)s)")
    p.set_defaults(func=_cmd)
