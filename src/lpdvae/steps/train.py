"""train: phrase shards -> MusicVAE, checkpoints and an MLflow run.

One entry point for every runner: a single process, `torchrun --nproc_per_node N` (DDP; gloo on
CPU, nccl on CUDA; rank 0 alone logs and writes), or `train.nproc > 1` outside torchrun, in which
case the step launches torchrun itself with the same command line.

Determinism: `train.batch_size` is the *global* batch. Data order comes from
`DistributedSampler(seed, epoch)`; the reparameterisation noise of a global batch is drawn from
one seeded generator and sliced per rank; the free-bits floor is decided on the all-reduced KL.
So N processes follow the same loss curve as one (up to float reduction order), and a run killed
at any point and resumed from its newest checkpoint ends with bit-identical weights (same world
size and device), because the checkpoint holds the model, optimizer, scheduler, every RNG state
of every rank, the noise generator, the epoch and the position inside it.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib.util
import io
import json
import logging
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler

from lpdvae import lineage
from lpdvae.errors import DataError, LpdvaeError
from lpdvae.io import (
    atomic_dir,
    atomic_write_bytes,
    atomic_write_csv,
    atomic_write_json,
    read_csv,
)
from lpdvae.model import (
    FORMAT_VERSION,
    MusicVAE,
    Reconstructor,
    active_units,
    free_bits_kl,
    kl_per_sample_dim,
    recon_per_sample,
    save_model,
    vae_loss,
)
from lpdvae.params import Params
from lpdvae.shards import PhraseDataset
from lpdvae.tracking import setup_mlflow, tracking_uri

log = logging.getLogger(__name__)

LOG_EVERY = 10  # steps between metric flushes (one small all-reduce each)
MLFLOW_EVERY = 50  # steps per MLflow batch: per-step calls cost ~20 % throughput on 2 cores
MLFLOW_BATCH_LIMIT = 1000  # metrics per log_batch request (MLflow's limit)
KEEP_CHECKPOINTS = 2
CKPT_RE = re.compile(r"^step-(\d{8})\.pt$")
METRICS_FILE = "train_metrics.json"
RUN_FILE = "mlflow_run.json"
HISTORY_FILE = "history.csv"  # per step; DVC plots read it (dvc.yaml `plots:`)
EPOCHS_FILE = "epochs.csv"  # per epoch: validation loss, neg ELBO, active units
STEP_KEYS = ("loss", "recon", "kl", "active_units", "grad_norm")
HISTORY_COLUMNS = ["step", "epoch", "beta", "lr", *STEP_KEYS]
EPOCH_COLUMNS = ["epoch", "step", "val_loss", "val_recon", "val_kl", "val_neg_elbo", "val_active_units"]


@dataclass(frozen=True)
class TrainResult:
    """What the step produced; `run_id`/`model_uri` are None on ranks other than 0."""

    out_dir: Path
    run_id: str | None
    train_loss: float | None
    val_loss: float | None
    steps: int
    checkpoint_dir: Path
    metrics: dict[str, Any]
    model_uri: str | None = None
    experiment_id: str | None = None
    tracking_uri: str | None = None


def _result(out_dir: Path, metrics: dict[str, Any], run: dict[str, Any] | None) -> TrainResult:
    run = run or {}
    return TrainResult(
        out_dir=out_dir, run_id=run.get("run_id"), train_loss=metrics.get("train_loss"),
        val_loss=metrics.get("val_loss"), steps=int(metrics.get("steps", 0)),
        checkpoint_dir=checkpoint_dir(out_dir), metrics=metrics, model_uri=run.get("model_uri"),
        experiment_id=run.get("experiment_id"), tracking_uri=run.get("tracking_uri"),
    )


def checkpoint_dir(out_dir: str | Path) -> Path:
    """`<out_dir>.checkpoints/`: beside the DVC output, so a rerun does not delete it."""
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + ".checkpoints")


# ---------------------------------------------------------------- entry point


def train(tensor_dir: Path, out_dir: Path, params: Params, resume: bool = False) -> TrainResult:
    """Train a MusicVAE on `tensor_dir`'s train split; see the module docstring."""
    tensor_dir, out_dir = Path(tensor_dir).resolve(), Path(out_dir).resolve()
    if params.train.nproc > 1 and not under_torchrun():
        return launch_torchrun(tensor_dir, out_dir, params, resume)
    env = _init_distributed(params)
    prev_det = torch.are_deterministic_algorithms_enabled()
    try:
        return Trainer(tensor_dir, out_dir, params, env).run(resume)
    finally:
        torch.use_deterministic_algorithms(prev_det)
        if env.owns_group:
            dist.destroy_process_group()


def under_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def launch_torchrun(tensor_dir: Path, out_dir: Path, params: Params, resume: bool) -> TrainResult:
    """Run `lpdvae train` under `torchrun --standalone --nproc_per_node N` and collect its result."""
    n = params.train.nproc
    with tempfile.TemporaryDirectory(prefix="lpdvae-train-") as tmp:
        params_file = Path(tmp) / "params.yaml"
        params_file.write_text(yaml.safe_dump(params.to_dict(), sort_keys=False))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={n}", "-m", "lpdvae", "--params", str(params_file), "train",
               "--tensors", str(tensor_dir), "--out", str(out_dir)]
        if resume:
            cmd.append("--resume")
        env = dict(os.environ)
        if not torch.cuda.is_available():
            env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # --standalone: every rank on this host
        log.info("launching %d processes: %s", n, " ".join(cmd))
        rc = subprocess.run(cmd, env=env).returncode
    if rc != 0:
        raise LpdvaeError(f"distributed training ({n} processes under torchrun) exited with code {rc}")
    return _result_from_outputs(out_dir)


def _result_from_outputs(out_dir: Path) -> TrainResult:
    metrics = json.loads((out_dir / METRICS_FILE).read_text())
    return _result(out_dir, metrics, json.loads((out_dir / RUN_FILE).read_text()))


# ---------------------------------------------------------------- distributed setup


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    owns_group: bool

    @property
    def main(self) -> bool:
        return self.rank == 0


def _resolve_device(params: Params, local_rank: int) -> torch.device:
    want = params.train.device
    if want == "cuda" and not torch.cuda.is_available():
        raise LpdvaeError("train.device is cuda but no CUDA device is available")
    if want == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def _init_distributed(params: Params) -> DistEnv:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _resolve_device(params, local_rank)
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.cuda.set_device(device)
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        owns = True
    if rank != 0:
        logging.getLogger("lpdvae").setLevel(logging.WARNING)
    return DistEnv(rank, world, local_rank, device, owns)


def _all_reduce_sum(t: Tensor, env: DistEnv) -> Tensor:
    if env.world > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def _gather_objects(obj: Any, env: DistEnv) -> list[Any]:
    if env.world == 1:
        return [obj]
    out: list[Any] = [None] * env.world
    dist.all_gather_object(out, obj)
    return out


# ---------------------------------------------------------------- schedules & RNG


def lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    """Linear warm-up over `warmup` steps, then constant or cosine decay to 0 at `total`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def beta_at(step: int, beta_max: float, warmup: int) -> float:
    """KL weight: linear from 0 to `beta_max` over `warmup` steps."""
    return beta_max if warmup <= 0 else beta_max * min(1.0, step / warmup)


def rng_state(device: torch.device) -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------- trainer


@dataclass
class State:
    """Everything that must survive a restart besides the torch objects' own state dicts."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_val: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    stopped_early: bool = False
    done: bool = False
    train_time_s: float = 0.0
    train_samples: int = 0
    run_id: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    epochs_log: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """The training loop; one instance per process."""

    def __init__(self, tensor_dir: Path, out_dir: Path, params: Params, env: DistEnv) -> None:
        self.tensor_dir, self.out_dir, self.params, self.env = tensor_dir, out_dir, params, env
        self.tp = params.train
        self.ckpt_dir = checkpoint_dir(out_dir)
        self.train_ds = PhraseDataset(tensor_dir, "train")
        self.val_ds = PhraseDataset(tensor_dir, "val")
        self._check_data()
        if self.tp.batch_size % env.world:
            raise LpdvaeError(f"train.batch_size ({self.tp.batch_size}, the global batch) must be "
                              f"divisible by the number of processes ({env.world})")
        self.local_batch = self.tp.batch_size // env.world
        self.batches_per_epoch = len(self.train_ds) // self.tp.batch_size
        self.total_steps = self.batches_per_epoch * self.tp.epochs
        self.amp = self._amp_enabled()
        self._build_model()
        self.state = State()
        self._buffer: list[tuple[int, int, float, float, Tensor]] = []
        self._window = (0, 0.0)  # samples, seconds since the last flush
        self._mlflow_active = False
        self._bar: Any = None
        self.best_state: dict[str, Tensor] | None = None
        self._pending: list[Any] = []  # MLflow Metric entities not sent yet (rank 0)
        self._sent_step = 0

    # -- setup

    def _check_data(self) -> None:
        p = self.params
        want = (len(p.tracks), p.representation.n_bars, p.representation.steps_per_bar,
                p.representation.n_pitches)
        where = self.tensor_dir / "index.json"
        if tuple(self.train_ds.shape) != want:
            raise DataError(f"{where}: phrase shape {list(self.train_ds.shape)} does not match "
                            f"params (tracks, n_bars, steps_per_bar, n_pitches) = {list(want)}")
        if list(self.train_ds.index["tracks"]) != p.track_names:
            raise DataError(f"{where}: tracks {self.train_ds.index['tracks']} != params tracks "
                            f"{p.track_names}")
        if len(self.train_ds) < self.tp.batch_size:
            raise DataError(f"{where}: the train split has {len(self.train_ds)} phrases, fewer "
                            f"than one batch (train.batch_size = {self.tp.batch_size})")

    def _amp_enabled(self) -> bool:
        if self.tp.precision == "bf16" and self.env.device.type != "cuda":
            log.warning("train.precision bf16 needs a GPU; training in fp32 on CPU")
            return False
        return self.tp.precision == "bf16"

    def _build_model(self) -> None:
        seed_everything(self.tp.seed)  # identical initial weights on every rank
        torch.use_deterministic_algorithms(True, warn_only=True)
        if self.env.device.type == "cuda":
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
        self.model = MusicVAE(self.params.model, self.params.representation,
                              len(self.params.tracks)).to(self.env.device)
        net: nn.Module = self.model
        if self.env.world > 1:
            ids = [self.env.device.index] if self.env.device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(net, device_ids=ids)
        if self.tp.compile:
            if self.env.device.type == "cuda":
                net = torch.compile(net)
            else:
                log.warning("train.compile is for GPUs; running eagerly on CPU")
        self.net = net
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.tp.lr,
                                           weight_decay=self.tp.weight_decay)
        fn = functools.partial(lr_factor, warmup=self.tp.warmup_steps, total=self.total_steps,
                               schedule=self.tp.lr_schedule)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, fn)
        self.noise = torch.Generator().manual_seed(self.tp.seed + 1)
        seed_everything(self.tp.seed + self.env.rank)  # dropout etc. differ per rank

    # -- run

    def run(self, resume: bool) -> TrainResult:
        if resume:
            self._load_checkpoint()
        elif self.env.main:
            self._clear_checkpoints()
        if self.env.main:
            self._start_mlflow()
        try:
            self._fit()
            return self._finish()
        except BaseException:
            if self._mlflow_active:
                import mlflow

                mlflow.end_run(status="FAILED")
            raise
        finally:
            if self._bar is not None:
                self._bar.close()

    def _fit(self) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=self.total_steps, initial=self.state.step, unit="step",
                         desc="train", disable=not self.env.main, dynamic_ncols=True)
        self.net.train()
        while not self.state.done and self.state.epoch < self.tp.epochs:
            self._train_epoch()
            self._end_epoch()
        self.state.done = True
        self._save_checkpoint()

    def _loader(self, epoch: int, skip_batches: int) -> DataLoader:
        sampler = DistributedSampler(self.train_ds, num_replicas=self.env.world,
                                     rank=self.env.rank, shuffle=True, seed=self.tp.seed,
                                     drop_last=True)
        sampler.set_epoch(epoch)
        indices = list(sampler)[skip_batches * self.local_batch:]
        return DataLoader(
            self.train_ds, batch_size=self.local_batch, sampler=indices, drop_last=True,
            num_workers=self.tp.num_workers, pin_memory=self.env.device.type == "cuda",
            generator=torch.Generator().manual_seed(self.tp.seed + epoch),
        )

    def _train_epoch(self) -> None:
        st = self.state
        loader = self._loader(st.epoch, st.batch_in_epoch)
        tick = time.perf_counter()
        for x in loader:
            self._train_step(x)
            now = time.perf_counter()
            self._count(now - tick)
            tick = now
            if st.step % LOG_EVERY == 0:
                self._flush()
            if self.tp.checkpoint_every_steps > 0 and st.step % self.tp.checkpoint_every_steps == 0:
                self._save_checkpoint()
        self._flush()

    def _count(self, seconds: float) -> None:
        self.state.train_time_s += seconds
        self.state.train_samples += self.tp.batch_size
        samples, secs = self._window
        self._window = (samples + self.tp.batch_size, secs + seconds)

    def _train_step(self, x: Tensor) -> None:
        st, env = self.state, self.env
        x = x.to(env.device, non_blocking=True)
        beta = beta_at(st.step, self.tp.beta_max, self.tp.beta_warmup_steps)
        lr = self.scheduler.get_last_lr()[0]
        eps = torch.randn(self.tp.batch_size, self.model.latent_dim, generator=self.noise)
        eps = eps[env.rank::env.world].to(env.device)
        with torch.autocast(env.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits, mu, logvar = self.net(x, eps)
        kl_global = kl_per_sample_dim(mu.detach().float(), logvar.detach().float()).mean(0)
        kl_global = _all_reduce_sum(kl_global, env) / env.world
        out = vae_loss(logits, x, mu, logvar, beta, self.tp.free_bits, self.tp.pos_weight,
                       kl_reference=kl_global)
        self.optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        params = self.model.parameters()
        if self.tp.grad_clip > 0:
            gn = torch.nn.utils.clip_grad_norm_(params, self.tp.grad_clip)
        else:
            gn = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        self.optimizer.step()
        self.scheduler.step()
        st.step += 1
        st.batch_in_epoch += 1
        au = torch.tensor(float(active_units(kl_global)))
        row = torch.stack([out["loss"].detach().float().cpu(), out["recon"].detach().float().cpu(),
                           out["kl"].detach().float().cpu(), au, gn.detach().float().cpu()])
        self._buffer.append((st.step, st.epoch, beta, lr, row))
        self._bar.update(1)

    def _flush(self) -> None:
        """All-reduce the buffered step stats (collective), append to history, log on rank 0."""
        if not self._buffer:
            return
        rows = torch.stack([r for *_, r in self._buffer])
        rows = (_all_reduce_sum(rows, self.env) / self.env.world).tolist()
        samples, secs = self._window
        throughput = samples / secs if secs > 0 else 0.0
        new = []
        for (step, epoch, beta, lr, _), vals in zip(self._buffer, rows, strict=True):
            new.append({"step": step, "epoch": epoch, "beta": beta, "lr": lr,
                        **dict(zip(STEP_KEYS, vals, strict=True))})
        self.state.history.extend(new)
        self._buffer, self._window = [], (0, 0.0)
        if self.env.main:
            self._log_steps(new, throughput)
            self._bar.set_postfix(loss=f"{new[-1]['loss']:.1f}", kl=f"{new[-1]['kl']:.2f}",
                                  refresh=False)

    def _end_epoch(self) -> None:
        st = self.state
        val = self._validate(st.epoch)
        row: dict[str, Any] = {"epoch": st.epoch, "step": st.step, **val}
        if val:
            if val["val_loss"] < st.best_val:
                st.best_val, st.best_epoch, st.bad_epochs = val["val_loss"], st.epoch, 0
                self.best_state = {k: v.detach().cpu().clone()
                                   for k, v in self.model.state_dict().items()}
            else:
                st.bad_epochs += 1
                patience = self.tp.early_stopping_patience
                if patience > 0 and st.bad_epochs >= patience:
                    st.stopped_early = True
                    log.info("early stop after epoch %d: val loss has not improved for %d epochs",
                             st.epoch + 1, patience)
        st.epochs_log.append(row)
        if self.env.main:
            self._send_metrics()
            self._log_epoch(row)
        st.epoch += 1
        st.batch_in_epoch = 0
        if st.stopped_early:
            st.done = True

    @torch.no_grad()
    def _validate(self, epoch: int) -> dict[str, Any]:
        """Val loss (same objective at beta_max), neg ELBO, KL per dim, cov-based active units."""
        n = len(self.val_ds)
        if n == 0:
            return {}
        env, d = self.env, self.model.latent_dim
        gen = torch.Generator().manual_seed((self.tp.seed * 1_000_003 + epoch + 7) % 2**63)
        eps_all = torch.randn(n, d, generator=gen)
        indices = list(range(env.rank, n, env.world))
        loader = DataLoader(self.val_ds, batch_size=self.local_batch, sampler=indices,
                            num_workers=self.tp.num_workers)
        sums = torch.zeros(2 + 3 * d, dtype=torch.float64)  # count, recon, kl[d], mu[d], mu^2[d]
        self.model.eval()
        pos = 0
        for x in loader:
            idx = indices[pos:pos + len(x)]
            pos += len(x)
            x = x.to(env.device)
            with torch.autocast(env.device.type, dtype=torch.bfloat16, enabled=self.amp):
                mu, logvar = self.model.encode(x)
                z = mu + torch.exp(0.5 * logvar) * eps_all[idx].to(env.device, mu.dtype)
                logits = self.model.decode(z)
            mu, logvar = mu.float(), logvar.float()
            sums[0] += len(x)
            sums[1] += recon_per_sample(logits.float(), x, self.tp.pos_weight).sum().double().cpu()
            sums[2:2 + d] += kl_per_sample_dim(mu, logvar).sum(0).double().cpu()
            sums[2 + d:2 + 2 * d] += mu.sum(0).double().cpu()
            sums[2 + 2 * d:] += mu.pow(2).sum(0).double().cpu()
        self.model.train()
        sums = _all_reduce_sum(sums, env)
        count = sums[0]
        recon = float(sums[1] / count)
        kl_dim = (sums[2:2 + d] / count).float()
        mu_var = (sums[2 + 2 * d:] / count - (sums[2 + d:2 + 2 * d] / count) ** 2).float()
        kl_floor = float(free_bits_kl(kl_dim, self.tp.free_bits))
        return {
            "val_loss": recon + self.tp.beta_max * kl_floor,
            "val_recon": recon,
            "val_kl": float(kl_dim.sum()),
            "val_neg_elbo": recon + float(kl_dim.sum()),
            "val_active_units": active_units(mu_var),
            "val_kl_per_dim": [round(v, 6) for v in kl_dim.tolist()],
        }

    # -- checkpoints

    def _checkpoint_payload(self, rng: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "format_version": 1,
            "state": dataclasses.asdict(self.state),
            "model": self.model.state_dict(),
            "best_state": self.best_state,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "noise": self.noise.get_state(),
            "rng": rng,
            "world_size": self.env.world,
            "model_params": dataclasses.asdict(self.params.model),
            "model_format": FORMAT_VERSION,
            "n_train": len(self.train_ds),
            "batch_size": self.tp.batch_size,
            "params_digest": self.params.digest(),
        }

    def _save_checkpoint(self) -> None:
        """Atomically write `step-XXXXXXXX.pt` (rank 0) with every rank's RNG state (collective)."""
        self._flush()
        rng = _gather_objects(rng_state(self.env.device), self.env)
        if not self.env.main:
            return
        buf = io.BytesIO()
        torch.save(self._checkpoint_payload(rng), buf)
        path = self.ckpt_dir / f"step-{self.state.step:08d}.pt"
        atomic_write_bytes(path, buf.getvalue())
        for old in _checkpoints(self.ckpt_dir)[:-KEEP_CHECKPOINTS]:
            old.unlink(missing_ok=True)
        log.debug("checkpoint %s", path)

    def _clear_checkpoints(self) -> None:
        for old in _checkpoints(self.ckpt_dir):
            old.unlink(missing_ok=True)

    def _load_checkpoint(self) -> None:
        ckpt = self._read_newest()
        if ckpt is None:
            log.info("no checkpoint in %s: starting from scratch", self.ckpt_dir)
            return
        self._check_compatible(ckpt)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.noise.set_state(ckpt["noise"])
        self.best_state = ckpt["best_state"]
        self.state = State(**ckpt["state"])
        rng = ckpt["rng"]
        if len(rng) != self.env.world:
            log.warning("checkpoint was written by %d processes, now %d: per-rank RNG streams "
                        "differ from an uninterrupted run", len(rng), self.env.world)
        set_rng_state(rng[self.env.rank % len(rng)], self.env.device)
        log.info("resumed from step %d (epoch %d, batch %d)", self.state.step,
                 self.state.epoch + 1, self.state.batch_in_epoch)

    def _read_newest(self) -> dict[str, Any] | None:
        for path in reversed(_checkpoints(self.ckpt_dir)):
            try:
                # CPU first: RNG states must stay CPU ByteTensors; load_state_dict moves the rest
                return torch.load(path, map_location="cpu", weights_only=False)
            except Exception as exc:  # a damaged file: fall back to the one before
                log.warning("%s: unreadable checkpoint (%s), trying an older one", path, exc)
        return None

    def _check_compatible(self, ckpt: dict[str, Any]) -> None:
        if ckpt.get("model_format") != FORMAT_VERSION:
            raise LpdvaeError(f"{self.ckpt_dir}: checkpoints hold model format "
                              f"{ckpt.get('model_format')}, this lpdvae trains format "
                              f"{FORMAT_VERSION}; run without --resume to start over")
        if ckpt["model_params"] != dataclasses.asdict(self.params.model):
            raise LpdvaeError(f"{self.ckpt_dir}: checkpoints were trained with other model params; "
                              "run without --resume to start over")
        if (ckpt["n_train"], ckpt["batch_size"]) != (len(self.train_ds), self.tp.batch_size):
            raise LpdvaeError(f"{self.ckpt_dir}: checkpoints were trained on {ckpt['n_train']} "
                              f"phrases with global batch {ckpt['batch_size']}; run without "
                              "--resume to start over")
        if ckpt["params_digest"] != self.params.digest():
            log.warning("params changed since the checkpoint; resuming anyway")

    # -- MLflow

    def _start_mlflow(self) -> None:
        import mlflow

        self.experiment_id = setup_mlflow(self.params)
        self.tracking_uri = tracking_uri(self.params)
        system = importlib.util.find_spec("psutil") is not None
        if system:
            mlflow.set_system_metrics_sampling_interval(5)
            mlflow.set_system_metrics_samples_before_logging(1)
        run_id = self.state.run_id if self._run_exists(self.state.run_id) else None
        run = mlflow.start_run(run_id=run_id, experiment_id=None if run_id else self.experiment_id,
                               log_system_metrics=system)
        self._mlflow_active = True
        if run_id is None:
            self.state.run_id = run.info.run_id
            mlflow.log_params({**self.params.flat(), **self._run_params()})
        mlflow.set_tags(self._run_tags())
        log.info("MLflow run %s in experiment %s at %s", run.info.run_id, self.experiment_id,
                 self.tracking_uri)

    @staticmethod
    def _run_exists(run_id: str | None) -> bool:
        if not run_id:
            return False
        import mlflow

        try:
            mlflow.get_run(run_id)
            return True
        except Exception:
            return False

    def _run_params(self) -> dict[str, Any]:
        return {"run.world_size": self.env.world, "run.per_rank_batch": self.local_batch,
                "run.device": str(self.env.device), "run.n_train": len(self.train_ds),
                "run.n_val": len(self.val_ds), "run.steps_per_epoch": self.batches_per_epoch}

    def _run_tags(self) -> dict[str, str]:
        return {
            "lpdvae.step": "train",
            "lpdvae.dataset_dvc_hash": lineage.dvc_hash(self.tensor_dir),
            "lpdvae.params_digest": self.params.digest(),
            "lpdvae.git_revision": lineage.git_revision() or "unknown",
            "lpdvae.tensor_dir": str(self.tensor_dir),
        }

    def _log_steps(self, rows: list[dict[str, Any]], throughput: float) -> None:
        """Queue per-step metrics; they go to MLflow in one batch every MLFLOW_EVERY steps."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for r in rows:
            values = {f"train_{k}": r[k] for k in ("loss", "recon", "kl")}
            values.update(beta=r["beta"], lr=r["lr"], active_units=r["active_units"],
                          grad_norm=r["grad_norm"])
            self._pending.extend(Metric(k, float(v), now, r["step"]) for k, v in values.items())
        self._pending.append(Metric("samples_per_s", throughput, now, rows[-1]["step"]))
        if self.state.step - self._sent_step >= MLFLOW_EVERY:
            self._send_metrics()

    def _send_metrics(self) -> None:
        """Send the queued step metrics (asynchronously, one request per 1,000 metrics)."""
        if not self._pending:
            return
        from mlflow import MlflowClient

        client = MlflowClient()
        for i in range(0, len(self._pending), MLFLOW_BATCH_LIMIT):
            client.log_batch(self.state.run_id, metrics=self._pending[i:i + MLFLOW_BATCH_LIMIT],
                             synchronous=False)
        self._pending, self._sent_step = [], self.state.step

    def _log_epoch(self, row: dict[str, Any]) -> None:
        import mlflow

        metrics = {k: float(v) for k, v in row.items() if k.startswith("val_") and k != "val_kl_per_dim"}
        metrics["epoch"] = row["epoch"] + 1
        for i, v in enumerate(row.get("val_kl_per_dim", [])):
            metrics[f"kl_dim/{i:03d}"] = v
        mlflow.log_metrics(metrics, step=row["step"], synchronous=False)
        log.info("epoch %d/%d: %s", row["epoch"] + 1, self.tp.epochs,
                 ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k.startswith("val_")))

    # -- final outputs

    def _final_model(self) -> MusicVAE:
        vae = copy.deepcopy(self.model).cpu().eval()
        if self.best_state is not None:
            vae.load_state_dict(self.best_state)
        return vae

    def _metrics(self) -> dict[str, Any]:
        st = self.state
        best = next((e for e in st.epochs_log if e["epoch"] == st.best_epoch), None)
        last = st.history[-1] if st.history else {}
        kl_dim = best["val_kl_per_dim"] if best else []
        return {
            "epochs": st.epoch, "steps": st.step, "stopped_early": st.stopped_early,
            "best_epoch": st.best_epoch + 1 if best else None,
            "train_loss": last.get("loss"), "train_recon": last.get("recon"),
            "train_kl": last.get("kl"),
            **({k: v for k, v in best.items() if k.startswith("val_") and k != "val_kl_per_dim"}
               if best else {}),
            "kl_per_dim": kl_dim,
            "active_units": best["val_active_units"] if best else last.get("active_units"),
            "samples_per_s": st.train_samples / st.train_time_s if st.train_time_s else None,
            "train_time_s": st.train_time_s, "world_size": self.env.world,
            "global_batch_size": self.tp.batch_size, "n_train": len(self.train_ds),
            "n_val": len(self.val_ds), "device": self.env.device.type,
            "precision": "bf16" if self.amp else "fp32",
        }

    def _finish(self) -> TrainResult:
        metrics = self._metrics()
        if not self.env.main:
            return _result(self.out_dir, metrics, None)
        import mlflow

        vae = self._final_model()
        with atomic_dir(self.out_dir) as tmp:
            save_model(vae, tmp, self.params)
            atomic_write_json(tmp / METRICS_FILE, metrics)
            atomic_write_csv(tmp / HISTORY_FILE, self.state.history, HISTORY_COLUMNS)
            atomic_write_csv(tmp / EPOCHS_FILE, self.state.epochs_log, EPOCH_COLUMNS)
            info = log_model(vae, self.train_ds[0].numpy()[None])
            run = {"tracking_uri": self.tracking_uri, "experiment_id": self.experiment_id,
                   "run_id": self.state.run_id, "model_uri": info.model_uri}
            atomic_write_json(tmp / RUN_FILE, run)
        self._send_metrics()
        mlflow.log_metrics({f"final_{k}": float(v) for k, v in metrics.items()
                            if isinstance(v, int | float) and not isinstance(v, bool)})
        mlflow.flush_async_logging()
        mlflow.end_run()
        self._mlflow_active = False
        log.info("model in %s, MLflow run %s (%s)", self.out_dir, run["run_id"], run["model_uri"])
        return _result(self.out_dir, metrics, run)


def _checkpoints(ckpt_dir: Path) -> list[Path]:
    """Checkpoint files, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    return sorted(p for p in ckpt_dir.iterdir() if CKPT_RE.match(p.name))


def log_model(vae: MusicVAE, example: np.ndarray) -> Any:
    """Log the reconstruction view of `vae` (phrases -> probabilities) to the active run.

    Pickled with lpdvae as code_paths, not `pt2`: `mlflow.pytorch.load_model` then returns the
    `Reconstructor` whose `.vae` still has `sample`/`interpolate`, and logging takes a second
    instead of a `torch.export` trace (~15 s on 2 cores)."""
    import mlflow.pytorch
    from mlflow.models import infer_signature

    from lpdvae.serving import code_paths, pip_requirements

    wrapper = Reconstructor(vae).eval()
    example = example.astype(np.float32)
    with torch.no_grad():
        output = wrapper(torch.from_numpy(example)).numpy()
    return mlflow.pytorch.log_model(
        wrapper, name="model", signature=infer_signature(example, output),
        input_example=example, code_paths=code_paths(), pip_requirements=pip_requirements(),
        serialization_format="pickle",
    )


def read_history(out_dir: str | Path) -> list[dict[str, Any]]:
    """Per-step rows (step, epoch, beta, lr, loss, recon, kl, active_units, grad_norm)."""
    rows = read_csv(Path(out_dir) / HISTORY_FILE)
    return [{k: int(v) if k in ("step", "epoch") else v for k, v in r.items()} for r in rows]


__all__ = ["TrainResult", "beta_at", "checkpoint_dir", "log_model", "lr_factor", "read_history",
           "train"]
