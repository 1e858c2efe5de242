"""The gate: may this model be promoted? Every number comes from `evaluate` params; every
figure it reads is in metrics.json with its song-bootstrap interval (`lpdvae.steps.evaluate`).

Blessed only when
- reconstruction beats every cheap predictor (`lpdvae.evaluation.baselines`): the lower bound of
  the paired interval of (model - baseline) note F1 is above `min_margin` for each, so the best
  baseline too (a lookup table of training phrases included); and it reaches `min_note_f1`;
- every gated statistic of generated music is within `stat_rel_tolerance` of the data's (or
  `stat_abs_floor`), plus the distance between the validation and test splits' own values, over
  its whole interval of (generated - data): real held-out music (the validation phrases) must
  pass the gate it sets, and the splits' songs differ (on the demo, pitch classes per bar are
  3.15 on val and 3.47 on test, beyond 10 %: docs/decisions.md); a statistic constant on both
  sides (e.g. polyphony of monophonic voices: zero by construction) is reported, not gated;
- the samples are diverse, and the copy check calibrated on real held-out phrases passes: the
  share of samples whose best match with a training phrase is >= `copy_match` is not
  significantly above the validation phrases' share (one-sided binomial test at `copy_alpha`),
  and the samples' median best match is not below the validation phrases' `fidelity_quantile`
  (samples further from every training phrase than real held-out music are not fidelity).
"""

from __future__ import annotations

import math

from lpdvae.evaluation.baselines import BASELINES
from lpdvae.params import EvaluateParams


def allowed_gap(reference: float, ev: EvaluateParams, split_gap: float = 0.0) -> float:
    """How far generated music may sit from the data: the tolerance, plus how far the validation
    split's own value sits from the data's (`split_gap.<stat>` in metrics.json)."""
    return max(ev.stat_rel_tolerance * abs(reference), ev.stat_abs_floor) + abs(split_gap)


def statistic_reasons(metrics: dict[str, float], ev: EvaluateParams,
                      keys: tuple[str, ...] | None = None) -> list[str]:
    """Each gated statistic (or each of `keys`) whose (generated - data) interval reaches past
    the allowed gap."""
    reasons = []
    for key in ev.statistics if keys is None else keys:
        gen, ref = metrics.get(f"generated.{key}"), metrics.get(f"reference.{key}")
        if ref is None or metrics.get(f"constant.{key}") == 1.0:
            continue  # not defined for this data, or the same constant on both sides
        if gen is None:
            reasons.append(f"{key}: not measured on generated music (no notes)")
            continue
        gap = allowed_gap(ref, ev, metrics.get(f"split_gap.{key}", 0.0))
        lo, hi = metrics.get(f"gap.{key}.lo", gen - ref), metrics.get(f"gap.{key}.hi", gen - ref)
        if not (-gap <= lo and hi <= gap):
            reasons.append(f"{key}: generated {gen:.3f} vs data {ref:.3f}, difference interval "
                           f"[{lo:+.3f}, {hi:+.3f}] not within +-{gap:.3f}")
    return reasons


def baseline_reasons(metrics: dict[str, float], ev: EvaluateParams) -> list[str]:
    """The floor, then each baseline the model does not beat by `min_margin` over the interval."""
    f1 = metrics["recon_note_f1"]
    reasons = [f"recon_note_f1 {f1:.3f} < min_note_f1 {ev.min_note_f1}"] if f1 < ev.min_note_f1 else []
    for name in BASELINES:
        lo = metrics.get(f"margin.{name}.lo")
        if lo is None:
            continue
        if not lo > ev.min_margin:
            base = metrics[f"baseline.{name}.recon_note_f1"]
            reasons.append(f"recon_note_f1 {f1:.3f} vs the {name} baseline's {base:.3f}: lower bound of "
                           f"the difference {lo:+.3f} not above min_margin {ev.min_margin}")
    return reasons


def copy_reasons(metrics: dict[str, float], ev: EvaluateParams) -> list[str]:
    """The calibrated copy check (see the module docstring)."""
    reasons = []
    p_value = metrics.get("copy.p_value")
    if p_value is not None and p_value < ev.copy_alpha:
        reasons.append(f"copying: {metrics['copy.share_at_match']:.1%} of samples match a training phrase "
                       f"with note F1 >= {ev.copy_match}, validation phrases "
                       f"{metrics['copy.val_share_at_match']:.1%} (binomial p = {p_value:.2g} < {ev.copy_alpha})")
    median, floor = metrics.get("copy.median_best_match"), metrics.get("copy.val_floor")
    if ev.fidelity_quantile > 0 and median is not None and floor is not None and median < floor:
        reasons.append(f"fidelity: the samples' median best match with a training phrase {median:.3f} is below "
                       f"the validation phrases' {ev.fidelity_quantile:.0%} quantile {floor:.3f}")
    return reasons


def bless(metrics: dict[str, float], ev: EvaluateParams) -> list[str]:
    """Reasons the candidate fails; empty means blessed."""
    reasons = baseline_reasons(metrics, ev) + statistic_reasons(metrics, ev)
    unique = metrics["diversity.unique_fraction"]
    if unique < ev.min_unique_fraction:
        reasons.append(f"diversity: {unique:.0%} of generated phrases are distinct "
                       f"(< {ev.min_unique_fraction:.0%})")
    return reasons + copy_reasons(metrics, ev)


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
