"""lpdvae.validation.drift.compare on known distributions: same distribution ok, shifted one drift."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lpdvae.errors import DataError
from lpdvae.params import DriftParams
from lpdvae.validation import drift

PARAMS = DriftParams(p_value=0.01, min_distance=0.25, threshold=0.2, stop_on_drift=True)


def table(seed: int, n: int = 300, pitch_shift: float = 0.0, notes_scale: float = 1.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "path": [f"s{i}.mid" for i in range(n)],
        "pitch_min": rng.normal(40, 5, n) + pitch_shift,
        "pitch_max": rng.normal(75, 5, n) + pitch_shift,
        "n_notes": rng.poisson(200, n) * notes_scale,
        "n_bars": rng.integers(8, 40, n),
        "empty_bar_ratio": rng.beta(1, 20, n),
        "source_tracks": ["soprano|bass"] * n,  # text: not a statistic
    })


def test_samples_of_one_distribution_are_ok():
    report = drift.compare(table(1), table(2), PARAMS)
    assert report.verdict == "ok" and report.drifted == []
    assert [s.statistic for s in report.statistics] == ["n_bars", "n_notes", "pitch_min", "pitch_max",
                                                         "empty_bar_ratio"]


def test_a_transposition_drifts_the_pitch_statistics_only():
    report = drift.compare(table(1, pitch_shift=7), table(2), PARAMS)
    assert report.verdict == "drift" and report.drifted == ["pitch_min", "pitch_max"]
    by = {s.statistic: s for s in report.statistics}
    assert by["pitch_min"].distance == pytest.approx(7 / 5, rel=0.2)  # ~7 semitones in reference SDs
    assert "2 of 5 statistics drifted" in report.reason and "pitch_min, pitch_max" in report.reason


def test_a_significant_but_tiny_shift_is_not_drift():
    report = drift.compare(table(1, n=20000, pitch_shift=0.5), table(2, n=20000), PARAMS)
    by = {s.statistic: s for s in report.statistics}
    assert by["pitch_min"].p_value < 1e-6 and by["pitch_min"].distance < 0.25
    assert report.verdict == "ok"


def test_a_large_shift_in_a_handful_of_songs_is_not_significant():
    report = drift.compare(table(1, n=3, notes_scale=1.3), table(2, n=3), PARAMS)
    assert report.verdict == "ok"


def test_drifted_fraction_at_the_threshold_is_ok():
    params = DriftParams(p_value=0.01, min_distance=0.25, threshold=0.4, stop_on_drift=True)
    assert drift.compare(table(1, pitch_shift=7), table(2), params).verdict == "ok"  # 2 of 5 = 0.4


def test_a_statistic_constant_on_both_sides_is_not_counted():
    cur, ref = table(1, pitch_shift=7), table(2)
    cur["tempo"], ref["tempo"] = 100.0, 100.0
    report = drift.compare(cur, ref, PARAMS)
    tempo = next(s for s in report.statistics if s.statistic == "tempo")
    assert tempo.p_value is None and tempo.note and "2 of 5 statistics" in report.reason


def test_too_few_values_are_not_compared():
    report = drift.compare(table(1, n=1), table(2), PARAMS)
    assert report.verdict == "no_reference" and all(s.note for s in report.statistics)


def test_enforce_stops_a_drifting_run_naming_the_statistics():
    report = drift.compare(table(1, pitch_shift=7), table(2), PARAMS, {"version": "3"})
    with pytest.raises(DataError, match=r"champion version 3.*pitch_min, pitch_max.*drift.stop_on_drift"):
        drift.enforce(report, PARAMS, "reports/data_docs/drift.html")


def test_enforce_lets_a_drift_pass_without_stop_on_drift():
    report = drift.compare(table(1, pitch_shift=7), table(2), PARAMS)
    assert report.verdict == "drift"  # what stop_on_drift would stop
    assert drift.enforce(report, DriftParams(0.01, 0.25, 0.2, stop_on_drift=False), "x") is None


def test_enforce_lets_a_run_without_a_reference_pass_under_stop_on_drift():
    report = drift.no_reference("no champion yet", PARAMS)
    assert report.verdict == "no_reference" and PARAMS.stop_on_drift
    assert drift.enforce(report, PARAMS, "x") is None


def test_write_adds_json_html_and_a_section_to_the_data_docs(tmp_path):
    (tmp_path / "index.html").write_text("<html><body><h1>suite</h1><p>x</p></body></html>")
    report = drift.compare(table(1, pitch_shift=7), table(2), PARAMS, {"version": "3"})
    drift.write(tmp_path, report)
    data = json.loads((tmp_path / "drift.json").read_text())
    assert data["verdict"] == "drift" and data["drifted"] == ["pitch_min", "pitch_max"]
    index = (tmp_path / "index.html").read_text()
    assert 'href="drift.html"' in index and '<section id="drift">' in index and index.endswith("</html>")
    assert "pitch_min" in (tmp_path / "drift.html").read_text()
