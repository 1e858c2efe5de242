"""The gate: may this model be promoted? Every number comes from `evaluate` params.

Blessed only when reconstruction beats the average-cell baseline by `baseline_factor` (and
reaches `min_note_f1`), every gated statistic of generated music is within `stat_rel_tolerance`
of the data's (or `stat_abs_floor` for near-zero statistics), the samples are diverse and none
copies a training phrase. A model that ignores z fails the first rule; one that memorises fails
the last; one that always plays the same phrase fails diversity.
"""

from __future__ import annotations

import math

from lpdvae.params import EvaluateParams


def allowed_gap(reference: float, ev: EvaluateParams) -> float:
    return max(ev.stat_rel_tolerance * abs(reference), ev.stat_abs_floor)


def statistic_reasons(metrics: dict[str, float], ev: EvaluateParams,
                      generated: str = "generated", reference: str = "reference") -> list[str]:
    reasons = []
    for key in ev.statistics:
        gen, ref = metrics.get(f"{generated}.{key}"), metrics.get(f"{reference}.{key}")
        if ref is None:
            continue  # not defined for this data (e.g. drum patterns without a drum track)
        if gen is None:
            reasons.append(f"{key}: not measured on generated music (no notes)")
        elif abs(gen - ref) > allowed_gap(ref, ev):
            reasons.append(f"{key}: generated {gen:.3f} vs data {ref:.3f} "
                           f"(allowed gap {allowed_gap(ref, ev):.3f})")
    return reasons


def bless(metrics: dict[str, float], ev: EvaluateParams) -> list[str]:
    """Reasons the candidate fails; empty means blessed."""
    reasons = []
    f1, base = metrics["recon_note_f1"], metrics["baseline.recon_note_f1"]
    if f1 < ev.min_note_f1:
        reasons.append(f"recon_note_f1 {f1:.3f} < min_note_f1 {ev.min_note_f1}")
    if f1 < ev.baseline_factor * base:
        reasons.append(f"recon_note_f1 {f1:.3f} < {ev.baseline_factor} x the average-cell "
                       f"baseline's {base:.3f}")
    reasons += statistic_reasons(metrics, ev)
    unique = metrics["diversity.unique_fraction"]
    if unique < ev.min_unique_fraction:
        reasons.append(f"diversity: {unique:.0%} of generated phrases are distinct "
                       f"(< {ev.min_unique_fraction:.0%})")
    copy = metrics["copy.nearest_train_note_f1"]
    if copy > ev.max_copy_note_f1:
        reasons.append(f"copying: a generated phrase matches a training phrase with note F1 "
                       f"{copy:.3f} (> {ev.max_copy_note_f1})")
    return reasons


def closest_temperature(candidates: dict[float, dict[str, float]], val_stats: dict[str, float],
                        ev: EvaluateParams) -> float:
    """The temperature whose generated statistics sit closest to the validation split's: the
    largest gap in units of the allowed gap, smallest wins (ties: the first listed)."""
    def worst(stats: dict[str, float]) -> float:
        gaps = []
        for key in ev.statistics:
            if key in val_stats:
                gen = stats.get(key)
                gaps.append(math.inf if gen is None else
                            abs(gen - val_stats[key]) / allowed_gap(val_stats[key], ev))
        return max(gaps, default=0.0)

    return min(candidates, key=lambda t: worst(candidates[t]))
