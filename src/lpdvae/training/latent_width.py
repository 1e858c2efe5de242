"""The width of generation's kernel density over whole z's (`model.prior: kde`), chosen after
training on held-out phrases: the bandwidth at which the decoded samples sit as near the
training phrases as held-out (validation) phrases do, both measured as the copy check measures
(median note F1 with the closest training phrase over transpositions, `lpdvae.data.nearest`).

Why not the held-out likelihood (as the bars' density): in a 128-d z it picks the widest
bandwidth, whose samples decode to music further from every training phrase than real
held-out music, and narrower ones than this pick decode nearer the training phrases than new
music is (docs/decisions.md, 2026-12-06).
"""

from __future__ import annotations

import numpy as np

from lpdvae.data.nearest import nearest
from lpdvae.model.prior import KernelDensity
from lpdvae.model.vae import MusicVAE

SAMPLES = 128  # phrases decoded per bandwidth tried (evaluate's n_generated default)


def closest_width(medians: dict[float, float], target: float) -> float:
    """The bandwidth whose samples' median best match is closest to `target` (ties: the wider)."""
    return min(sorted(medians, reverse=True), key=lambda h: abs(medians[h] - target))


def choose_width(vae: MusicVAE, train: np.ndarray, held_out: np.ndarray, transpose: int,
                 seed: int) -> dict[str, float]:
    """Set `vae.latent_kde.bandwidth` (its rows kept already) to `closest_width` of the
    samples' median best match with `train` per bandwidth, against the held-out phrases'. From
    the widest down, stopping at the first bandwidth whose samples sit nearer than the held-out
    phrases (narrower ones sit nearer still). Returns `held_out` and each bandwidth tried's median."""
    kde = vae.latent_kde
    if kde is None or not kde.fitted:
        raise ValueError("choose_width needs a model with model.prior: kde and its rows kept")
    target = float(np.median(nearest(held_out, train, transpose).f1))
    medians: dict[float, float] = {}
    for h in sorted(KernelDensity.BANDWIDTHS, reverse=True):
        kde.bandwidth.fill_(h)
        samples = vae.sample(SAMPLES, seed, 1.0).numpy()
        medians[h] = float(np.median(nearest(samples, train, transpose).f1))
        if medians[h] >= target:
            break
    kde.bandwidth.fill_(closest_width(medians, target))
    return {"held_out": target, **{str(h): m for h, m in medians.items()}}
