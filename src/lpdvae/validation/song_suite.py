"""The Great Expectations suite over validate's per-song stats table, and its data docs.

Each `Check` is one expectation with the quarantine reason its unexpected rows get; the
thresholds come from params `validate`. `run_suite` runs them over the whole table as one
batch (GX 1.x, ephemeral context), turns GX's unexpected row indices into per-song failure
details, and writes the data docs: one self-contained page (`lpdvae.validation.suite_page`) instead of
GX's site, whose CDN-hosted styles and scripts do not load offline or in the KFP UI. Importing
GX is slow (seconds), so it happens inside `run_suite`, never at import time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lpdvae.params import Params
from lpdvae.validation import suite_page


@dataclass(frozen=True)
class Check:
    """One expectation of the suite and the quarantine reason its unexpected rows get."""

    reason: str
    column: str
    kind: str  # "between" | "in_set" | "unique"
    min_value: float | None = None
    max_value: float | None = None
    value_set: tuple[str, ...] = ()


def checks(params: Params) -> list[Check]:
    """The expectations, thresholds from params.validate."""
    v = params.validate
    out = [
        Check("duplicate", "song_id", "unique"),
        Check("no_configured_tracks", "n_tracks_present", "between", min_value=1),
        Check("nan_values", "nan_cells", "between", max_value=0),
        Check("velocity_out_of_range", "max_velocity", "between", min_value=0, max_value=127),
        Check("velocity_out_of_range", "min_velocity", "between", min_value=0, max_value=127),
        Check("too_short", "n_bars", "between", min_value=v.min_bars),
        Check("too_few_notes", "n_notes", "between", min_value=v.min_notes),
        Check("pitch_out_of_range", "pitch_out_of_range_fraction", "between",
              max_value=v.max_pitch_out_of_range_fraction),
        Check("mostly_empty", "empty_bar_ratio", "between", max_value=v.max_empty_bar_ratio),
        Check("polyphony", "max_polyphony", "between", max_value=v.max_polyphony),
    ]
    if v.require_time_signature:  # "" = the file does not say (npz without downbeats): allowed
        out.insert(1, Check("time_signature", "time_signature", "in_set",
                            value_set=(v.require_time_signature, "")))
    return out


def _expectation(check: Check):
    import great_expectations as gx

    meta = {"reason": check.reason}
    if check.kind == "unique":
        return gx.expectations.ExpectColumnValuesToBeUnique(column=check.column, meta=meta)
    if check.kind == "in_set":
        return gx.expectations.ExpectColumnValuesToBeInSet(column=check.column, value_set=list(check.value_set), meta=meta)
    return gx.expectations.ExpectColumnValuesToBeBetween(
        column=check.column, min_value=check.min_value, max_value=check.max_value, meta=meta)


def run_suite(table: pd.DataFrame, params: Params, docs_dir: Path) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Run the suite over `table` (whole-dataframe batch), write the data docs page into `docs_dir`.

    Returns the suite summary and {song_id-row path: [failure details]} from GX's unexpected
    row indices (as `path` values, `unexpected_index_column_names`)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = ctx.data_sources.add_pandas("songs").add_dataframe_asset("song_stats") \
        .add_batch_definition_whole_dataframe("all_songs")
    suite = ctx.suites.add(gx.ExpectationSuite(name="lpdvae_songs"))
    by_config = []
    for check in checks(params):
        by_config.append((suite.add_expectation(_expectation(check)), check))
    definition = ctx.validation_definitions.add(gx.ValidationDefinition(name="songs", data=batch, suite=suite))
    checkpoint = ctx.checkpoints.add(gx.Checkpoint(
        name="lpdvae_validate", validation_definitions=[definition],
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["path"]},
    ))
    run = checkpoint.run(batch_parameters={"dataframe": table})
    failures: dict[str, list[str]] = {}
    expectations = []
    shown = []
    (result,) = run.run_results.values()
    checks_by_id = {e.id: c for e, c in by_config}
    for r in result.results:
        check = checks_by_id[r.expectation_config.id]
        rows = [u["path"] for u in r.result.get("unexpected_index_list") or []]
        unexpected = []
        for path, value in zip(rows, r.result.get("unexpected_list") or [None] * len(rows), strict=False):
            detail = _describe(check, value)
            failures.setdefault(path, []).append(f"{check.reason}: {detail}")
            unexpected.append((path, detail))
        expectations.append({"type": r.expectation_config.type, "column": check.column, "reason": check.reason,
                             "success": bool(r.success), "unexpected_count": len(rows)})
        shown.append(suite_page.ExpectationResult(r.expectation_config.type, check.column, _rule(check),
                                                  check.reason, bool(r.success), unexpected))
    summary = {"success": bool(run.success), "statistics": _plain(result.statistics), "expectations": expectations}
    suite_page.write(Path(docs_dir), suite.name, len(table), shown, summary["statistics"], track_losses(table))
    return summary, failures


def track_losses(table: pd.DataFrame) -> list[suite_page.TrackLoss]:
    """The songs of the stats table whose source tracks were dropped or merged, for the docs page."""
    if "dropped_tracks" not in table:
        return []
    cols = table[["path", "dropped_tracks", "merged_tracks", "track_map"]].fillna("").astype(str)
    return [suite_page.TrackLoss(*row) for row in cols.itertuples(index=False, name=None) if row[1] or row[2]]


def _rule(check: Check) -> str:
    """The condition an expectation checks, in words."""
    if check.kind == "unique":
        return "unique"
    if check.kind == "in_set":
        return "in {" + ", ".join(repr(v) for v in check.value_set) + "}"
    return " and ".join(b for b in (f">= {check.min_value:g}" if check.min_value is not None else "",
                                    f"<= {check.max_value:g}" if check.max_value is not None else "") if b)


def _describe(check: Check, value: Any) -> str:
    if check.kind == "unique":
        return f"{check.column} {value} occurs more than once"
    if check.kind == "in_set":
        return f"{check.column} {value or 'unknown'!s}, required {check.value_set[0]}"
    return f"{check.column} = {value:g} (must be {_rule(check)})" if isinstance(value, int | float) else f"{check.column} = {value}"


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
