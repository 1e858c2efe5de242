"""A small trained-looking model dir + tensor dir + MLflow run, for evaluate/register tests."""

from __future__ import annotations

import os

# MLflow's telemetry thread sets/unsets an env var while requests iterates os.environ: a racy
# KeyError('_MLFLOW_TELEMETRY_SESSION_ID') in client calls on a loaded machine. No telemetry here.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import json  # noqa: E402
from pathlib import Path

import mlflow
import numpy as np

from lpdvae.data.shards import ShardWriter, write_index
from lpdvae.io import atomic_write_json
from lpdvae.model.files import build_model, save_model
from lpdvae.params import Params
from lpdvae.registry.tracking import setup_mlflow, tracking_uri
from tests.project import small_model_dotted

REPO = Path(__file__).resolve().parents[1]


TINY = {
    "tracks": [{"name": "soprano", "kind": "monophonic", "program": 52, "is_drum": False,
                "names": ["soprano"], "programs": []},
               {"name": "bass", "kind": "monophonic", "program": 33, "is_drum": False,
                "names": ["bass"], "programs": []}],
    **small_model_dotted(),
    "evaluate.n_samples": 2, "evaluate.n_generated": 8, "evaluate.temperatures": [0.85, 1.0],
    "evaluate.render_audio": False,
}


def tiny_params(tracking_uri: str, experiment: str, **overrides: object) -> Params:
    """Module-scoped stand-in for conftest's `tiny_params`, on an MLflow server, with a fresh model name."""
    from lpdvae.params import load_params

    return on_server(load_params(REPO / "params.yaml", {**TINY, **overrides}), tracking_uri, experiment)


def on_server(params: Params, tracking_uri: str, experiment: str) -> Params:
    """`params` logging to the MLflow server at `tracking_uri`, under a fresh model name."""
    import dataclasses
    import uuid

    from lpdvae.params import MlflowParams

    return dataclasses.replace(
        params, mlflow=MlflowParams(tracking_uri=tracking_uri, experiment=experiment),
        register=dataclasses.replace(params.register, model_name=f"lpdvae-{uuid.uuid4().hex[:8]}",
                                     auto_promote=True),
    )


def random_codes(n: int, params: Params, seed: int = 0, density: float = 0.03) -> np.ndarray:
    """uint8 codes `[n, T, B, S, P]`: ~`density` of the cells sound, half of those as onsets."""
    r = params.representation
    shape = (n, len(params.tracks), r.n_bars, r.steps_per_bar, r.n_pitches)
    cells = np.random.default_rng(seed).random(shape)
    return np.where(cells < density / 2, 2, np.where(cells < density, 1, 0)).astype(np.uint8)


def make_tensors(root: Path, params: Params, n: int = 12, seed: int = 0) -> Path:
    """train, val and test splits of `n` random code phrases each (seeds seed, seed+1, seed+2)."""
    return write_splits(root, params, {split: random_codes(n, params, seed + k)
                                       for k, split in enumerate(("train", "val", "test"))})


def write_splits(root: Path, params: Params, splits: dict[str, np.ndarray]) -> Path:
    """A tensor folder (shards + index.json) holding the given code phrases per split."""
    r = params.representation
    shape = (len(params.tracks), r.n_bars, r.steps_per_bar, r.n_pitches)
    writer = ShardWriter(root, shape, 8)
    for split, phrases in splits.items():
        writer.add(split, phrases)
    shards = writer.close()
    index = {k: {"shards": v, "n": sum(e["n"] for e in v)} for k, v in shards.items()}
    write_index(root, {"shape": list(shape), "tracks": params.track_names, "packed": True, "splits": index})
    return root


def make_model(root: Path, params: Params, seed: int = 0, like: Path | None = None, noise: float = 0.0) -> Path:
    """An untrained MusicVAE saved like the train step does, with an MLflow run beside it; with
    `like`, that saved model's weights plus Gaussian noise of std `noise` (drawn with `seed`)."""
    import torch

    from lpdvae.model.files import load_model

    torch.manual_seed(seed)
    model = build_model(params)
    if like is not None:
        state = load_model(like).state_dict()
        gen = torch.Generator().manual_seed(seed)
        model.load_state_dict({k: v + noise * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
                               for k, v in state.items()})
    save_model(model, root, params)
    exp = setup_mlflow(params)
    with mlflow.start_run(experiment_id=exp) as run:
        mlflow.log_param("seed", seed)
    atomic_write_json(root / "mlflow_run.json", {
        "tracking_uri": tracking_uri(params), "experiment_id": exp, "run_id": run.info.run_id, "model_uri": "",
    })
    return root


def write_eval(root: Path, blessed: bool, recon_f1: float, temperature: float = 1.0,
               tensors: Path | None = None, **metrics: float) -> Path:
    """evaluate's files, as a candidate with test note F1 `recon_f1` and the given verdict. Its
    per-phrase record names `tensors`' evaluation set (default: a set no tensors hold, so a
    champion is never compared with it) and holds placeholder counts and statistics."""
    from lpdvae.evaluation.evalset import PerPhrase, tensor_set_id, write_per_phrase

    root.mkdir(parents=True, exist_ok=True)
    info = {"split": "val", "sha256": tensor_set_id(tensors) if tensors else "0" * 64, "n_phrases": 4,
            "limit": 256, "seed": 7, "n_generated": 4, "temperature": temperature}
    stats = {"empty_bar_rate/soprano": np.full(4, 0.1)}
    write_per_phrase(root, PerPhrase(np.array([[1, 2, 2]] * 4), stats, stats, info))
    (root / "metrics.json").write_text(json.dumps({
        "recon_note_f1": recon_f1, "baseline.copy.recon_note_f1": 0.05, "neg_elbo": 100.0,
        "generated.empty_bar_rate": 0.1, "reference.empty_bar_rate": 0.1, **metrics}))
    reasons = [] if blessed else ["recon_note_f1 too low"]
    (root / "blessing.json").write_text(json.dumps({"blessed": blessed, "reasons": reasons,
                                                    "temperature": temperature}))
    return root
