"""Validate: per-song statistics (pypianoroll), a Great Expectations suite over them, quarantine.

Every manifest song is loaded in a worker (in parallel, bounded memory). A file that cannot be
read is quarantined right there with the loader's reason. The readable songs form one stats
table, one row per song; a GX 1.x suite (thresholds from `params.validate`) runs over it as a
whole-dataframe batch, and each failed expectation's unexpected rows give the per-song
quarantine reasons. Songs in another meter or too short are *excluded* (a quarantine row with
kind "excluded"), and so are byte-identical copies of a song; unreadable and failing songs are
kind "bad". Songs that share a tune get one `group` (`lpdvae.validation.tune_groups`: metadata
title or top-line similarity; a `group` column in stats.csv and accepted.jsonl, which tensorize
splits by), and a song whose notes nearly repeat another's of its group is excluded as its
`duplicate`, the twin (the smaller path) named in the detail. As the contract says, every
quarantined song (bad or excluded) counts toward `validate.max_bad_fraction`; summary.json
reports both counts.

The data folder (accepted/quarantine lists, stats, summary) depends on nothing but the input
and the params: two runs on the same raw data give byte-identical files, so its DVC hash (the
`lpdvae.dvc.validated` lineage tag) names the data, not the run. The GX data docs carry run
times and ids, so they go to a separate docs folder (`--docs`; default `<out>-docs` beside the
data folder, `reports/data_docs` in dvc.yaml). Both folders are replaced atomically, and a
failed run leaves both as they were.

Drift (`reference`, lpdvae.validation.drift): once the batch passed, the accepted songs' statistics are
compared with those of the champion's training data (`lpdvae.validation.drift_reference`); the report goes
into the docs folder (drift.json, drift.html, a section of index.html), never into the data
folder. A drifting batch under `drift.stop_on_drift` raises DataError *after* both folders are
swapped in, so the report is there to read and nothing downstream (tensorize, train) runs.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lpdvae.errors import DataError, LpdvaeError, ValidationFailed
from lpdvae.io import (
    atomic_dir,
    atomic_write_json,
    atomic_write_jsonl,
    atomic_write_text,
    read_jsonl,
)
from lpdvae.params import Params
from lpdvae.validation import drift
from lpdvae.validation.drift_reference import Reference, accepted_rows
from lpdvae.validation.parts import ValidatePart, check_parts
from lpdvae.validation.song_stats import (
    printable_path,
    stats_rows,
    stats_table,
    track_summary,
    track_warnings,
)
from lpdvae.validation.song_suite import run_suite
from lpdvae.validation.tune_groups import SongContent, duplicates, song_groups

log = logging.getLogger(__name__)
EXCLUSIONS = ("time_signature", "too_short", "duplicate")  # out of scope or redundant, not bad


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
    warnings: list[str] = field(default_factory=list)  # source tracks dropped or merged
    drift_verdict: str | None = None  # no_reference | ok | drift; None: drift not checked


def validate(raw_dir: Path, out_dir: Path, params: Params, docs_dir: Path | None = None,
             reference: Reference | str | None = None) -> ValidateResult:
    """Stats, quarantine and accepted lists into `out_dir`, the GX suite's data docs into
    `docs_dir` (default `default_docs_dir(out_dir)`), each replaced atomically.

    `reference`: the champion's training statistics (`drift_reference.champion_reference`), or
    the reason there are none (verdict no_reference), or None to skip the drift check.

    `out_dir` is byte-identical for the same input and params; `docs_dir` holds run times.
    When the batch fails the gate both stay as they were and the full report (data files +
    `data_docs/`) lands in `<out_dir>.failed`. The whole manifest is one part, merged here: a
    fanned-out run (KFP) computes the parts in separate tasks and merges them the same way."""
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    _check_apart(out_dir, default_docs_dir(out_dir) if docs_dir is None else Path(docs_dir))
    rows = read_manifest(raw_dir)
    if not rows:
        raise DataError(f"{raw_dir / 'manifest.jsonl'}: no songs")
    return merge_parts([validate_part(raw_dir, rows, params)], out_dir, params, docs_dir, reference)


def validate_part(raw_dir: Path, rows: list[dict[str, Any]], params: Params, chunk: int = 0,
                  chunks: int = 1) -> ValidatePart:
    """The per-song half of validate over `rows` (files under `raw_dir`): stats rows and the
    fingerprints grouping and duplicate detection compare across the whole corpus at the merge."""
    content: dict[str, SongContent] = {}
    stats = stats_rows(raw_dir, rows, params, content)
    return ValidatePart(list(rows), stats, content, chunk, chunks)


def merge_parts(parts: list[ValidatePart], out_dir: Path, params: Params, docs_dir: Path | None = None,
                reference: Reference | str | None = None) -> ValidateResult:
    """The corpus-wide half of validate over `parts` (chunks 0..n-1 of the manifest in path order):
    one stats table, tune groups and duplicates across every song, the GX suite, quarantine,
    outputs, the gate and drift (see `validate`)."""
    out_dir = Path(out_dir)
    docs_dir = default_docs_dir(out_dir) if docs_dir is None else Path(docs_dir)
    _check_apart(out_dir, docs_dir)
    parts = check_parts(parts)
    rows = [r for p in parts for r in p.rows]
    if not rows:
        raise DataError("validate: the manifest has no songs")
    content = {path: c for p in parts for path, c in p.content.items()}
    table = stats_table(rows, {rel: row for p in parts for rel, row in p.stats.items()})
    groups = song_groups(list(content.values()), params.validate.tune_similarity)
    table["group"] = [groups.get(path, song_id)  # unreadable songs: a group of their own
                      for path, song_id in zip(table["path"], table["song_id"], strict=True)]
    loaded = table[table["load_error"].isna()].drop(columns=["load_error", "load_detail"]).reset_index(drop=True)
    # exits in reverse: the data folder is swapped in first, then its docs
    with atomic_dir(docs_dir) as docs_tmp, atomic_dir(out_dir) as tmp:
        gx_summary, failures = _suite_or_placeholder(loaded, params, docs_tmp)
        _first_duplicates_kept(loaded, failures)
        _near_duplicates(content, groups, failures, params)
        quarantine = _quarantine_rows(table, failures)
        summary = _write_outputs(tmp, table, rows, quarantine, gx_summary, params)
        if summary["n_accepted"] == 0 or summary["bad_fraction"] > params.validate.max_bad_fraction:
            _keep_failed(out_dir, tmp, docs_tmp)
            raise ValidationFailed(_failure_message(summary, params, out_dir.with_name(f"{out_dir.name}.failed")))
        report = None if reference is None else _drift(table, quarantine, reference, params, docs_tmp)
    return _finish(summary, gx_summary, report, out_dir, docs_dir, params)


def _keep_failed(out_dir: Path, tmp: Path, docs_tmp: Path) -> None:
    """The failed batch's data files and docs into `<out_dir>.failed` (the outputs stay as they were)."""
    with atomic_dir(out_dir.with_name(f"{out_dir.name}.failed")) as ftmp:
        for name in tmp.iterdir():
            name.rename(ftmp / name.name)
        (ftmp / "data_docs").mkdir()
        for name in docs_tmp.iterdir():
            name.rename(ftmp / "data_docs" / name.name)


def _finish(summary: dict[str, Any], gx_summary: dict[str, Any], report: drift.DriftReport | None, out_dir: Path,
            docs_dir: Path, params: Params) -> ValidateResult:
    """Log the batch, stop on drift where asked, and the result."""
    log.info("validate: %d songs, %d accepted, %d quarantined (%d bad)", summary["n_songs"],
             summary["n_accepted"], summary["n_quarantined"], summary["n_bad"])
    for warning in summary["warnings"]:
        log.warning("validate: %s", warning)
    if report is not None:
        drift.enforce(report, params.drift, str(docs_dir / "drift.html"))
    return ValidateResult(out_dir, summary["n_songs"], summary["n_accepted"], summary["n_quarantined"],
                          summary["n_bad"], summary["bad_fraction"], summary["reasons"], gx_summary["success"],
                          docs_dir, summary["warnings"], report.verdict if report else None)


def _drift(table: pd.DataFrame, quarantine: list[dict[str, Any]], reference: Reference | str, params: Params,
           docs_dir: Path) -> drift.DriftReport:
    """Compare the accepted songs with the reference; the report into `docs_dir`; logged."""
    if isinstance(reference, str):
        report = drift.no_reference(reference, params.drift)
    else:
        report = drift.compare(accepted_rows(table, quarantine), reference.table, params.drift, reference.info)
    drift.write(docs_dir, report)
    log.log(logging.WARNING if report.verdict == "drift" else logging.INFO, "validate: drift %s: %s",
            report.verdict, report.reason)
    return report


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


def _suite_or_placeholder(loaded: pd.DataFrame, params: Params, docs_dir: Path) -> tuple[dict[str, Any], dict[str, list[str]]]:
    if len(loaded):
        return run_suite(loaded, params, docs_dir)
    atomic_write_text(docs_dir / "index.html", "<html><body><h1>lpdvae validate</h1>"
                      "<p>No readable song: the Great Expectations suite was not run.</p></body></html>\n")
    return {"success": False, "statistics": {}, "expectations": []}, {}


def _first_duplicates_kept(table: pd.DataFrame, failures: dict[str, list[str]]) -> None:
    """GX flags every copy of a duplicated song; the first path keeps its place."""
    dup_first = table[table.duplicated("song_id", keep=False) & ~table.duplicated("song_id", keep="first")]
    for path in dup_first["path"]:
        rest = [d for d in failures.get(path, []) if not d.startswith("duplicate:")]
        if rest:
            failures[path] = rest
        else:
            failures.pop(path, None)
    first_of = dict(zip(dup_first["song_id"], dup_first["path"], strict=True))  # a lookup: scans would be n x copies
    copies = table[table.duplicated("song_id", keep="first")]
    for path, song_id in zip(copies["path"], copies["song_id"], strict=True):
        failures[path] = [f"duplicate: same content as {first_of[song_id]}" if d.startswith("duplicate:") else d
                          for d in failures.get(path, ["duplicate:"])]


def _near_duplicates(content: dict[str, SongContent], groups: dict[str, str], failures: dict[str, list[str]],
                     params: Params) -> None:
    """Songs that nearly repeat another song of their group join the failures as `duplicate`;
    only songs that pass every other check are compared, so the twin named is an accepted song."""
    passing = [c for path, c in content.items() if path not in failures]
    for path, (twin, score) in duplicates(passing, groups, params.validate.duplicate_similarity).items():
        failures[path] = [f"duplicate: the notes of {twin} (note similarity {score:.3f} >= "
                          f"validate.duplicate_similarity {params.validate.duplicate_similarity:g}, "
                          "times from the first onset, best transposition)"]


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


def _write_outputs(tmp: Path, table: pd.DataFrame, rows: list[dict[str, Any]], quarantine: list[dict[str, Any]],
                   gx_summary: dict[str, Any], params: Params) -> dict[str, Any]:
    quarantined = {q["path"] for q in quarantine}
    group = dict(zip(table["path"], table["group"], strict=True))
    accepted = [{"song_id": r["sha256"], "path": r["path"], "sha256": r["sha256"],
                 "group": group[printable_path(r["path"])]}
                for r in rows if printable_path(r["path"]) not in quarantined]
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
        "tracks": track_summary(table[~table["path"].isin(quarantined)]),  # source tracks dropped/merged
        "gx": gx_summary,
    }
    summary["warnings"] = track_warnings(summary["tracks"], len(accepted))
    atomic_write_json(tmp / "summary.json", summary)
    return summary


def _failure_message(summary: dict[str, Any], params: Params, failed_dir: Path) -> str:
    reasons = ", ".join(f"{k} {v}" for k, v in summary["reasons"].items()) or "none"
    head = (f"no song passed validation ({summary['n_songs']} songs)" if summary["n_accepted"] == 0 else
            f"{summary['n_quarantined']} of {summary['n_songs']} songs quarantined ({summary['n_bad']} bad, "
            f"{summary['n_excluded']} excluded; {summary['bad_fraction']:.1%} > "
            f"validate.max_bad_fraction {params.validate.max_bad_fraction:.1%})")
    return f"{head}; quarantine reasons: {reasons}; report in {failed_dir}/ (quarantine.jsonl, data_docs/index.html)"
