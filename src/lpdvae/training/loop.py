"""The training loop, one instance per process.

Determinism: `train.batch_size` is the *global* batch. Data order comes from
`DistributedSampler(seed, epoch)` (`train.data_order: global`), or from `shard_stream.shard_order`
(`shards`, and always for s3:// tensors: each rank reads its own shards only, so its order, and
the curve, depend on the number of processes); the reparameterisation noise of a global batch is drawn from
one seeded generator and sliced per rank; the free-bits floor clamps each sample's KL on its
own rank (`free_nats_kl`), so no KL is all-reduced and a global batch's mean is the same however
it is split. So N processes follow the same loss curve as one (up to float reduction order), and a run killed
at any point and resumed from its newest checkpoint ends with bit-identical weights (same world
size and device).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler

from lpdvae.data.codes import transpose
from lpdvae.data.shard_stream import is_s3, open_phrases, rank_phrases, shard_order
from lpdvae.errors import DataError, LpdvaeError
from lpdvae.io import atomic_dir, atomic_write_csv, atomic_write_json
from lpdvae.model.files import FORMAT_VERSION, build_model, save_model
from lpdvae.model.heads import tracks_playing
from lpdvae.model.loss import active_units, free_nats_kl, vae_loss
from lpdvae.model.prior import FIT_PHRASES, HELD_OUT_PHRASES, kl_per_sample_dim, posterior_samples
from lpdvae.model.vae import MusicVAE
from lpdvae.params import Params, TrainParams
from lpdvae.training import checkpoints as ckpts
from lpdvae.training.distributed import (
    DistEnv,
    all_reduce_sum,
    broadcast_object,
    gather_objects,
    init_distributed,
    shutdown,
)
from lpdvae.training.latent_width import choose_width
from lpdvae.training.outputs import (
    EPOCH_COLUMNS,
    EPOCHS_FILE,
    HISTORY_COLUMNS,
    HISTORY_FILE,
    METRICS_FILE,
    RUN_FILE,
    STEP_KEYS,
    TrainResult,
    make_result,
)
from lpdvae.training.run_log import RunLog
from lpdvae.training.schedules import (
    beta_at,
    lr_factor,
    rng_state,
    seed_everything,
    set_rng_state,
)
from lpdvae.training.state import State

log = logging.getLogger(__name__)

LOG_EVERY = 10  # steps between metric flushes (one small all-reduce each)


def optimizer_step(model: nn.Module, net: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor,
                   eps: Tensor | None, beta: float, tp: TrainParams, amp: bool) -> tuple[dict[str, Tensor], Tensor]:
    """One step on a batch: bf16 autocast around the forward pass only (`amp`), the loss in fp32,
    backward, the gradient norm clipped (or measured), AdamW. `net` is the model, compiled or
    DDP-wrapped; returns the loss terms and the gradient norm (on the device: reading syncs)."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        decoded, mu, logvar, prior_fit = net(x, eps)
    out = vae_loss(model, decoded, x, mu, logvar, beta, tp.free_nats, tp.hold_pitch_weight, prior_fit)
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    params = model.parameters()
    if tp.grad_clip > 0:
        gn = torch.nn.utils.clip_grad_norm_(params, tp.grad_clip)
    else:
        gn = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    optimizer.step()
    return out, gn


class Trainer:
    def __init__(self, tensor_dir: str | Path, out_dir: Path, params: Params, env: DistEnv,
                 checkpoints: str | Path | None = None) -> None:
        self.tensor_dir, self.out_dir, self.params, self.env = tensor_dir, out_dir, params, env
        self.tp = params.train
        # `<out>.checkpoints/`, or an S3 prefix that outlives the pod (a TrainJob's nodes)
        self.store = ckpts.open_store(checkpoints or ckpts.checkpoint_dir(out_dir), scratch=out_dir.parent)
        self.train_ds = open_phrases(tensor_dir, "train")
        self.val_ds = open_phrases(tensor_dir, "val")
        self.by_shard = is_s3(tensor_dir) or self.tp.data_order == "shards"
        self._check_data()
        if self.tp.batch_size % env.world:
            raise LpdvaeError(f"train.batch_size ({self.tp.batch_size}, the global batch) must be "
                              f"divisible by the number of processes ({env.world})")
        self.local_batch = self.tp.batch_size // env.world
        self.batches_per_epoch = self._batches_per_epoch()
        self.total_steps = self.batches_per_epoch * self.tp.epochs
        self.amp = self._amp_enabled()
        self._build_model()
        self.state = State()
        self.run_log = RunLog(params, tensor_dir) if env.main else None
        self._buffer: list[tuple[int, int, float, float, Tensor]] = []
        self._window = (0, 0.0)  # samples, seconds since the last flush
        self._bar: Any = None
        self.best_state: dict[str, Tensor] | None = None

    # -- setup

    def _check_data(self) -> None:
        p = self.params
        want = (len(p.tracks), p.representation.n_bars, p.representation.steps_per_bar,
                p.representation.n_pitches)
        where = f"{self.tensor_dir}/index.json"
        if tuple(self.train_ds.shape) != want:
            raise DataError(f"{where}: phrase shape {list(self.train_ds.shape)} does not match "
                            f"params (tracks, n_bars, steps_per_bar, n_pitches) = {list(want)}")
        if list(self.train_ds.index["tracks"]) != p.track_names:
            raise DataError(f"{where}: tracks {self.train_ds.index['tracks']} != params tracks "
                            f"{p.track_names}")
        if len(self.train_ds) < self.tp.batch_size:
            raise DataError(f"{where}: the train split has {len(self.train_ds)} phrases, fewer "
                            f"than one batch (train.batch_size = {self.tp.batch_size})")

    def _batches_per_epoch(self) -> int:
        """Global batches per epoch; by shard, what the rank with the fewest phrases can fill (every
        rank takes as many steps; the others leave their surplus, a different part each epoch)."""
        if not self.by_shard:
            return len(self.train_ds) // self.tp.batch_size
        offsets, world = self.train_ds.offsets, self.env.world
        fewest = min(rank_phrases(offsets, r, world) for r in range(world))
        if fewest < self.local_batch:
            raise DataError(f"{self.tensor_dir}/index.json: read by shard, {world} processes need a batch "
                            f"({self.local_batch} phrases) from every process's shards; the train split has "
                            f"{len(offsets) - 1} shards and the fewest any process gets hold {fewest} phrases")
        return fewest // self.local_batch

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
        self.model = build_model(self.params).to(self.env.device)
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
            ckpts.clear_checkpoints(self.store)
        if self.run_log is not None:
            self.state.run_id = self.run_log.start(self.state.run_id, self._run_params())
        try:
            self._fit()
            return self._finish()
        except BaseException:
            if self.run_log is not None:
                self.run_log.fail()
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

    def _epoch_order(self, epoch: int) -> list[int]:
        if self.by_shard:
            order = shard_order(self.train_ds.offsets, self.env.rank, self.env.world, self.tp.seed, epoch)
            return order[:self.batches_per_epoch * self.local_batch]
        sampler = DistributedSampler(self.train_ds, num_replicas=self.env.world,
                                     rank=self.env.rank, shuffle=True, seed=self.tp.seed,
                                     drop_last=True)
        sampler.set_epoch(epoch)
        return list(sampler)

    def _workers(self) -> int:
        # a DataLoader worker holds its own dataset copy: from S3 each would GET every shard again
        return 0 if is_s3(self.tensor_dir) else self.tp.num_workers

    def _loader(self, epoch: int, skip_batches: int) -> DataLoader:
        indices = self._epoch_order(epoch)[skip_batches * self.local_batch:]
        return DataLoader(
            self.train_ds, batch_size=self.local_batch, sampler=indices, drop_last=True,
            num_workers=self._workers(), pin_memory=self.env.device.type == "cuda",
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
        if self.tp.transpose:  # shifts drawn for the global batch, like eps: DDP equals one process
            k = self.tp.transpose
            shifts = torch.randint(-k, k + 1, (self.tp.batch_size,), generator=self.noise)
            x = transpose(x, shifts[env.rank::env.world].to(env.device))
        out, gn = optimizer_step(self.model, self.net, self.optimizer, x, eps, beta, self.tp, self.amp)
        self.scheduler.step()
        st.step += 1
        st.batch_in_epoch += 1
        au = torch.tensor(float(active_units(out["kl_per_dim"].detach())))
        row = torch.stack([out["loss"].detach().float().cpu(), out["recon"].detach().float().cpu(),
                           out["kl"].detach().float().cpu(), au, gn.detach().float().cpu()])
        self._buffer.append((st.step, st.epoch, beta, lr, row))
        self._bar.update(1)

    def _flush(self) -> None:
        """All-reduce the buffered step stats (collective), append to history, log on rank 0."""
        if not self._buffer:
            return
        rows = torch.stack([r for *_, r in self._buffer])
        rows = (all_reduce_sum(rows, self.env) / self.env.world).tolist()
        samples, secs = self._window
        throughput = samples / secs if secs > 0 else 0.0
        new = []
        for (step, epoch, beta, lr, _), vals in zip(self._buffer, rows, strict=True):
            new.append({"step": step, "epoch": epoch, "beta": beta, "lr": lr,
                        **dict(zip(STEP_KEYS, vals, strict=True))})
        self.state.history.extend(new)
        self._buffer, self._window = [], (0, 0.0)
        if self.run_log is not None:
            self.run_log.queue_steps(new, self.state.step, throughput)
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
        if self.run_log is not None:
            self.run_log.send(st.step)
            self.run_log.log_epoch(row, self.tp.epochs)
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
        indices = (shard_order(self.val_ds.offsets, env.rank, env.world, None) if self.by_shard
                   else list(range(env.rank, n, env.world)))
        loader = DataLoader(self.val_ds, batch_size=self.local_batch, sampler=indices,
                            num_workers=self._workers())
        sums = torch.zeros(3 + 3 * d, dtype=torch.float64)  # count, recon, hinge, kl, mu, mu^2
        self.model.eval()
        pos = 0
        for x in loader:
            idx = indices[pos:pos + len(x)]
            pos += len(x)
            x = x.to(env.device)
            with torch.autocast(env.device.type, dtype=torch.bfloat16, enabled=self.amp):
                mu, logvar = self.model.encode(x)
                z = mu + torch.exp(0.5 * logvar) * eps_all[idx].to(env.device, mu.dtype)
                decoded = self.model.decode(z, x)  # teacher-forced: the likelihood of x
                rel_mu, rel_logvar = self.model.prior_relative(mu, logvar, z)
            mu = mu.float()
            kl = kl_per_sample_dim(rel_mu.float(), rel_logvar.float())
            sums[0] += len(x)
            sums[1] += self.model.recon_nll(decoded, x).sum().double().cpu()
            sums[2] += free_nats_kl(kl.sum(1), self.tp.free_nats).sum().double().cpu()
            sums[3:3 + d] += kl.sum(0).double().cpu()
            sums[3 + d:3 + 2 * d] += mu.sum(0).double().cpu()
            sums[3 + 2 * d:] += mu.pow(2).sum(0).double().cpu()
        self.model.train()
        sums = all_reduce_sum(sums, env)
        count = sums[0]
        recon = float(sums[1] / count)
        kl_dim = (sums[3:3 + d] / count).float()
        mu_var = (sums[3 + 2 * d:] / count - (sums[3 + d:3 + 2 * d] / count) ** 2).float()
        return {
            "val_loss": recon + self.tp.beta_max * float(sums[2] / count),
            "val_recon": recon,
            "val_kl": float(kl_dim.sum()),
            "val_neg_elbo": recon + float(kl_dim.sum()),
            "val_active_units": active_units(mu_var),
            "val_kl_per_dim": [round(v, 6) for v in kl_dim.tolist()],
        }

    # -- checkpoints

    def _compat(self) -> dict[str, Any]:
        return {"model_format": FORMAT_VERSION,
                "model_params": {**dataclasses.asdict(self.params.model),
                                 "kinds": list(self.model.kinds)},
                "n_train": len(self.train_ds), "batch_size": self.tp.batch_size,
                "params_digest": self.params.digest()}

    def _save_checkpoint(self) -> None:
        """Write `step-XXXXXXXX.pt` (rank 0) with every rank's RNG state (a collective)."""
        self._flush()
        rng = gather_objects(rng_state(self.env.device), self.env)
        if not self.env.main:
            return
        payload = {
            "state": dataclasses.asdict(self.state), "model": self.model.state_dict(),
            "best_state": self.best_state, "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "noise": self.noise.get_state(),
            "rng": rng, "world_size": self.env.world, **self._compat(),
        }
        ckpts.write_checkpoint(self.store, self.state.step, payload)

    def _read_chosen(self) -> tuple[str, dict[str, Any]] | None:
        """Rank 0 picks the newest readable checkpoint and every rank loads that one (a
        collective): ranks never resume from different steps, whatever each would list."""
        cap = ckpts.size_cap(self.model, self.total_steps)
        found = ckpts.read_newest(self.store, cap) if self.env.main else None
        name = broadcast_object(found[0] if found else None, self.env)
        if name is None or found is not None:
            return found
        return name, ckpts.read_checkpoint(self.store, name, cap)

    def _load_checkpoint(self) -> None:
        chosen = self._read_chosen()
        if chosen is None:
            log.info("no checkpoint in %s: starting from scratch", self.store)
            return
        name, ckpt = chosen
        ckpts.check_compatible(ckpt, self._compat(), f"{self.store}/{name}")
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

    # -- final outputs

    def _run_params(self) -> dict[str, Any]:
        return {"run.world_size": self.env.world, "run.per_rank_batch": self.local_batch,
                "run.device": str(self.env.device), "run.n_train": len(self.train_ds),
                "run.data_order": "shards" if self.by_shard else "global",
                "run.n_val": len(self.val_ds), "run.steps_per_epoch": self.batches_per_epoch}

    def _final_model(self) -> MusicVAE:
        vae = copy.deepcopy(self.model).cpu().eval()
        if self.best_state is not None:
            vae.load_state_dict(self.best_state)
        return vae

    def _fit_prior(self, vae: MusicVAE) -> None:
        """Fit generation's latent prior to the training phrases' posteriors (`lpdvae.model.prior`;
        a seeded subset of at most FIT_PHRASES), unaugmented, with the final weights; and the
        bars' kernel density, its bandwidth chosen on validation phrases' posteriors."""
        # by shard: from rank 0's own shards (the ones it fetched), else from the whole split
        pool = (shard_order(self.train_ds.offsets, 0, self.env.world, None) if self.by_shard
                else list(range(len(self.train_ds))))
        order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(self.tp.seed))[:FIT_PHRASES]
        chosen = [pool[i] for i in order.sort().values.tolist()]
        if vae.presence is not None:
            self._fit_arrangements(vae, chosen)
        step = max(1, len(self.val_ds) // HELD_OUT_PHRASES)  # spread over the split's songs
        held = list(range(0, len(self.val_ds), step))[:HELD_OUT_PHRASES]
        if vae.latent_kde is not None:
            self._fit_latent_kde(vae, chosen, held)
            return
        if vae.prior.components == 0 and vae.bar_kde is None:
            return
        z = self._posteriors(vae, self.train_ds, chosen)
        vae.prior.fit(z[:, :vae.prior.dim], self.tp.seed)  # the phrase z alone under a bar prior or density
        if vae.bar_kde is not None:
            held_z = self._posteriors(vae, self.val_ds, held)
            scores = vae.bar_kde.fit(z[:, vae.phrase_dim:], held_z[:, vae.phrase_dim:], self.tp.seed)
            log.info("bar density bandwidth %.2f (held-out mean log-density by bandwidth: %s)",
                     float(vae.bar_kde.bandwidth), ", ".join(f"{h}: {v:.1f}" for h, v in scores.items()))

    def _fit_latent_kde(self, vae: MusicVAE, chosen: list[int], held: list[int]) -> None:
        """Keep the training phrases' posterior draws for generation's kernel density over whole
        z's, its width where samples sit as near the training phrases as the validation phrases
        `held` do (`lpdvae.training.latent_width`); no validation phrases: the width stays 1."""
        assert vae.latent_kde is not None
        vae.latent_kde.keep(self._posteriors(vae, self.train_ds, chosen), self.tp.seed)
        if not held:
            log.warning("no validation phrases: the latent density's width stays %.1f", float(vae.latent_kde.bandwidth))
            return
        medians = choose_width(vae, _codes(self.train_ds, chosen), _codes(self.val_ds, held), self.tp.transpose,
                               self.tp.seed)
        log.info("latent density width %.2f (median best match with a training phrase: validation %.3f; "
                 "samples by width: %s)", float(vae.latent_kde.bandwidth), medians.pop("held_out"),
                 ", ".join(f"{h}: {m:.3f}" for h, m in medians.items()))

    def _fit_arrangements(self, vae: MusicVAE, chosen: list[int]) -> None:
        """Keep how often each set of tracks plays together in the training phrases `chosen`, for
        generation to draw arrangements at those rates."""
        assert vae.presence is not None
        playing = torch.cat([tracks_playing(torch.stack([self.train_ds[i] for i in chosen[k:k + 1024]]))
                             for k in range(0, len(chosen), 1024)])
        vae.presence.fit_rates(playing.to(vae.presence.rates.device))
        log.info("arrangements: %d kinds in %d training phrases", int((vae.presence.rates > 0).sum()), len(playing))

    def _posteriors(self, vae: MusicVAE, ds: Any, indices: list[int]) -> Tensor:
        """`posterior_samples` of the phrases `indices` of `ds`, 256 at a time."""
        batches = (torch.stack([ds[i] for i in indices[k:k + 256]]) for k in range(0, len(indices), 256))
        return posterior_samples(vae.encode, batches, self.tp.seed)

    def _metrics(self) -> dict[str, Any]:
        st = self.state
        best = next((e for e in st.epochs_log if e["epoch"] == st.best_epoch), None)
        last = st.history[-1] if st.history else {}
        return {
            "epochs": st.epoch, "steps": st.step, "stopped_early": st.stopped_early,
            "best_epoch": st.best_epoch + 1 if best else None,
            "train_loss": last.get("loss"), "train_recon": last.get("recon"),
            "train_kl": last.get("kl"),
            **({k: v for k, v in best.items() if k.startswith("val_") and k != "val_kl_per_dim"}
               if best else {}),
            "kl_per_dim": best["val_kl_per_dim"] if best else [],
            "active_units": best["val_active_units"] if best else last.get("active_units"),
            "samples_per_s": st.train_samples / st.train_time_s if st.train_time_s else None,
            "train_time_s": st.train_time_s, "world_size": self.env.world,
            "global_batch_size": self.tp.batch_size, "n_train": len(self.train_ds),
            "n_val": len(self.val_ds), "device": self.env.device.type,
            "precision": "bf16" if self.amp else "fp32",
        }

    def _finish(self) -> TrainResult:
        metrics = self._metrics()
        if self.run_log is None:
            return make_result(self.out_dir, metrics, None)
        vae = self._final_model()
        self._fit_prior(vae)
        with atomic_dir(self.out_dir) as tmp:
            save_model(vae, tmp, self.params)
            atomic_write_json(tmp / METRICS_FILE, metrics)
            atomic_write_csv(tmp / HISTORY_FILE, self.state.history, HISTORY_COLUMNS)
            atomic_write_csv(tmp / EPOCHS_FILE, self.state.epochs_log, EPOCH_COLUMNS)
            info = self.run_log.log_model(vae, self.train_ds[0].numpy()[None], tmp)
            run = {"tracking_uri": self.run_log.tracking_uri,
                   "experiment_id": self.run_log.experiment_id,
                   "run_id": self.state.run_id, "model_uri": info.model_uri}
            atomic_write_json(tmp / RUN_FILE, run)
        self.run_log.finish(self.state.step, metrics)
        log.info("model in %s, MLflow run %s (%s)", self.out_dir, run["run_id"], run["model_uri"])
        return make_result(self.out_dir, metrics, run)


def _codes(ds: Any, indices: list[int]) -> Any:
    """The phrases `indices` of `ds` as one uint8 array `[n, T, B, S, P]`."""
    return torch.stack([ds[i] for i in indices]).numpy()


def run_rank(tensor_dir: str | Path, out_dir: Path, params: Params, resume: bool = False,
             checkpoints: str | Path | None = None) -> TrainResult:
    """Join the process group (if under torchrun), run the loop, leave the group; the
    deterministic-algorithms switch the loop turns on is restored for the caller. `checkpoints`:
    a folder or `s3://bucket/prefix` (default `<out_dir>.checkpoints/`)."""
    tensor_dir = str(tensor_dir).rstrip("/") if is_s3(tensor_dir) else Path(tensor_dir).resolve()
    out_dir = Path(out_dir).resolve()
    env = init_distributed(params.train.device)
    prev_det = torch.are_deterministic_algorithms_enabled()
    try:
        return Trainer(tensor_dir, out_dir, params, env, checkpoints).run(resume)
    finally:
        torch.use_deterministic_algorithms(prev_det)
        shutdown(env)
