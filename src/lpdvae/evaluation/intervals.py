"""Song-bootstrap intervals of evaluation figures.

Phrases of one song are alike (same key, same tune, overlapping windows), so they are not
independent draws: a resample draws *songs* with replacement and keeps all their phrases. Each
resample is a weight per phrase (how often its song was drawn), so every figure of every model
is recomputed on the same resamples as one matrix product: paired differences come for free.
Generated phrases are independent draws and are resampled one by one.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np

from lpdvae.evaluation.significance import Interval


def group_index(songs: np.ndarray | None, n: int) -> np.ndarray:
    """`[n]` song number of each phrase (0..G-1); every phrase its own song when `songs` is None."""
    if songs is None:
        return np.arange(n)
    _, inverse = np.unique(np.asarray(songs, dtype=str)[:n], return_inverse=True)
    return inverse.reshape(-1)


def resample_weights(groups: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """`[resamples, n]` phrase weights: each resample draws as many groups as there are, with
    replacement, and weights each phrase by how often its group was drawn."""
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, max(n_groups, 1), (resamples, n_groups))
    counts = np.zeros((resamples, max(n_groups, 1)), dtype=np.float64)
    np.add.at(counts, (np.arange(resamples)[:, None], drawn), 1.0)
    return counts[:, groups] if len(groups) else np.zeros((resamples, 0))


def f1_of_counts(counts: np.ndarray) -> np.ndarray:
    """Micro note F1 of `[..., 3]` summed counts (correct, predicted, true); 1 when both are empty."""
    tp, n_pred, n_true = counts[..., 0], counts[..., 1], counts[..., 2]
    total = n_pred + n_true
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 2 * tp / total, 1.0)


def f1_draws(counts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """`[R]` micro note F1 of per-phrase `counts` `[n, 3]` under each resample's weights."""
    return f1_of_counts(weights @ np.asarray(counts, dtype=np.float64))


def interval(estimate: float, draws: np.ndarray, confidence: float) -> Interval:
    """The percentile interval of the finite `draws` around `estimate` (NaN bounds if none)."""
    draws = np.asarray(draws, dtype=np.float64)
    draws = draws[np.isfinite(draws)]
    if not draws.size:
        return Interval(float(estimate), float("nan"), float("nan"), confidence, 0)
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return Interval(float(estimate), float(low), float(high), confidence, int(draws.size))


def stat_draws(per: Mapping[str, np.ndarray], stat: str, weights: np.ndarray) -> np.ndarray:
    """`[R]` track mean of `stat` (`stat/track` keys) under each resample's phrase weights, as
    `metrics.aggregate_metrics` averages: per key over the phrases defining it, then over keys."""
    columns = []
    for key, values in per.items():
        if key.split("/")[0] != stat:
            continue
        finite = np.isfinite(values)
        with np.errstate(invalid="ignore", divide="ignore"):
            columns.append((weights @ np.where(finite, values, 0.0)) / (weights @ finite.astype(np.float64)))
    if not columns:
        return np.full(len(weights), np.nan)
    with warnings.catch_warnings():  # a resample where no key is defined is NaN, as intended
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.stack(columns, 1), 1)


def put_interval(metrics: dict[str, float], key: str, ci: Interval) -> None:
    """`key`, `key.lo` and `key.hi` into `metrics`."""
    metrics[key], metrics[f"{key}.lo"], metrics[f"{key}.hi"] = ci.estimate, ci.low, ci.high


def reconstruction_intervals(model: np.ndarray, baselines: Mapping[str, np.ndarray], weights: np.ndarray,
                             confidence: float) -> dict[str, float]:
    """`recon_note_f1`, `baseline.<name>.recon_note_f1` and the paired `margin.<name>` (model -
    baseline), each with `.lo`/`.hi`, from per-phrase note counts `[n, 3]` on the same resamples."""
    out: dict[str, float] = {}
    model_draws = f1_draws(model, weights)
    f1 = float(f1_of_counts(np.asarray(model).sum(0)))
    put_interval(out, "recon_note_f1", interval(f1, model_draws, confidence))
    for name, counts in baselines.items():
        base, draws = float(f1_of_counts(np.asarray(counts).sum(0))), f1_draws(counts, weights)
        put_interval(out, f"baseline.{name}.recon_note_f1", interval(base, draws, confidence))
        put_interval(out, f"margin.{name}", interval(f1 - base, model_draws - draws, confidence))
    return out
