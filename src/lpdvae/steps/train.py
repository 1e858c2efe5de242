"""Train: the VAE on the phrase shards, tracked in MLflow, checkpointed so a rerun can resume."""

from __future__ import annotations

import argparse
import csv
import io
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from lpdvae.io import atomic_dir, atomic_write_bytes, atomic_write_json
from lpdvae.lineage import dvc_hash, git_revision
from lpdvae.model import MusicVAE, active_units, save_model, vae_loss
from lpdvae.params import Params
from lpdvae.shards import PhraseDataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    run_id: str
    train_loss: float
    val_loss: float | None
    steps: int


def checkpoint_dir(out_dir: Path) -> Path:
    return Path(str(out_dir) + ".checkpoints")


def beta_at(step: int, params: Params) -> float:
    t = params.train
    return t.beta_max * min(1.0, step / max(1, t.beta_warmup_steps))


def lr_lambda(params: Params, total_steps: int):
    t = params.train

    def f(step: int) -> float:
        if step < t.warmup_steps:
            return (step + 1) / t.warmup_steps
        if t.lr_schedule == "constant":
            return 1.0
        progress = (step - t.warmup_steps) / max(1, total_steps - t.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def _loader(ds: PhraseDataset, params: Params, epoch: int, shuffle: bool) -> DataLoader:
    gen = torch.Generator().manual_seed(params.train.seed * 1000 + epoch)
    return DataLoader(ds, batch_size=params.train.batch_size, shuffle=shuffle, generator=gen,
                      num_workers=params.train.num_workers, drop_last=False)


@torch.no_grad()
def evaluate_loss(model: MusicVAE, ds: PhraseDataset, params: Params, beta: float) -> float | None:
    if len(ds) == 0:
        return None
    model.eval()
    total, n = 0.0, 0
    gen = torch.Generator().manual_seed(params.train.seed)
    for x in _loader(ds, params, 0, shuffle=False):
        eps = torch.randn(x.shape[0], model.latent_dim, generator=gen)
        logits, mu, logvar = model(x, eps)
        out = vae_loss(logits, x, mu, logvar, beta, params.train.free_bits, params.train.pos_weight)
        total += float(out["loss"]) * len(x)
        n += len(x)
    model.train()
    return total / n


def _save_checkpoint(path: Path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path / f"step-{state['step']:08d}.pt", buf.getvalue())
    for old in sorted(path.glob("step-*.pt"))[:-2]:  # keep the newest two
        old.unlink(missing_ok=True)


def _latest_checkpoint(path: Path) -> dict | None:
    files = sorted(path.glob("step-*.pt"))
    return torch.load(files[-1], weights_only=False) if files else None


def train(tensor_dir: Path, out_dir: Path, params: Params, resume: bool = False) -> TrainResult:
    import mlflow

    from lpdvae.tracking import setup_mlflow, tracking_uri

    tensor_dir, out_dir = Path(tensor_dir), Path(out_dir)
    t = params.train
    torch.manual_seed(t.seed)
    train_ds, val_ds = PhraseDataset(tensor_dir, "train"), PhraseDataset(tensor_dir, "val")
    if len(train_ds) == 0:
        from lpdvae.errors import DataError

        raise DataError(f"{tensor_dir}: the train split has no phrases")
    model = MusicVAE(params.model, params.representation, len(params.tracks))
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    steps_per_epoch = math.ceil(len(train_ds) / t.batch_size)
    total_steps = steps_per_epoch * t.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(params, total_steps))

    ckpt_dir = checkpoint_dir(out_dir)
    step, start_epoch, best_val, bad_epochs, history = 0, 0, math.inf, 0, []
    ckpt = _latest_checkpoint(ckpt_dir) if resume else None
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng"])
        step, start_epoch, best_val, bad_epochs, history = (
            ckpt["step"], ckpt["epoch"], ckpt["best_val"], ckpt["bad_epochs"], ckpt["history"])
        log.info("resumed from step %d (epoch %d)", step, start_epoch)

    exp_id = setup_mlflow(params)
    t0 = time.perf_counter()
    seen = 0
    last: dict[str, float] = {}
    val_loss = None
    with mlflow.start_run(experiment_id=exp_id, run_id=ckpt.get("run_id") if ckpt else None) as run:
        if ckpt is None:
            mlflow.log_params(params.flat())
        mlflow.set_tags({"lpdvae.dataset_dvc_hash": dvc_hash(tensor_dir),
                         "lpdvae.params_digest": params.digest(),
                         "lpdvae.git_revision": git_revision() or "unknown"})
        model.train()
        for epoch in range(start_epoch, t.epochs):
            for x in _loader(train_ds, params, epoch, shuffle=True):
                beta = beta_at(step, params)
                logits, mu, logvar = model(x)
                out = vae_loss(logits, x, mu, logvar, beta, t.free_bits, t.pos_weight)
                opt.zero_grad(set_to_none=True)
                out["loss"].backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
                opt.step()
                sched.step()
                step += 1
                seen += len(x)
                last = {"loss": float(out["loss"]), "recon": float(out["recon"]), "kl": float(out["kl"]),
                        "beta": beta, "lr": sched.get_last_lr()[0],
                        "active_units": float(active_units(out["kl_per_dim"].detach()))}
                mlflow.log_metrics({f"train.{k}": v for k, v in last.items()}, step=step)
                history.append({"step": step, "epoch": epoch, **last, "val_loss": ""})
            val_loss = evaluate_loss(model, val_ds, params, beta_at(step, params))
            if val_loss is not None:
                mlflow.log_metric("val.loss", val_loss, step=step)
                history[-1]["val_loss"] = val_loss
                if val_loss < best_val - 1e-6:
                    best_val, bad_epochs = val_loss, 0
                else:
                    bad_epochs += 1
            log.info("epoch %d/%d: loss %.2f recon %.2f kl %.2f val %s", epoch + 1, t.epochs,
                     last["loss"], last["recon"], last["kl"], f"{val_loss:.2f}" if val_loss else "-")
            _save_checkpoint(ckpt_dir, {
                "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "rng": torch.get_rng_state(), "step": step, "epoch": epoch + 1, "best_val": best_val,
                "bad_epochs": bad_epochs, "history": history, "run_id": run.info.run_id})
            if bad_epochs >= t.early_stopping_patience:
                log.info("early stopping after epoch %d", epoch + 1)
                break
        seconds = time.perf_counter() - t0
        samples_per_s = seen / seconds if seconds else 0.0
        mlflow.log_metric("train.samples_per_s", samples_per_s)
        model.eval()
        example = torch.zeros(1, *model.shape)
        from mlflow.models import infer_signature

        from lpdvae.model import Reconstructor
        from lpdvae.serving import pip_requirements

        recon = Reconstructor(model)
        sig = infer_signature(example.numpy(), recon(example).detach().numpy())
        info = mlflow.pytorch.log_model(recon, name="model", signature=sig, input_example=example.numpy(),
                                        pip_requirements=pip_requirements())
        summary = {"train_loss": last.get("loss"), "train_recon": last.get("recon"), "train_kl": last.get("kl"),
                   "active_units": last.get("active_units"), "val_loss": val_loss, "steps": step,
                   "epochs": t.epochs, "samples_per_s": samples_per_s, "seconds": seconds}
        run_record = {"tracking_uri": tracking_uri(params), "experiment_id": exp_id,
                      "run_id": run.info.run_id, "model_uri": info.model_uri}
    with atomic_dir(out_dir) as tmp:
        save_model(model, tmp, params)
        atomic_write_json(tmp / "train_metrics.json", summary)
        atomic_write_json(tmp / "mlflow_run.json", run_record)
        _write_history(tmp / "history.csv", history)
    return TrainResult(out_dir, run.info.run_id, float(last.get("loss", math.nan)), val_loss, step)


def _write_history(path: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    fields = ["step", "epoch", "loss", "recon", "kl", "beta", "lr", "active_units", "val_loss"]
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_bytes(path, buf.getvalue().encode())


def _cmd(args: argparse.Namespace, params: Params) -> int:
    r = train(Path(args.tensors), Path(args.out), params, resume=args.resume)
    print(f"train: {r.steps} steps, loss {r.train_loss:.2f}, val {r.val_loss}, MLflow run {r.run_id}")
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the VAE on the tensor shards (MLflow-tracked)",
                       description="Train the hierarchical conv-recurrent VAE; checkpoints beside the "
                       "output folder allow --resume.")
    p.add_argument("--tensors", default="data/tensors", help="tensor folder (default: %(default)s)")
    p.add_argument("--out", default="models/vae", help="output folder (default: %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.set_defaults(func=_cmd)
