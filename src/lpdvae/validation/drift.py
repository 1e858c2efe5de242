"""Data drift: this run's per-song statistics against those the champion was trained on.

Each statistic of validate's stats table (accepted songs only, both sides) is compared as a
distribution with scipy.stats: the two-sample Kolmogorov-Smirnov test says whether the two
samples plausibly come from one distribution (its p-value), and the Wasserstein (earth mover's)
distance divided by the reference's standard deviation says how far apart they are in units a
reader can judge ("the pitch range moved by 1.3 reference standard deviations"). A statistic has
drifted when both hold: p-value below `drift.p_value` *and* distance at least
`drift.min_distance`, so a tiny but significant shift in a large corpus does not count, nor does
a large-looking shift in a handful of songs that the test cannot tell from noise. The verdict is
`drift` when more than `drift.threshold` of the compared statistics drifted, `ok` otherwise, and
`no_reference` when there is nothing to compare with (first run, no registry): that passes.

Integer-valued statistics (bars, notes) have ties; scipy's exact/asymptotic KS p-value is then
conservative (drift is reported later, never sooner), which is the safe side for a gate.
"""

from __future__ import annotations

import html
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from lpdvae.errors import DataError
from lpdvae.io import atomic_write_json, atomic_write_text
from lpdvae.params import DriftParams

# Musical statistics of stats.csv compared (those present in both tables). Identifiers, text
# columns and constants of the representation (resolution) are not distributions of the data.
STATISTICS = ("n_source_tracks", "n_tracks_present", "tempo", "n_beats", "n_bars", "n_notes", "pitch_min",
              "pitch_max", "pitch_out_of_range_fraction", "empty_bar_ratio", "max_polyphony",
              "polyphonic_rate", "min_velocity", "max_velocity", "n_phrases")
VERDICTS = ("no_reference", "ok", "drift")
MIN_VALUES = 2  # fewer non-missing values on a side: the statistic is not compared


@dataclass(frozen=True)
class StatDrift:
    """One statistic's comparison."""

    statistic: str
    n_current: int
    n_reference: int
    current_mean: float | None
    reference_mean: float | None
    ks_statistic: float | None  # sup |F_current - F_reference|
    p_value: float | None
    distance: float | None  # Wasserstein distance / reference standard deviation
    drifted: bool
    note: str = ""  # why it was not compared, when it was not


@dataclass(frozen=True)
class DriftReport:
    verdict: str  # no_reference | ok | drift
    reason: str  # one line: why this verdict
    reference: dict[str, str] = field(default_factory=dict)  # champion version, run, data hash, where found
    statistics: list[StatDrift] = field(default_factory=list)
    thresholds: dict[str, float] = field(default_factory=dict)
    n_current: int = 0
    n_reference: int = 0

    @property
    def drifted(self) -> list[str]:
        return [s.statistic for s in self.statistics if s.drifted]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drifted": self.drifted}


def no_reference(reason: str, params: DriftParams) -> DriftReport:
    """The report when there is nothing to compare with: it passes."""
    return DriftReport("no_reference", reason, thresholds=_thresholds(params))


def compare(current: pd.DataFrame, reference: pd.DataFrame, params: DriftParams,
            reference_info: dict[str, str] | None = None) -> DriftReport:
    """Compare every statistic of STATISTICS present in both stats tables (one row per song)."""
    columns = [c for c in STATISTICS if c in current.columns and c in reference.columns]
    rows = [_compare_one(c, current[c], reference[c], params) for c in columns]
    compared = [r for r in rows if r.p_value is not None]
    drifted = [r.statistic for r in rows if r.drifted]
    info = dict(reference_info or {})
    if not compared:
        return DriftReport("no_reference", "no statistic could be compared (too few songs on a side)", info,
                           rows, _thresholds(params), len(current), len(reference))
    fraction = len(drifted) / len(compared)
    verdict = "drift" if fraction > params.threshold else "ok"
    reason = (f"{len(drifted)} of {len(compared)} statistics drifted ({fraction:.0%}; drift.threshold "
              f"{params.threshold:.0%})" + (f": {', '.join(drifted)}" if drifted else ""))
    return DriftReport(verdict, reason, info, rows, _thresholds(params), len(current), len(reference))


def enforce(report: DriftReport, params: DriftParams, where: str) -> None:
    """Stop the run (DataError, one line) when the verdict is drift and `drift.stop_on_drift` is set."""
    if report.verdict == "drift" and params.stop_on_drift:
        ref = report.reference.get("version", "?")
        raise DataError(f"data drift against champion version {ref}'s training data: {report.reason}; "
                        f"training stopped (drift.stop_on_drift); report: {where}")


def _compare_one(name: str, cur: pd.Series, ref: pd.Series, params: DriftParams) -> StatDrift:
    a = pd.to_numeric(cur, errors="coerce").dropna().to_numpy(dtype=float)
    b = pd.to_numeric(ref, errors="coerce").dropna().to_numpy(dtype=float)
    means = (float(a.mean()) if a.size else None, float(b.mean()) if b.size else None)
    if a.size < MIN_VALUES or b.size < MIN_VALUES:
        return StatDrift(name, a.size, b.size, *means, None, None, None, False,
                         f"fewer than {MIN_VALUES} values on a side")
    if np.unique(np.concatenate([a, b])).size == 1:  # carries no information: not in the drifted fraction
        return StatDrift(name, a.size, b.size, *means, None, None, None, False, "the same constant on both sides")
    ks = sps.ks_2samp(a, b)
    distance = float(sps.wasserstein_distance(a, b)) / _scale(b)
    p = float(ks.pvalue)
    return StatDrift(name, a.size, b.size, *means, float(ks.statistic), p, distance,
                     p < params.p_value and distance >= params.min_distance)


def _scale(values: np.ndarray) -> float:
    """The reference's spread; a constant reference falls back to its magnitude (or 1)."""
    std = float(values.std(ddof=1))
    if std > 0:
        return std
    return abs(float(values[0])) or 1.0


def _thresholds(params: DriftParams) -> dict[str, float]:
    return {"p_value": params.p_value, "min_distance": params.min_distance, "threshold": params.threshold,
            "stop_on_drift": params.stop_on_drift}


# --- HTML -------------------------------------------------------------------------------------

def _fmt(v: float | None, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}g}"


def section(report: DriftReport) -> str:
    """The drift report as an HTML fragment (a `<section>`), for the data docs page."""
    cls = {"drift": "fail", "ok": "pass"}.get(report.verdict, "")
    ref = report.reference
    where = (f"champion version {html.escape(ref.get('version', '?'))} (data {html.escape(ref.get('dvc_validated', '?'))},"
             f" read from {html.escape(ref.get('found_in', '?'))})" if ref else "none")
    rows = "".join(
        f"<tr><td><code>{html.escape(s.statistic)}</code></td><td>{_fmt(s.reference_mean)}</td>"
        f"<td>{_fmt(s.current_mean)}</td><td>{_fmt(s.ks_statistic)}</td><td>{_fmt(s.p_value)}</td>"
        f"<td>{_fmt(s.distance)}</td><td class=\"{'fail' if s.drifted else 'pass'}\">"
        f"{'drifted' if s.drifted else ('ok' if s.p_value is not None else html.escape(s.note))}</td></tr>"
        for s in report.statistics)
    table = ("<table><tr><th>statistic</th><th>reference mean</th><th>this run's mean</th><th>KS D</th>"
             "<th>KS p-value</th><th>distance (ref. SD)</th><th>verdict</th></tr>" + rows + "</table>") if rows else ""
    t = report.thresholds
    return (f'<section id="drift"><h2>Data drift against the champion\'s training data</h2>'
            f'<p class="verdict">Verdict: <span class="{cls}">{html.escape(report.verdict)}</span>: '
            f"{html.escape(report.reason)}</p><p>Reference: {where}; songs: {report.n_reference} reference, "
            f"{report.n_current} this run. A statistic drifts when its KS p-value &lt; {t.get('p_value')} "
            f"and its Wasserstein distance is at least {t.get('min_distance')} reference standard deviations; "
            f"the run drifts when more than {t.get('threshold')} of them do.</p>{table}</section>")


def page(report: DriftReport) -> str:
    """A standalone HTML page of `section` (inline CSS, no URL: works offline and in KFP's UI)."""
    from lpdvae.validation.suite_page import STYLE

    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>lpdvae data drift</title>"
            f"<style>{STYLE}</style></head><body>{section(report)}</body></html>\n")


def write(docs_dir: Path, report: DriftReport) -> Path:
    """`drift.json` and `drift.html` into the data docs folder (atomically), and the report as a
    section of its `index.html` (a link at the top, the section before `</body>`); returns drift.json."""
    docs_dir = Path(docs_dir)
    path = atomic_write_json(docs_dir / "drift.json", report.to_dict())
    atomic_write_text(docs_dir / "drift.html", page(report))
    index = docs_dir / "index.html"
    if index.exists():
        text = index.read_text(encoding="utf-8")
        link = (f'<p>Data drift: <a href="#drift">{html.escape(report.verdict)}</a> '
                '(<a href="drift.html">drift.html</a>, <a href="drift.json">drift.json</a>)</p>')
        text = text.replace("</h1>", "</h1>" + link, 1)
        text = text.replace("</body>", section(report) + "</body>", 1) if "</body>" in text else text + section(report)
        atomic_write_text(index, text)
    return path
