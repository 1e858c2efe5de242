"""The training objective: the negative ELBO with free nats and KL warm-up (`vae_loss`), its KL
terms, the hold-pitch term, and the active-unit count reported beside it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lpdvae.data.codes import highest_pitch, mono_classes
from lpdvae.model.prior import kl_per_sample_dim
from lpdvae.model.vae import MusicVAE, Outputs

ACTIVE_UNIT_THRESHOLD = 0.01  # variance of E[z|x]: the usual "active unit" cut-off


def free_nats_kl(kl_per_sample: Tensor, free_nats: float) -> Tensor:
    """max(KL - free_nats, 0) per sample (MusicVAE's free bits on the *total* KL): the first
    `free_nats` of information in z cost nothing, so the latent carries enough to reconstruct.
    Per sample, so DDP's mean of per-rank means equals one process exactly."""
    return torch.clamp(kl_per_sample - free_nats, min=0.0)


def hold_pitch_nll(vae: MusicVAE, out: Outputs, x: Tensor, mono_target: Tensor | None = None) -> Tensor:
    """`[N]` nats: -log p(pitch) of the pitch each monophonic track sounds at its held steps,
    under the pitch head's distribution. Not part of the likelihood (a held step's pitch is
    its onset's): an auxiliary target that gives the pitch head a signal at every sounding step.
    `mono_target` as in `MusicVAE.recon_nll`."""
    if not vae.mono_tracks:
        return x.new_zeros(x.shape[0], dtype=torch.float32)
    codes = x[:, vae.mono_tracks]
    target = mono_classes(codes) if mono_target is None else mono_target
    held = target == codes.shape[-1]  # [N, Tm, B, S]: HOLD, as the likelihood reads it
    sounding = highest_pitch(codes > 0)
    pitch_logp = torch.log_softmax(out[0][..., :-2].float(), dim=-1)
    nll = -pitch_logp.gather(-1, sounding.unsqueeze(-1)).squeeze(-1)
    return (nll * held).flatten(1).sum(1)


def vae_loss(vae: MusicVAE, out: Outputs, x: Tensor, mu: Tensor, logvar: Tensor, beta: float,
             free_nats: float, hold_pitch_weight: float = 0.0, prior_fit: Tensor | None = None) -> dict[str, Tensor]:
    """Batch-mean loss = NLL + hold_pitch_weight * hold-pitch NLL + beta * max(KL - free_nats, 0)
    + the learned bar prior's fit (`MusicVAE.forward`'s fourth output, when given).

    Returns `loss`, `recon` (NLL nats per phrase), `hold_pitch` (the auxiliary term's nats per
    phrase), `kl` (true total KL nats per phrase), `prior_fit` (nats per phrase) and `kl_per_dim`
    `[D]` (batch mean)."""
    mono_target = mono_classes(x[:, vae.mono_tracks]) if vae.mono_tracks else None  # once for both terms
    recon = vae.recon_nll(out, x, mono_target).mean()
    hold = hold_pitch_nll(vae, out, x, mono_target).mean()
    kl_dim = kl_per_sample_dim(mu.float(), logvar.float())
    kl = kl_dim.sum(1)
    fit = prior_fit.float().mean() if prior_fit is not None else kl.new_zeros(())
    loss = recon + hold_pitch_weight * hold + beta * free_nats_kl(kl, free_nats).mean() + fit
    return {"loss": loss, "recon": recon, "hold_pitch": hold, "kl": kl.mean(), "prior_fit": fit,
            "kl_per_dim": kl_dim.mean(0)}


def active_units(variance: Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """Latent dims carrying information: Var_x E[z_d|x] (or KL_d) above `threshold`."""
    return int((variance > threshold).sum().item())
