"""validate's data docs: one self-contained HTML page of the Great Expectations suite's result.

GX's own data docs load Bootstrap, jQuery, Font Awesome and Vega from CDNs (its package ships
only two stylesheets), so offline and inside the KFP UI's sandboxed iframe they render unstyled.
This page has the same content that matters here (each expectation, pass/fail, the unexpected
songs with the reason each would be quarantined for) in plain HTML with inline CSS and no URL.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lpdvae.io import atomic_write_text

MAX_ROWS = 200  # unexpected songs listed per expectation; quarantine.jsonl has them all

STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ccc;padding:.2em .6em;"
    "text-align:left;vertical-align:top}th{background:#f3f3f3}.pass{color:#17662b;font-weight:bold}"
    ".fail{color:#a4161a;font-weight:bold}code{font-size:.92em}details{margin:.3em 0 1em}"
    "summary{cursor:pointer}.verdict{font-size:1.15em}"
)


@dataclass(frozen=True)
class ExpectationResult:
    """One expectation as the page shows it."""

    expectation: str  # GX type, e.g. expect_column_values_to_be_between
    column: str
    rule: str  # the condition in words, e.g. ">= 4 and <= 24"
    reason: str  # the quarantine reason its unexpected songs get
    success: bool
    unexpected: list[tuple[str, str]] = field(default_factory=list)  # (song path, detail)


@dataclass(frozen=True)
class TrackLoss:
    """A song whose source tracks were not all kept one-to-one (stats.csv's routing columns)."""

    path: str
    dropped: str  # "|"-separated source tracks that matched no configured track
    merged: str  # "|"-separated `target<-a+b` merges
    track_map: str  # "|"-separated `source->target` of every source track


def render(suite: str, n_rows: int, results: Sequence[ExpectationResult], statistics: dict[str, Any],
           track_losses: Sequence[TrackLoss] = ()) -> str:
    """The page's HTML: verdict, a table of every expectation, the unexpected songs of each, and a
    warning listing the songs whose source tracks were dropped or merged."""
    ok = all(r.success for r in results)
    verdict = ('<span class="pass">passed</span>: every expectation held' if ok else
               f'<span class="fail">failed</span>: {sum(not r.success for r in results)} of '
               f"{len(results)} expectations have unexpected songs")
    rows = []
    for i, r in enumerate(results):
        status = '<span class="pass">pass</span>' if r.success else '<span class="fail">fail</span>'
        count = f'<a href="#e{i}">{len(r.unexpected)}</a>' if r.unexpected else "0"
        rows.append(f"<tr><td>{status}</td><td><code>{_e(r.expectation)}</code></td><td><code>{_e(r.column)}"
                    f"</code></td><td>{_e(r.rule)}</td><td><code>{_e(r.reason)}</code></td><td>{count}</td></tr>")
    sections = []
    for i, r in enumerate(results):
        if not r.unexpected:
            continue
        shown = r.unexpected[:MAX_ROWS]
        body = "".join(f"<tr><td><code>{_e(path)}</code></td><td>{_e(detail)}</td></tr>" for path, detail in shown)
        more = (f"<p>… and {len(r.unexpected) - len(shown)} more (all of them are in quarantine.jsonl).</p>"
                if len(r.unexpected) > len(shown) else "")
        sections.append(f'<h3 id="e{i}"><code>{_e(r.column)}</code> {_e(r.rule)} '
                        f"({len(r.unexpected)} unexpected, reason <code>{_e(r.reason)}</code>)</h3>"
                        f"<table><tr><th>song</th><th>why</th></tr>{body}</table>{more}")
    stats = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_fmt(v))}</td></tr>" for k, v in sorted(statistics.items()))
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>lpdvae data docs: {_e(suite)}</title><style>{STYLE}</style></head><body>"
        f"<h1>Great Expectations suite <code>{_e(suite)}</code></h1>"
        f'<p class="verdict">{verdict}. {n_rows} songs validated as one batch.</p>'
        "<p>Songs an expectation flags are quarantined with its reason (the first copy of a duplicate "
        "is kept). Files that could not be read at all are quarantined before the suite runs and are not "
        "counted here; the full list with every reason per song is validate's <code>quarantine.jsonl</code>.</p>"
        "<h2>Expectations</h2><table><tr><th>result</th><th>expectation</th><th>column</th><th>rule</th>"
        f"<th>quarantine reason</th><th>unexpected</th></tr>{''.join(rows)}</table>"
        + (f"<h2>Unexpected songs</h2>{''.join(sections)}" if sections else "")
        + _track_section(track_losses, n_rows)
        + f"<h2>Statistics</h2><table>{stats}</table></body></html>\n"
    )


def _track_section(losses: Sequence[TrackLoss], n_rows: int) -> str:
    """The warning about source tracks dropped or merged into the configured track set."""
    if not losses:
        return ""
    n_dropped, n_merged = sum(bool(t.dropped) for t in losses), sum(bool(t.merged) for t in losses)
    shown = losses[:MAX_ROWS]
    body = "".join(f"<tr><td><code>{_e(t.path)}</code></td><td>{_e(t.dropped.replace('|', ', '))}</td>"
                   f"<td>{_e(t.merged.replace('|', ', '))}</td><td><code>{_e(t.track_map.replace('|', ' '))}"
                   "</code></td></tr>" for t in shown)
    more = (f"<p>… and {len(losses) - len(shown)} more (stats.csv has every song's track_map).</p>"
            if len(losses) > len(shown) else "")
    return ('<h2 id="tracks">Source tracks dropped or merged</h2>'
            f'<p class="fail">warning: {n_dropped} of {n_rows} songs have source tracks that match no '
            f"configured track (dropped: not in the tensors), {n_merged} merge several source tracks into "
            "one configured track (their notes become one roll). Check params <code>tracks</code> "
            "(names, programs) if that is not intended.</p>"
            "<table><tr><th>song</th><th>dropped</th><th>merged</th><th>source -&gt; track</th></tr>"
            f"{body}</table>{more}")


def write(docs_dir: Path, suite: str, n_rows: int, results: Sequence[ExpectationResult],
          statistics: dict[str, Any], track_losses: Sequence[TrackLoss] = ()) -> Path:
    """`docs_dir/index.html`, written atomically."""
    return atomic_write_text(Path(docs_dir) / "index.html",
                             render(suite, n_rows, results, statistics, track_losses))


def _e(text: Any) -> str:
    return html.escape(str(text))


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
