"""`lpdvae generate`: new phrases from a trained model folder or a registered model, as MIDI + PNG."""

from __future__ import annotations

import argparse
from pathlib import Path

from lpdvae.errors import LpdvaeError, RegistryError
from lpdvae.layout import CWD
from lpdvae.params import Params, RepresentationParams


def load_any(model: str, params: Params):
    """A `MusicVAE` from a model folder, or from the generator pyfunc behind a `models:/...` URI."""
    from lpdvae.model.vae import load_model

    if not model.startswith("models:/"):
        return load_model(Path(model))
    import mlflow

    from lpdvae.registry.serving import load_generator
    from lpdvae.registry.tracking import tracking_uri

    uri = tracking_uri(params)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return load_generator(model).vae


def generate(model: str, out: Path, params: Params, n: int, seed: int, temperature: float) -> list[Path]:
    """Write `n` sampled phrases as `sample-SEED-II.mid` + `.png` into `out`; returns the MIDI paths."""
    from lpdvae.data.roll import plot_png, write_midi

    vae = load_any(model, params)
    rep = RepresentationParams(**vae.meta["representation"])
    tracks = vae.meta["tracks"]
    paths = []
    for i, phrase in enumerate(vae.sample(n, seed, temperature).numpy()):
        paths.append(write_midi(phrase, tracks, rep, out / f"sample-{seed}-{i:02d}.mid"))
        plot_png([(f"sample {seed}-{i}", phrase)], tracks, rep, out / f"sample-{seed}-{i:02d}.png")
    return paths


def _cmd(args: argparse.Namespace, params: Params) -> int:
    from mlflow.exceptions import MlflowException

    if args.n < 1 or args.temperature <= 0:
        raise LpdvaeError("--n must be >= 1 and --temperature > 0")
    try:
        paths = generate(args.model, Path(args.out), params, args.n, args.seed, args.temperature)
    except FileNotFoundError as exc:
        raise LpdvaeError(str(exc)) from None
    except MlflowException as exc:
        raise RegistryError(f"{args.model}: {exc.message}") from None
    for path in paths:
        print(path)
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="sample new phrases as MIDI + PNG",
                       description="Sample z ~ N(0, T^2 I) and decode new multitrack phrases.")
    p.add_argument("--model", default=str(CWD.model),
                   help="model folder or models:/NAME@ALIAS, e.g. models:/lpdvae@champion "
                   "(default: %(default)s)")
    p.add_argument("--n", type=int, default=4, help="phrases to generate (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--out", default="samples", help="output folder (default: %(default)s)")
    p.set_defaults(func=_cmd)
