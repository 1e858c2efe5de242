"""The copy check, calibrated on real held-out music.

Real validation phrases come close to training phrases too (Bach reharmonised his tunes; a
cadence is a cadence), so "no sample closer than X to a training phrase" with a fixed X refuses
real music or passes copies. Instead the samples' best matches (note F1 with the closest training
phrase, the same transpositions as the copy baseline) are compared with the validation phrases'
best matches against the same training phrases:
- copying: the share of samples with a best match >= `copy_match` is significantly above the
  validation share (one-sided exact binomial test; the validation share gets add-one smoothing,
  (k + 1) / (n + 2), so a validation set without such matches does not make one sample a proof);
- infidelity: the samples' median best match is below the validation phrases'
  `fidelity_quantile` quantile: further from every training phrase than real held-out music.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest

from lpdvae.data.nearest import nearest
from lpdvae.params import EvaluateParams


def copy_check(samples: np.ndarray, val: np.ndarray, train: np.ndarray, transpose: int,
               ev: EvaluateParams) -> dict[str, float]:
    """`copy.*` figures the gate reads (`lpdvae.evaluation.gate.copy_reasons`)."""
    best_samples = nearest(samples, train, transpose).f1
    best_val = nearest(val, train, transpose).f1
    return calibrated(best_samples, best_val, ev)


def calibrated(best_samples: np.ndarray, best_val: np.ndarray, ev: EvaluateParams) -> dict[str, float]:
    """The check on best-match note F1s already measured (samples, validation phrases)."""
    k = int(np.count_nonzero(best_samples >= ev.copy_match))
    k_val = int(np.count_nonzero(best_val >= ev.copy_match))
    p0 = (k_val + 1) / (len(best_val) + 2)
    p_value = binomtest(k, len(best_samples), p0, alternative="greater").pvalue if len(best_samples) else 1.0
    out = {"copy.share_at_match": k / max(len(best_samples), 1),
           "copy.val_share_at_match": k_val / max(len(best_val), 1),
           "copy.p_value": float(p_value),
           "copy.median_best_match": float(np.median(best_samples)) if len(best_samples) else 0.0,
           "copy.nearest_train_note_f1": float(best_samples.max()) if len(best_samples) else 0.0}
    if len(best_val):
        out["copy.val_median_best_match"] = float(np.median(best_val))
        out["copy.val_floor"] = float(np.quantile(best_val, ev.fidelity_quantile))
    return out
