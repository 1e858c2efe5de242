"""Validate: per-song statistics (pypianoroll), a Great Expectations suite over them, quarantine.

Every manifest song is loaded in a worker (in parallel, bounded memory). A file that cannot be
read is quarantined right there with the loader's reason. The readable songs form one stats
table, one row per song; a GX 1.x suite (thresholds from `params.validate`) runs over it as a
whole-dataframe batch, and each failed expectation's unexpected rows give the per-song
quarantine reasons. Songs in another meter or too short are *excluded* (a quarantine row with
kind "excluded"), and so are byte-identical copies of a song; unreadable and failing songs are
kind "bad". As the contract says, every quarantined song (bad or excluded) counts toward
`validate.max_bad_fraction`; summary.json reports both counts.

The data folder (accepted/quarantine lists, stats, summary) depends on nothing but the input
and the params: two runs on the same raw data give byte-identical files, so its DVC hash (the
`lpdvae.dvc.validated` lineage tag) names the data, not the run. The GX data docs carry run
times and ids, so they go to a separate docs folder (`--docs`; default `<out>-docs` beside the
data folder, `reports/data_docs` in dvc.yaml). Both folders are replaced atomically, and a
failed run leaves both as they were.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pypianoroll
from tqdm import tqdm

from lpdvae import music
from lpdvae.errors import DataError, LpdvaeError, ValidationFailed
from lpdvae.io import (
    atomic_dir,
    atomic_write_json,
    atomic_write_jsonl,
    atomic_write_text,
    read_jsonl,
)
from lpdvae.params import Params

log = logging.getLogger(__name__)
EXCLUSIONS = ("time_signature", "too_short", "duplicate")  # out of scope or redundant, not bad


@dataclass(frozen=True)
class Check:
    """One expectation of the suite and the quarantine reason its unexpected rows get."""

    reason: str
    column: str
    kind: str  # "between" | "in_set" | "unique"
    min_value: float | None = None
    max_value: float | None = None
    value_set: tuple[str, ...] = ()


@dataclass(frozen=True)
class ValidateResult:
    out_dir: Path
    n_songs: int
    n_accepted: int
    n_quarantined: int
    n_bad: int
    bad_fraction: float
    reasons: dict[str, int] = field(default_factory=dict)
    gx_success: bool = True
    docs_dir: Path | None = None  # the GX data docs site (index.html)


# ------------------------------------------------------------------------------- stats table


def song_stats(song: music.Song, params: Params) -> dict[str, Any]:
    """One stats row: source tracks, meter, tempo, length, notes, pitch range, emptiness, polyphony."""
    mt, rep = song.multitrack, params.representation
    assignment = music.track_assignment(mt, params.tracks)
    roll, dropped = music.multitrack_roll(mt, params.tracks, rep)
    kept = [t for t, a in zip(mt.tracks, assignment, strict=True) if a is not None]
    active = [np.nan_to_num(np.asarray(t.pianoroll, dtype=np.float32)) > 0 for t in kept]
    onsets = [a & ~np.vstack([np.zeros((1, 128), bool), a[:-1]]) for a in active]
    n_notes = int(sum(o.sum() for o in onsets))
    in_range = slice(rep.lowest_pitch, rep.lowest_pitch + rep.n_pitches)
    outside = n_notes - int(sum(o[:, in_range].sum() for o in onsets))
    blended = np.any(np.stack([a.any(0) for a in active]), axis=0)[None] if active else np.zeros((1, 128), bool)
    lowest, highest = pypianoroll.pitch_range_tuple(blended)
    bars = music.bar_activity(roll, rep)
    per_step = roll.sum(axis=2)  # [T, steps]: pitches sounding per track and step
    tempo = np.asarray(mt.tempo, dtype=float).reshape(-1) if mt.tempo is not None else np.array([])
    tempo = tempo[np.isfinite(tempo)]
    phrases = music.cut_phrases(roll, rep, params.tensorize)
    return {
        "format": song.format,
        "parser": song.parser,
        "resolution": int(mt.resolution),
        "n_source_tracks": len(mt.tracks),
        "source_tracks": "|".join(str(t.name or "") for t in mt.tracks),
        "programs": "|".join(str(int(t.program or 0)) for t in mt.tracks),
        "drum_flags": "|".join("1" if t.is_drum else "0" for t in mt.tracks),
        "n_drum_tracks": sum(bool(t.is_drum) for t in mt.tracks),
        "tracks_present": "|".join(n for n, r in zip(params.track_names, roll, strict=True) if r.any()),
        "n_tracks_present": int(sum(bool(r.any()) for r in roll)),
        "n_unmatched_tracks": int(dropped),
        "tempo": float(np.median(tempo)) if tempo.size else np.nan,
        "tempo_min": float(tempo.min()) if tempo.size else np.nan,
        "tempo_max": float(tempo.max()) if tempo.size else np.nan,
        "n_beats": float(mt.get_max_length() / mt.resolution),
        "n_bars": int(len(bars)),
        "time_signature": song.time_signature,
        "time_signature_source": song.time_signature_source,
        "n_notes": n_notes,
        "pitch_min": float(lowest),
        "pitch_max": float(highest),
        "pitch_out_of_range_fraction": outside / n_notes if n_notes else 0.0,
        "empty_bar_ratio": float((~bars).mean()) if len(bars) else 1.0,
        "max_polyphony": int(per_step.max()) if per_step.size else 0,
        "polyphonic_rate": float(np.mean([pypianoroll.polyphonic_rate(a) for a in active if a.any()] or [0.0])),
        "min_velocity": song.min_velocity,
        "max_velocity": song.max_velocity,
        "nan_cells": int(sum(np.isnan(t.pianoroll).sum() for t in mt.tracks if t.pianoroll.dtype.kind == "f")),
        "n_phrases": int(len(phrases)),
    }


def _stats_job(job: tuple[str, str, str]) -> dict[str, Any]:
    """Worker: the stats row of one manifest file, or its load error."""
    path, rel, fmt = job
    params: Params = music.worker_state("params")  # type: ignore[assignment]
    try:
        song = music.read_song(path, params.representation, fmt)
        return {"path": rel, **song_stats(song, params)}
    except music.SongError as exc:
        return {"path": rel, "load_error": exc.reason, "load_detail": _relative(exc.detail, path, rel)}
    except Exception as exc:  # noqa: BLE001 - a file no loader check anticipated must not stop the batch
        log.warning("%s: unexpected error while reading: %r", rel, exc)
        return {"path": rel, "load_error": "unreadable",
                "load_detail": _relative(f"{type(exc).__name__}: {exc}", path, rel)}


def _relative(detail: str, path: str, rel: str) -> str:
    """`detail` with the file's on-disk path (an OSError names it) as the manifest path, so
    stats.csv does not depend on where the raw folder lies."""
    for p in sorted({str(Path(path).resolve()), str(Path(path).absolute()), path}, key=len, reverse=True):
        detail = detail.replace(p, rel)
    return detail


# ----------------------------------------------------------------------------- the GX suite


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
    """Run the suite over `table` (whole-dataframe batch), build data docs into `docs_dir`.

    Returns the suite summary and {song_id-row path: [failure details]} from GX's unexpected
    row indices (as `path` values, `unexpected_index_column_names`)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    ctx.add_data_docs_site(site_name="lpdvae", site_config={
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(Path(docs_dir).resolve())},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    })
    batch = ctx.data_sources.add_pandas("songs").add_dataframe_asset("song_stats") \
        .add_batch_definition_whole_dataframe("all_songs")
    suite = ctx.suites.add(gx.ExpectationSuite(name="lpdvae_songs"))
    by_config = []
    for check in checks(params):
        by_config.append((suite.add_expectation(_expectation(check)), check))
    definition = ctx.validation_definitions.add(gx.ValidationDefinition(name="songs", data=batch, suite=suite))
    checkpoint = ctx.checkpoints.add(gx.Checkpoint(
        name="lpdvae_validate", validation_definitions=[definition],
        actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["lpdvae"])],
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["path"]},
    ))
    run = checkpoint.run(batch_parameters={"dataframe": table})
    failures: dict[str, list[str]] = {}
    expectations = []
    (result,) = run.run_results.values()
    checks_by_id = {e.id: c for e, c in by_config}
    for r in result.results:
        check = checks_by_id[r.expectation_config.id]
        rows = [u["path"] for u in r.result.get("unexpected_index_list") or []]
        for path, value in zip(rows, r.result.get("unexpected_list") or [None] * len(rows), strict=False):
            failures.setdefault(path, []).append(f"{check.reason}: {_describe(check, value)}")
        expectations.append({"type": r.expectation_config.type, "column": check.column, "reason": check.reason,
                             "success": bool(r.success), "unexpected_count": len(rows)})
    summary = {"success": bool(run.success), "statistics": _plain(result.statistics), "expectations": expectations}
    return summary, failures


def _describe(check: Check, value: Any) -> str:
    if check.kind == "unique":
        return f"{check.column} {value} occurs more than once"
    if check.kind == "in_set":
        return f"{check.column} {value or 'unknown'!s}, required {check.value_set[0]}"
    bounds = " and ".join(b for b in (f">= {check.min_value:g}" if check.min_value is not None else "",
                                      f"<= {check.max_value:g}" if check.max_value is not None else "") if b)
    return f"{check.column} = {value:g} (must be {bounds})" if isinstance(value, int | float) else f"{check.column} = {value}"


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


# ------------------------------------------------------------------------------- the step


def read_manifest(raw_dir: Path) -> list[dict[str, Any]]:
    path = Path(raw_dir) / "manifest.jsonl"
    if not path.exists():
        raise DataError(f"{path}: not found (run `lpdvae ingest` first)")
    try:
        rows = read_jsonl(path)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    for i, row in enumerate(rows, 1):
        missing = {"path", "sha256"} - set(row)
        if missing:
            raise DataError(f"{path}:{i}: missing {', '.join(sorted(missing))}")
    return sorted(rows, key=lambda r: r["path"])


def collect_stats(raw_dir: Path, rows: list[dict[str, Any]], params: Params) -> pd.DataFrame:
    """One stats row per manifest row (in parallel); unreadable files carry `load_error`."""
    jobs = []
    for row in rows:
        try:
            fmt = row.get("format") or music.song_format(row["path"])
        except music.SongError:
            fmt = "unsupported"
        jobs.append((str(Path(raw_dir) / row["path"]), row["path"], fmt))
    readable = [j for j in jobs if j[2] in ("midi", "npz")]
    stats = {j[1]: {"path": j[1], "load_error": "unsupported_format",
                    "load_detail": f"unsupported file type {Path(j[1]).suffix!r}"} for j in jobs if j not in readable}
    results = music.map_songs(_stats_job, readable, len(readable), params.tensorize.workers, {"params": params})
    for out in tqdm(results, total=len(readable), desc="validate", unit="song", disable=None):
        stats[out["path"]] = out
    table = pd.DataFrame([{"song_id": r["sha256"], "bytes": r.get("bytes"), **stats[r["path"]]} for r in rows])
    for col in ("load_error", "load_detail"):
        if col not in table:
            table[col] = None
    return table.reset_index(drop=True)


def _quarantine_rows(table: pd.DataFrame, failures: dict[str, list[str]]) -> list[dict[str, Any]]:
    out = []
    for row in table.itertuples(index=False):
        if isinstance(row.load_error, str):
            reasons, details = [row.load_error], [row.load_detail]
        elif row.path in failures:
            details = failures[row.path]
            reasons = [d.split(":", 1)[0] for d in details]
        else:
            continue
        primary = next((r for r in reasons if r not in EXCLUSIONS), reasons[0])
        out.append({"path": row.path, "song_id": row.song_id, "reason": primary, "detail": "; ".join(details),
                    "kind": "excluded" if all(r in EXCLUSIONS for r in reasons) else "bad"})
    return out


def _first_duplicates_kept(table: pd.DataFrame, failures: dict[str, list[str]]) -> None:
    """GX flags every copy of a duplicated song; the first path keeps its place."""
    dup_first = table[table.duplicated("song_id", keep=False) & ~table.duplicated("song_id", keep="first")]
    for path in dup_first["path"]:
        rest = [d for d in failures.get(path, []) if not d.startswith("duplicate:")]
        if rest:
            failures[path] = rest
        else:
            failures.pop(path, None)
    for path in table[table.duplicated("song_id", keep="first")]["path"]:
        first = table.loc[table["song_id"] == table.loc[table["path"] == path, "song_id"].iloc[0], "path"].iloc[0]
        failures[path] = [f"duplicate: same content as {first}" if d.startswith("duplicate:") else d
                          for d in failures.get(path, ["duplicate:"])]


def default_docs_dir(out_dir: Path) -> Path:
    """Where the data docs go when no docs folder is given: `<out_dir>-docs`, beside `out_dir`
    (its own folder per data folder, and never inside it, so the data stays deterministic)."""
    out_dir = Path(out_dir)
    return out_dir.with_name(f"{out_dir.name}-docs")


def _check_apart(out_dir: Path, docs_dir: Path) -> None:
    out, docs = out_dir.resolve(), docs_dir.resolve()
    if out == docs or out.is_relative_to(docs) or docs.is_relative_to(out):
        raise LpdvaeError(f"validate: docs folder {docs_dir} and output folder {out_dir} must not contain "
                          "each other (the data docs change every run, the validated data must not)")


def validate(raw_dir: Path, out_dir: Path, params: Params, docs_dir: Path | None = None) -> ValidateResult:
    """Stats, quarantine and accepted lists into `out_dir`, the GX suite's data docs into
    `docs_dir` (default `default_docs_dir(out_dir)`), each replaced atomically.

    `out_dir` is byte-identical for the same input and params; `docs_dir` holds run times.
    When the batch fails the gate both stay as they were and the full report (data files +
    `data_docs/`) lands in `<out_dir>.failed`."""
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    docs_dir = default_docs_dir(out_dir) if docs_dir is None else Path(docs_dir)
    _check_apart(out_dir, docs_dir)
    rows = read_manifest(raw_dir)
    if not rows:
        raise DataError(f"{raw_dir / 'manifest.jsonl'}: no songs")
    table = collect_stats(raw_dir, rows, params)
    loaded = table[table["load_error"].isna()].drop(columns=["load_error", "load_detail"]).reset_index(drop=True)
    # exits in reverse: the data folder is swapped in first, then its docs
    with atomic_dir(docs_dir) as docs_tmp, atomic_dir(out_dir) as tmp:
        gx_summary, failures = _suite_or_placeholder(loaded, params, docs_tmp)
        _first_duplicates_kept(loaded, failures)
        quarantine = _quarantine_rows(table, failures)
        summary = _write_outputs(tmp, table, rows, quarantine, gx_summary, params)
        if summary["n_accepted"] == 0 or summary["bad_fraction"] > params.validate.max_bad_fraction:
            failed_dir = out_dir.with_name(f"{out_dir.name}.failed")
            with atomic_dir(failed_dir) as ftmp:
                for name in tmp.iterdir():
                    name.rename(ftmp / name.name)
                (ftmp / "data_docs").mkdir()
                for name in docs_tmp.iterdir():
                    name.rename(ftmp / "data_docs" / name.name)
            raise ValidationFailed(_failure_message(summary, params, failed_dir))
    log.info("validate: %d songs, %d accepted, %d quarantined (%d bad)", summary["n_songs"],
             summary["n_accepted"], summary["n_quarantined"], summary["n_bad"])
    return ValidateResult(out_dir, summary["n_songs"], summary["n_accepted"], summary["n_quarantined"],
                          summary["n_bad"], summary["bad_fraction"], summary["reasons"], gx_summary["success"],
                          docs_dir)


def _suite_or_placeholder(loaded: pd.DataFrame, params: Params, docs_dir: Path) -> tuple[dict[str, Any], dict[str, list[str]]]:
    if len(loaded):
        return run_suite(loaded, params, docs_dir)
    atomic_write_text(docs_dir / "index.html", "<html><body><h1>lpdvae validate</h1>"
                      "<p>No readable song: the Great Expectations suite was not run.</p></body></html>\n")
    return {"success": False, "statistics": {}, "expectations": []}, {}


def _write_outputs(tmp: Path, table: pd.DataFrame, rows: list[dict[str, Any]], quarantine: list[dict[str, Any]],
                   gx_summary: dict[str, Any], params: Params) -> dict[str, Any]:
    quarantined = {q["path"] for q in quarantine}
    accepted = [{"song_id": r["sha256"], "path": r["path"], "sha256": r["sha256"]} for r in rows if r["path"] not in quarantined]
    table.to_csv(tmp / "stats.csv", index=False)
    atomic_write_jsonl(tmp / "accepted.jsonl", accepted)
    atomic_write_jsonl(tmp / "quarantine.jsonl", quarantine)
    n_bad = sum(q["kind"] == "bad" for q in quarantine)
    parsers = table["parser"].dropna().value_counts().to_dict() if "parser" in table else {}
    summary = {
        "n_songs": len(rows), "n_accepted": len(accepted), "n_quarantined": len(quarantine),
        "n_bad": n_bad, "n_excluded": len(quarantine) - n_bad,
        "bad_fraction": len(quarantine) / len(rows),  # quarantined (bad + excluded) / songs: the gate
        "max_bad_fraction": params.validate.max_bad_fraction,
        "reasons": dict(sorted(Counter(q["reason"] for q in quarantine).items())),
        "parsers": {str(k): int(v) for k, v in parsers.items()},
        "n_phrases": int(table.loc[~table["path"].isin(quarantined), "n_phrases"].fillna(0).sum())
        if "n_phrases" in table else 0,
        "gx": gx_summary,
    }
    atomic_write_json(tmp / "summary.json", summary)
    return summary


def _failure_message(summary: dict[str, Any], params: Params, failed_dir: Path) -> str:
    reasons = ", ".join(f"{k} {v}" for k, v in summary["reasons"].items()) or "none"
    head = (f"no song passed validation ({summary['n_songs']} songs)" if summary["n_accepted"] == 0 else
            f"{summary['n_quarantined']} of {summary['n_songs']} songs quarantined ({summary['n_bad']} bad, "
            f"{summary['n_excluded']} excluded; {summary['bad_fraction']:.1%} > "
            f"validate.max_bad_fraction {params.validate.max_bad_fraction:.1%})")
    return f"{head}; quarantine reasons: {reasons}; report in {failed_dir}/ (quarantine.jsonl, data_docs/index.html)"
