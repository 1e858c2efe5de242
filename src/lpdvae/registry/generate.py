"""`lpdvae generate`: new phrases from a trained model folder or a registered model, as MIDI + PNG."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from lpdvae.errors import LpdvaeError, RegistryError
from lpdvae.layout import CWD
from lpdvae.params import Params, RepresentationParams

MAX_N = 1024  # phrases per run: ~45 MB of decoder output for the LPD-5 shape, one PNG each
MAX_SEED = 2**63 - 1  # torch's generator takes a signed 64-bit seed


def load_any(model: str, params: Params):
    """A `MusicVAE` from a model folder, a logged generator (a local folder with an MLmodel file, or
    a `models:/...`/`runs:/...` URI). A logged one is read as data (its MLmodel as YAML, the weights
    weights-only): nothing in the store is unpickled or imported."""
    from lpdvae.model.files import load_model
    from lpdvae.registry.serving import model_folder, pyfunc_data

    local = Path(model)
    if not model.startswith(("models:/", "runs:/")):
        return load_model(pyfunc_data(local) if (local / "MLmodel").exists() else local)
    import tempfile

    import mlflow

    from lpdvae.registry.tracking import tracking_uri

    uri = tracking_uri(params)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    with tempfile.TemporaryDirectory(prefix="lpdvae-generate-") as tmp:
        return load_model(model_folder(model, Path(tmp)))  # read whole into memory: tmp may go


def generate(model: str, out: Path, params: Params, n: int, seed: int, temperature: float) -> list[Path]:
    """Write `n` sampled phrases as `sample-SEED-II.mid` + `.png` into `out`; returns the MIDI paths."""
    from lpdvae.data.roll import plot_png, write_midi

    if not (1 <= n <= MAX_N and 0 <= seed <= MAX_SEED and math.isfinite(temperature) and temperature > 0):
        raise LpdvaeError(f"n={n}, seed={seed}, temperature={temperature}: n must be in 1..{MAX_N}, "
                          "seed in 0..2**63-1, temperature finite and > 0")
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

    try:
        paths = generate(args.model, Path(args.out), params, args.n, args.seed, args.temperature)
    except FileNotFoundError as exc:
        raise LpdvaeError(str(exc)) from None
    except MlflowException as exc:
        raise RegistryError(f"{args.model}: {exc.message}") from None
    for path in paths:
        print(path)
    return 0


def _ranged(kind: type, low: float, high: float, what: str):
    """An argparse type: a `kind` number in [low, high] (finite), else argparse's one-line error."""
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not low <= value <= high:  # NaN compares False: out of range too
            raise argparse.ArgumentTypeError(f"{text!r} is out of range: {what}")
        return value
    return parse


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="sample new phrases as MIDI + PNG",
                       description="Sample z ~ N(0, T^2 I) and decode new multitrack phrases.")
    p.add_argument("--model", default=str(CWD.model),
                   help="model folder or models:/NAME@ALIAS, e.g. models:/lpdvae@champion "
                   "(default: %(default)s)")
    p.add_argument("--n", type=_ranged(int, 1, MAX_N, f"an integer in 1..{MAX_N}"), default=4,
                   help=f"phrases to generate, 1..{MAX_N} (default: %(default)s)")
    p.add_argument("--seed", type=_ranged(int, 0, MAX_SEED, "an integer in 0..2**63-1"), default=0)
    p.add_argument("--temperature", type=_ranged(float, sys.float_info.min, sys.float_info.max,
                                                 "a finite number > 0"), default=1.0)
    p.add_argument("--out", default="samples", help="output folder (default: %(default)s)")
    p.set_defaults(func=_cmd)
