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

With `--device cpu|cuda`, the device sweep instead (issue 23), the Trainer's step (`train_step`) on
one synthetic batch already on the device: samples/s of fp32, bf16 and bf16 + torch.compile at
`--batch` (64) and at the largest batch that fits (doubling until out of memory, then bisecting
back), the peak GPU memory of each, the CPU's fp32 figure from the same code in the same run
(`--cpu-steps`), and a loss-curve check, bf16 against fp32 over `--curve-steps` steps from one seed
(`compare_curves`; pass/fail in the JSON). On CPU: fp32 only, no batch search, fp32 against fp32.
On a GPU machine, benchmarks/gpu_check.sh runs it (sized for <= 8 minutes on one H100):

    python -m benchmarks train_bench --device cuda    -> benchmarks/results/train-cuda.json
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lpdvae.data.shards import SPLITS, PhraseDataset, ShardWriter, write_index
from lpdvae.io import atomic_write_json
from lpdvae.params import Params, load_params, profile_overrides

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results" / "train.json"
SMALL = {"model.step_embedding": 64, "model.encoder_hidden": 64,
         "model.latent_dim": 16, "model.conductor_hidden": 64, "model.decoder_hidden": 64}

log = logging.getLogger("train_bench")


def phrase_shape(params: Params) -> tuple[int, int, int, int]:
    r = params.representation
    return (len(params.tracks), r.n_bars, r.steps_per_bar, r.n_pitches)


def synthetic_rolls(rng: np.random.Generator, n: int, shape: tuple[int, ...]) -> np.ndarray:
    """`n` sparse rolls of `shape`: each track holds a pitch per quarter bar."""
    x = np.zeros((n, *shape), np.uint8)
    pitches = rng.integers(0, shape[3], size=(n, shape[0], shape[1], 4))
    q = max(1, shape[2] // 4)
    for k in range(4):
        for s in range(k * q, min(shape[2], (k + 1) * q - 1)):
            np.put_along_axis(x[:, :, :, s], pitches[..., k:k + 1], 1, axis=-1)
    return x


def make_tensors(out: Path, params: Params, n_train: int, n_val: int, seed: int = 0) -> Path:
    """A shard folder of synthetic rolls (`synthetic_rolls`) in the params' shape."""
    rng = np.random.default_rng(seed)
    shape = phrase_shape(params)
    writer = ShardWriter(out, shape, shard_size=512)
    for split, n in (("train", n_train), ("val", n_val)):
        writer.add(split, synthetic_rolls(rng, n, shape))
    shards = writer.close()
    write_index(out, {"shape": list(shape), "tracks": params.track_names, "packed": True, "songs": {},
                      "splits": {s: {"shards": shards[s], "n": sum(e["n"] for e in shards[s])}
                                 for s in SPLITS}, "params_digest": params.digest()})
    return out


@dataclass
class Run:
    """One model on one device, set up as the Trainer sets it up."""

    params: Params
    model: Any
    net: Any  # the model, or torch.compile of it
    opt: torch.optim.Optimizer
    bf16: bool


def setup(params: Params, device: torch.device, bf16: bool = False, compiled: bool = False) -> Run:
    from lpdvae.model.files import build_model

    t = params.train
    torch.manual_seed(t.seed)
    model = build_model(params).to(device).train()
    if compiled:
        torch._dynamo.reset()  # each compiled config compiles afresh: no cache limit, no earlier shapes
    net = torch.compile(model) if compiled else model
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    return Run(params, model, net, opt, bf16)


def train_step(run: Run, x: torch.Tensor, eps: torch.Tensor | None, beta: float) -> torch.Tensor:
    """One step as the Trainer takes it (`training.loop.optimizer_step`). Returns the loss (on the
    device: reading it would synchronise)."""
    from lpdvae.training.loop import optimizer_step

    out, _ = optimizer_step(run.model, run.net, run.opt, x, eps, beta, run.params.train, run.bf16)
    return out["loss"].detach()


def bare_loop(tensor_dir: Path, params: Params) -> float:
    """Samples/s of a plain PyTorch loop over the same data, model, batch and optimizer."""
    from torch.utils.data import DataLoader

    t = params.train
    ds = PhraseDataset(tensor_dir, "train")
    run = setup(params, torch.device("cpu"))
    loader = DataLoader(ds, batch_size=t.batch_size, shuffle=True, drop_last=True,
                        num_workers=t.num_workers, generator=torch.Generator().manual_seed(t.seed))
    samples, start = 0, time.perf_counter()
    for _ in range(t.epochs):
        for x in loader:
            train_step(run, x, None, t.beta_max)
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
        params = bench_params(args, work)
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


# --- the device sweep (`--device cpu|cuda`) ------------------------------------------------------

# (name, bf16 autocast, torch.compile): the GPU settings of `train.precision` / `train.compile`
CONFIGS = (("fp32", False, False), ("bf16", True, False), ("bf16+compile", True, True))
# bf16 vs fp32 loss curves (same seed, weights, batches and noise): the means of each window of
# CURVE_WINDOW steps may differ by at most CURVE_REL_TOL of fp32's. bf16 keeps 8 mantissa bits, so
# every autocast op rounds by up to 2^-9 (0.2 %) and the two runs' weights drift apart step by step;
# windows average out the per-step jitter that drift causes. Measured with CPU autocast (same code,
# params.yaml's model, batch 32, 60 steps; docs/decisions.md 2026-12-05): bf16 stays within 0.5 %
# of fp32, while another seed's fp32 run is 11 % away, so 3 % passes rounding and fails a real
# difference (a loss reduced in bf16, a head that saturates). Non-finite losses fail outright.
CURVE_WINDOW, CURVE_REL_TOL = 10, 0.03


def check_device(name: str) -> torch.device:
    """The device to sweep, or one line and exit 1 when it is cuda and torch sees no GPU."""
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("train_bench: --device cuda, but torch sees no CUDA GPU on this machine "
                         "(torch.cuda.is_available() is False); run it where one is, or use --device cpu")
    return torch.device(name)


def synced(device: torch.device) -> float:
    """perf_counter once the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def timed(params: Params, device: torch.device, config: tuple[str, bool, bool], batch: int, steps: int,
          warmup: int) -> dict[str, Any]:
    """Samples/s of `steps` train steps after `warmup` (compilation, allocator and kernel warm-up),
    one synthetic batch already on the device (the loader's rate is the default mode's), and the
    peak GPU memory of the whole config (model, optimizer, activations)."""
    _, bf16, compiled = config
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    run = setup(params, device, bf16, compiled)
    x = torch.from_numpy(synthetic_rolls(np.random.default_rng(0), batch, phrase_shape(params))).to(device)
    eps = torch.randn(batch, run.model.latent_dim, generator=torch.Generator().manual_seed(0)).to(device)
    for _ in range(warmup):
        train_step(run, x, eps, params.train.beta_max)
    start = synced(device)
    for _ in range(steps):
        train_step(run, x, eps, params.train.beta_max)
    secs = synced(device) - start
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {"batch": batch, "steps": steps, "samples_per_s": round(batch * steps / secs, 1),
            "peak_mem_bytes": peak}


def _oom(exc: BaseException) -> bool:
    # compiled graphs may wrap the allocator's error in a backend exception
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def try_timed(params: Params, device: torch.device, config: tuple[str, bool, bool], batch: int, steps: int,
              warmup: int) -> dict[str, Any] | None:
    """`timed`, or None when the batch does not fit in GPU memory (the memory is freed again)."""
    try:
        return timed(params, device, config, batch, steps, warmup)
    except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
        if not _oom(exc):
            raise
    finally:
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return None


def largest_batch(params: Params, device: torch.device, config: tuple[str, bool, bool], start: int,
                  cap: int) -> int:
    """Doubling from `start` until a batch does not fit (or passes `cap`), then bisecting between
    the last fit and the first miss, in multiples of `start`. 0: not even `start` fits."""
    good, bad, batch = 0, 0, start
    while batch <= cap:
        if try_timed(params, device, config, batch, 1, 1) is None:
            bad = batch
            break
        good, batch = batch, batch * 2
    while good and bad and bad - good > start:
        mid = (good + bad) // 2 // start * start
        if try_timed(params, device, config, mid, 1, 1) is None:
            bad = mid
        else:
            good = mid
    return good


def at_largest(params: Params, device: torch.device, config: tuple[str, bool, bool], batch: int,
               args: argparse.Namespace) -> dict[str, Any] | None:
    """`timed` at `batch`, backing off by an eighth while a longer run does not fit after all."""
    for _ in range(4):
        if batch < args.batch:
            return None
        if (found := try_timed(params, device, config, batch, args.steps, args.warmup)) is not None:
            return found
        batch = batch * 7 // 8 // args.batch * args.batch
    return None


def loss_curve(params: Params, device: torch.device, bf16: bool, steps: int, batch: int) -> list[float]:
    """Per-step losses of `steps` steps from the seed: the same weights, batches, noise and KL
    warm-up whatever the precision (constant learning rate)."""
    from lpdvae.training.schedules import beta_at

    t = params.train
    run = setup(params, device, bf16)
    rng, noise = np.random.default_rng(t.seed), torch.Generator().manual_seed(t.seed + 1)
    losses = []
    for step in range(steps):
        x = torch.from_numpy(synthetic_rolls(rng, batch, phrase_shape(params))).to(device)
        eps = torch.randn(batch, run.model.latent_dim, generator=noise).to(device)
        losses.append(float(train_step(run, x, eps, beta_at(step, t.beta_max, t.beta_warmup_steps))))
    return losses


def compare_curves(ref: list[float], other: list[float], window: int = CURVE_WINDOW,
                   rel_tol: float = CURVE_REL_TOL) -> dict[str, Any]:
    """`other` against `ref` window by window (CURVE_WINDOW's comment says why these numbers)."""
    if len(ref) != len(other) or not ref:
        raise ValueError(f"curves of {len(ref)} and {len(other)} steps: need equal, non-empty ones")
    r, o = np.asarray(ref, np.float64), np.asarray(other, np.float64)
    starts = range(0, len(r), window)
    rm = np.array([r[i:i + window].mean() for i in starts])
    om = np.array([o[i:i + window].mean() for i in starts])
    finite = bool(np.isfinite(r).all() and np.isfinite(o).all())
    gaps = np.abs(om - rm) / np.maximum(np.abs(rm), 1e-12) if finite else np.array([np.inf])
    worst = int(np.argmax(gaps))
    return {"steps": len(r), "window": window, "rel_tol": rel_tol, "finite": finite,
            "max_rel_gap": round(float(gaps[worst]), 6), "worst_window_start": worst * window,
            "ref_first_last": [round(float(rm[0]), 3), round(float(rm[-1]), 3)],
            "other_first_last": [round(float(om[0]), 3), round(float(om[-1]), 3)],
            "passed": finite and float(gaps[worst]) <= rel_tol}


def sweep_config(params: Params, device: torch.device, config: tuple[str, bool, bool], args: argparse.Namespace,
                 largest_from: int | None) -> dict[str, Any]:
    """One config at `--batch` and at its largest batch (GPU: searched, or `largest_from` for
    compiled configs, since every probed batch size would compile anew)."""
    row: dict[str, Any] = {f"batch_{args.batch}": try_timed(params, device, config, args.batch, args.steps,
                                                             args.warmup)}
    if device.type != "cuda":
        return row
    searched = largest_from is None
    largest = largest_batch(params, device, config, args.batch, args.max_batch) if searched else largest_from
    row["largest"] = at_largest(params, device, config, largest, args)
    row["largest_searched"] = searched
    return row


def sweep(args: argparse.Namespace, params: Params, out: Path) -> dict[str, Any]:
    """The loss-curve check and the CPU figure first (short, and the check is the verdict), then
    every config on `args.device`; the JSON is rewritten after each part, so a run cut short by its
    time limit leaves what it measured."""
    device, began = check_device(args.device), time.perf_counter()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # as the Trainer runs on CUDA
    torch.use_deterministic_algorithms(True, warn_only=True)
    result: dict[str, Any] = {"config": sweep_setup(args, params, device), "complete": False}
    bf16 = device.type == "cuda"  # bf16 against fp32 on the GPU; fp32 against itself on CPU
    ref = loss_curve(params, device, False, args.curve_steps, args.batch)
    result["loss_check"] = {"ref": "fp32", "other": "bf16" if bf16 else "fp32",
                            **compare_curves(ref, loss_curve(params, device, bf16, args.curve_steps, args.batch))}
    result["cpu_fp32"] = timed(params, torch.device("cpu"), CONFIGS[0], args.batch, args.cpu_steps, 1)
    result["configs"] = {}
    atomic_write_json(out, result)
    for config in CONFIGS if device.type == "cuda" else CONFIGS[:1]:  # bf16/compile are GPU settings
        largest = None
        if config[2]:
            largest = ((result["configs"].get("bf16") or {}).get("largest") or {}).get("batch")
        result["configs"][config[0]] = sweep_config(params, device, config, args, largest)
        log.info("%s on %s: %s", config[0], device, result["configs"][config[0]])
        result["summary"] = summary(result, args.batch)
        atomic_write_json(out, result)
    result.update(elapsed_s=round(time.perf_counter() - began, 1), complete=True)
    atomic_write_json(out, result)
    return result


def summary(result: dict[str, Any], batch: int) -> dict[str, Any]:
    """Side by side per config: samples/s at `batch` and at the largest batch, peak GiB, times CPU fp32."""
    cpu = result["cpu_fp32"]["samples_per_s"]
    rows = {}
    for name, row in result["configs"].items():
        small, large = row.get(f"batch_{batch}") or {}, row.get("largest") or {}
        rows[name] = {"samples_per_s": small.get("samples_per_s"), "largest_batch": large.get("batch"),
                      "largest_samples_per_s": large.get("samples_per_s"),
                      "peak_gib": [round(r["peak_mem_bytes"] / 2**30, 2) if r.get("peak_mem_bytes") else None
                                   for r in (small, large)],
                      "vs_cpu_fp32": round(small["samples_per_s"] / cpu, 1) if small else None}
    return rows


def sweep_setup(args: argparse.Namespace, params: Params, device: torch.device) -> dict[str, Any]:
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"device": device.type, "gpu": gpu, "batch": args.batch, "steps": args.steps, "warmup": args.warmup,
            "max_batch": args.max_batch, "cpu_steps": args.cpu_steps, "curve_steps": args.curve_steps,
            "small_model": args.small, "profile": str(args.profile) if args.profile else None,
            "shape": list(phrase_shape(params)), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform()}


def bench_params(args: argparse.Namespace, work: Path) -> Params:
    overrides: dict[str, Any] = {
        **(profile_overrides(args.profile) if args.profile else {}),
        "train.epochs": args.epochs, "train.checkpoint_every_steps": 0,
        "train.early_stopping_patience": 0, "train.device": "cpu",
        "mlflow.tracking_uri": f"sqlite:///{work / 'mlflow.db'}", "mlflow.experiment": "bench",
        **(SMALL if args.small else {}),
    }
    return load_params(REPO / "params.yaml", overrides)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phrases", type=int, default=256, help="train phrases (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--small", action="store_true", help="a smaller model than params.yaml's")
    parser.add_argument("--profile", type=Path, help="a profile laid over params.yaml (profiles/*.yaml)")
    sweep_args = parser.add_argument_group("the device sweep (--device)")
    sweep_args.add_argument("--device", choices=("cpu", "cuda"),
                            help="sweep fp32 / bf16 / bf16+compile on this device instead of step vs bare")
    sweep_args.add_argument("--batch", type=int, default=64, help="the batch every config runs at")
    sweep_args.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    sweep_args.add_argument("--warmup", type=int, default=5, help="untimed steps before them")
    sweep_args.add_argument("--max-batch", type=int, default=32768, help="where the doubling search stops")
    sweep_args.add_argument("--cpu-steps", type=int, default=3, help="timed steps of the CPU figure")
    sweep_args.add_argument("--curve-steps", type=int, default=200, help="steps of each loss curve")
    parser.add_argument("--out", type=Path, help="JSON (default: results/train.json, "
                        "results/train-<device>.json for the sweep)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.device:
        out = args.out or HERE / "results" / f"train-{args.device}.json"
        result = sweep(args, bench_params(args, Path(tempfile.gettempdir())), out)
    else:
        result = run(args)
        atomic_write_json(args.out or RESULTS, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
