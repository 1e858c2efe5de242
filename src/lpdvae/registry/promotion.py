"""May a blessed challenger replace the champion? Only when the difference is not noise.

Both models were measured on the same frozen evaluation set (`lpdvae.evaluation.evalset`). A seeded paired
bootstrap (`lpdvae.evaluation.significance`) gives the interval of challenger − champion for reconstruction
note F1 (micro F1 over the resampled evaluation-set (validation) phrases) and, for each gated statistic, for its
distance to the data |generated − reference| (generated phrases and validation phrases resampled;
lower is better). The rule:

- not blessed by the gate (`lpdvae.evaluation.gate`): not promoted;
- no champion yet: promoted (the first version has nothing to beat);
- otherwise promoted only when the note-F1 interval lies wholly above 0 AND no statistic's
  distance interval lies wholly above 0 (significantly further from the data). A statistic
  the challenger cannot measure (it generates no notes for it) counts as worse; one the champion
  cannot measure is not compared.

The verdict, its one-line summary and every reason become `lpdvae.registry.promotion.*` tags.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lpdvae.evaluation.evalset import PerPhrase
from lpdvae.evaluation.metrics import aggregate_metrics, f1_from_counts
from lpdvae.evaluation.significance import Interval, paired_bootstrap
from lpdvae.params import RegisterParams
from lpdvae.registry.tracking import MAX_TAG_CHARS

PROMOTED = "promoted"
NOT_PROMOTED = "not promoted"
TAG = "lpdvae.promotion"


@dataclass(frozen=True)
class Comparison:
    """Challenger − champion on one evaluation set: note F1 and each statistic's distance."""

    champion_version: str
    set_id: str
    f1: tuple[float, float]  # (challenger, champion) on the set
    recon_note_f1: Interval
    distances: dict[str, Interval]  # statistic -> interval of the distance difference
    distance_values: dict[str, tuple[float, float]]  # statistic -> (challenger, champion) distance
    unmeasured: dict[str, str] = field(default_factory=dict)  # statistic -> which side lacks it


@dataclass(frozen=True)
class Verdict:
    promote: bool
    summary: str
    reasons: list[str]


def _stat(per: dict[str, np.ndarray], stat: str, idx: np.ndarray | None) -> float:
    """The track mean of `stat` over the phrases at `idx` (as evaluate aggregates it); NaN if none."""
    value = aggregate_metrics({k: v for k, v in per.items() if k.startswith(stat + "/")}, idx).get(stat)
    return float("nan") if value is None else value


def compare(challenger: PerPhrase, champion: PerPhrase, champion_version: str, statistics: tuple[str, ...],
            rp: RegisterParams) -> Comparison:
    """The intervals; both records must come from the same evaluation set and generation size."""
    if challenger.set_id != champion.set_id:
        raise ValueError(f"the champion was measured on evaluation set {champion.set_id[:12]}…, the challenger "
                         f"on {challenger.set_id[:12]}…")
    n_test = len(challenger.note_counts)
    n_gen = int(challenger.info["n_generated"])
    if int(champion.info["n_generated"]) != n_gen:
        raise ValueError(f"the champion generated {champion.info['n_generated']} phrases, the challenger {n_gen}")
    settings = {"resamples": rp.bootstrap_resamples, "confidence": rp.confidence, "seed": rp.seed}
    mine, theirs = challenger.note_counts, champion.note_counts
    f1 = paired_bootstrap(lambda i: f1_from_counts(mine[i]) - f1_from_counts(theirs[i]), [n_test], **settings)
    ref = challenger.reference
    distances, values, unmeasured = {}, {}, {}
    for stat in statistics:
        if np.isnan(_stat(ref, stat, None)):
            continue  # not defined for this data (as in the gate)
        if np.isnan(_stat(challenger.generated, stat, None)):
            unmeasured[stat] = "challenger"
            continue
        if np.isnan(_stat(champion.generated, stat, None)):
            unmeasured[stat] = "champion"
            continue

        def gap(g: np.ndarray, r: np.ndarray, s: str = stat) -> float:
            data = _stat(ref, s, r)
            return abs(_stat(challenger.generated, s, g) - data) - abs(_stat(champion.generated, s, g) - data)

        distances[stat] = paired_bootstrap(gap, [n_gen, n_test], **settings)
        data = _stat(ref, stat, None)
        values[stat] = (abs(_stat(challenger.generated, stat, None) - data),
                        abs(_stat(champion.generated, stat, None) - data))
    return Comparison(champion_version, challenger.set_id, (f1_from_counts(mine), f1_from_counts(theirs)),
                      f1, distances, values, unmeasured)


def decide(blessed: bool, blessing_reasons: list[str], champion_version: str | None,
           comparison: Comparison | None, not_compared: str | None, auto_promote: bool) -> Verdict:
    """Apply the rule above; `not_compared` says why a comparison with an existing champion failed."""
    reasons: list[str] = []
    if not blessed:
        reasons.append("not blessed by evaluation: " + ("; ".join(blessing_reasons) or "no reason recorded"))
        return _verdict(False, reasons[0], reasons, auto_promote)
    reasons.append("blessed by evaluation (every gate passed)")
    if champion_version is None:
        reasons.append("first version: no champion to compare with")
        return _verdict(True, "first version: no champion to compare with", reasons, auto_promote)
    if comparison is None:
        why = f"not compared with champion v{champion_version}: {not_compared or 'unknown reason'}"
        reasons.append(why)
        return _verdict(False, why, reasons, auto_promote)
    c, level = comparison, f"{comparison.recon_note_f1.confidence:.0%}"
    better = c.recon_note_f1.above_zero()
    reasons.append(f"recon_note_f1 {c.f1[0]:.4f} vs champion v{c.champion_version}'s {c.f1[1]:.4f}: "
                   f"difference {c.recon_note_f1} ({level}): "
                   + ("better (interval above 0)" if better else "not significantly better (interval reaches 0)"))
    worse = []
    for stat, ci in c.distances.items():
        mine, theirs = c.distance_values[stat]
        if ci.above_zero():
            worse.append(stat)
        reasons.append(f"{stat} distance to data {mine:.4f} vs {theirs:.4f}: difference {ci} ({level}): "
                       + ("significantly worse" if ci.above_zero() else
                          "significantly closer" if ci.below_zero() else "not significantly worse"))
    for stat, side in c.unmeasured.items():
        if side == "challenger":
            worse.append(stat)
        reasons.append(f"{stat}: not measured on the {side}'s generated music"
                       + (" (counts as worse)" if side == "challenger" else " (not compared)"))
    if better and not worse:
        summary = (f"recon_note_f1 {c.recon_note_f1} over champion v{c.champion_version}, "
                   "no statistic significantly worse")
    elif not better:
        summary = (f"recon_note_f1 {c.recon_note_f1} vs champion v{c.champion_version}: "
                   f"not significantly better at {level}")
        if worse:
            summary += f"; significantly further from the data: {', '.join(worse)}"
    else:
        summary = f"significantly further from the data than champion v{c.champion_version}: {', '.join(worse)}"
    return _verdict(better and not worse, summary, reasons, auto_promote)


def _verdict(earned: bool, summary: str, reasons: list[str], auto_promote: bool) -> Verdict:
    if earned and not auto_promote:
        return Verdict(False, f"would be promoted, but register.auto_promote is off ({summary})",
                       [*reasons, "register.auto_promote is off: promote by hand"])
    return Verdict(earned, f"{PROMOTED if earned else NOT_PROMOTED}: {summary}", reasons)


def tags(verdict: Verdict, comparison: Comparison | None, rp: RegisterParams) -> dict[str, str]:
    """`lpdvae.registry.promotion.*` tags of the challenger version."""
    out = {f"{TAG}.verdict": PROMOTED if verdict.promote else NOT_PROMOTED,
           f"{TAG}.summary": verdict.summary[:MAX_TAG_CHARS],
           f"{TAG}.reasons": "; ".join(verdict.reasons)[:MAX_TAG_CHARS],
           f"{TAG}.champion": comparison.champion_version if comparison else ""}
    if comparison is not None:
        out[f"{TAG}.recon_note_f1"] = str(comparison.recon_note_f1)
        out.update({f"{TAG}.distance.{k}": str(v) for k, v in comparison.distances.items()})
        out.update({f"{TAG}.confidence": repr(rp.confidence), f"{TAG}.resamples": str(rp.bootstrap_resamples),
                    f"{TAG}.seed": str(rp.seed)})
    return out


def record(verdict: Verdict, comparison: Comparison | None) -> dict[str, Any]:
    """The JSON written beside the card (promotion.json)."""
    def iv(ci: Interval) -> dict[str, float]:
        return {"estimate": ci.estimate, "low": ci.low, "high": ci.high, "confidence": ci.confidence,
                "resamples": ci.resamples}

    out: dict[str, Any] = {"promoted": verdict.promote, "summary": verdict.summary, "reasons": verdict.reasons}
    if comparison is not None:
        out["champion"] = {"version": comparison.champion_version, "evaluation_set": comparison.set_id,
                           "recon_note_f1": {"challenger": comparison.f1[0], "champion": comparison.f1[1],
                                             "difference": iv(comparison.recon_note_f1)},
                           "distances": {k: {"challenger": comparison.distance_values[k][0],
                                             "champion": comparison.distance_values[k][1],
                                             "difference": iv(v)} for k, v in comparison.distances.items()},
                           "unmeasured": comparison.unmeasured}
    return out
