"""Training throughput: the real train step vs a bare PyTorch loop, and loader vs consumption.

Side by side in one run, alternating (bare, step, bare, step, ...) so a noisy shared machine hits
both equally; medians are reported:
- `lpdvae.steps.train.train` on a synthetic shard folder (its own `samples_per_s`: wall time of
  the step loop including data loading, excluding MLflow start-up, validation and model logging);
- a bare loop on the same model, data, batch and optimizer: DataLoader -> forward -> vae_loss ->
  backward -> clip -> AdamW, nothing else;
- the DataLoader alone (PhraseDataset from memory-mapped shards), one pass.

    python -m benchmarks.train_bench [--phrases 256] [--epochs 1] [--repeats 2] [--small]

Targets (issue 4): step/bare >= 0.95; loader/training >= 5. JSON in benchmarks/results/train.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lpdvae.data.shards import SPLITS, PhraseDataset, ShardWriter, write_index
from lpdvae.io import atomic_write_json
from lpdvae.params import Params, load_params

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results" / "train.json"
SMALL = {"model.step_embedding": 64, "model.encoder_hidden": 64,
         "model.latent_dim": 16, "model.conductor_hidden": 64, "model.decoder_hidden": 64}

log = logging.getLogger("train_bench")


def make_tensors(out: Path, params: Params, n_train: int, n_val: int, seed: int = 0) -> Path:
    """Synthetic sparse rolls in the params' shape: each track holds a pitch per quarter bar."""
    rng = np.random.default_rng(seed)
    r = params.representation
    shape = (len(params.tracks), r.n_bars, r.steps_per_bar, r.n_pitches)
    writer = ShardWriter(out, shape, shard_size=512)
    q = max(1, shape[2] // 4)
    for split, n in (("train", n_train), ("val", n_val)):
        x = np.zeros((n, *shape), np.uint8)
        pitches = rng.integers(0, shape[3], size=(n, shape[0], shape[1], 4))
        for k in range(4):
            for s in range(k * q, min(shape[2], (k + 1) * q - 1)):
                np.put_along_axis(x[:, :, :, s], pitches[..., k:k + 1], 1, axis=-1)
        writer.add(split, x)
    shards = writer.close()
    write_index(out, {"shape": list(shape), "tracks": params.track_names, "packed": True, "songs": {},
                      "splits": {s: {"shards": shards[s], "n": sum(e["n"] for e in shards[s])}
                                 for s in SPLITS}, "params_digest": params.digest()})
    return out


def bare_loop(tensor_dir: Path, params: Params) -> float:
    """Samples/s of a plain PyTorch loop over the same data, model, batch and optimizer."""
    from torch.utils.data import DataLoader

    from lpdvae.model.vae import build_model, vae_loss

    t = params.train
    torch.manual_seed(t.seed)
    ds = PhraseDataset(tensor_dir, "train")
    model = build_model(params).train()
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    loader = DataLoader(ds, batch_size=t.batch_size, shuffle=True, drop_last=True,
                        num_workers=t.num_workers, generator=torch.Generator().manual_seed(t.seed))
    samples, start = 0, time.perf_counter()
    for _ in range(t.epochs):
        for x in loader:
            decoded, mu, logvar = model(x)
            out = vae_loss(model, decoded, x, mu, logvar, t.beta_max, t.free_nats)
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            opt.step()
            samples += len(x)
    return samples / (time.perf_counter() - start)


def real_step(tensor_dir: Path, params: Params, work: Path, i: int) -> float:
    """Samples/s the train step reports for its own step loop."""
    from lpdvae.steps.train import train

    result = train(tensor_dir, work / f"vae-{i}", params)
    metrics = json.loads((result.out_dir / "train_metrics.json").read_text())
    return float(metrics["samples_per_s"])


def loader_rate(tensor_dir: Path, params: Params) -> float:
    """Samples/s of the DataLoader alone (one shuffled pass, batches materialized)."""
    from torch.utils.data import DataLoader

    ds = PhraseDataset(tensor_dir, "train")
    loader = DataLoader(ds, batch_size=params.train.batch_size, shuffle=True,
                        num_workers=params.train.num_workers)
    samples, start = 0, time.perf_counter()
    for x in loader:
        samples += len(x)
    return samples / (time.perf_counter() - start)


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp:
        work = Path(tmp)
        overrides: dict[str, Any] = {
            "train.epochs": args.epochs, "train.checkpoint_every_steps": 0,
            "train.early_stopping_patience": 0, "train.device": "cpu",
            "mlflow.tracking_uri": f"sqlite:///{work / 'mlflow.db'}", "mlflow.experiment": "bench",
            **(SMALL if args.small else {}),
        }
        params = load_params(REPO / "params.yaml", overrides)
        tensors = make_tensors(work / "tensors", params, args.phrases, max(8, args.phrases // 8))
        bare, step, loader = [], [], []
        for i in range(args.repeats):
            bare.append(bare_loop(tensors, params))
            step.append(real_step(tensors, params, work, i))
            loader.append(loader_rate(tensors, params))
            log.info("repeat %d: bare %.1f, step %.1f, loader %.0f samples/s", i, bare[-1], step[-1],
                     loader[-1])
    b, s, ld = statistics.median(bare), statistics.median(step), statistics.median(loader)
    return {
        "config": {"phrases": args.phrases, "epochs": args.epochs, "repeats": args.repeats,
                   "batch_size": params.train.batch_size, "model": params.flat()["model.latent_dim"],
                   "small_model": args.small, "shape": [len(params.tracks), params.representation.n_bars,
                                                         params.representation.steps_per_bar,
                                                         params.representation.n_pitches],
                   "num_workers": params.train.num_workers, "torch_threads": torch.get_num_threads()},
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "torch": torch.__version__, "load_avg_1m": os.getloadavg()[0]},
        "bare_samples_per_s": [round(v, 2) for v in bare],
        "step_samples_per_s": [round(v, 2) for v in step],
        "loader_samples_per_s": [round(v, 1) for v in loader],
        "step_vs_bare": round(s / b, 3), "step_vs_bare_target": 0.95,
        "loader_vs_training": round(ld / s, 1), "loader_vs_training_target": 5.0,
        "passed": s / b >= 0.95 and ld / s >= 5.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phrases", type=int, default=256, help="train phrases (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--small", action="store_true", help="a smaller model than params.yaml's")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    result = run(args)
    atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
