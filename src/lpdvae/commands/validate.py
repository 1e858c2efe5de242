"""`lpdvae validate`: options here, the step (pandas, Great Expectations) imported on run."""

from __future__ import annotations

import argparse
from pathlib import Path

from lpdvae.layout import CWD
from lpdvae.params import Params


def _cmd(args: argparse.Namespace, params: Params) -> int:
    from lpdvae.steps.validate import validate
    from lpdvae.validation.drift_reference import champion_reference

    reference = champion_reference(params) if args.drift == "champion" else None
    r = validate(Path(args.raw), Path(args.out), params, Path(args.docs) if args.docs else None, reference)
    reasons = ", ".join(f"{k} {v}" for k, v in r.reasons.items()) or "none"
    print(f"validated {r.n_songs} songs: {r.n_accepted} accepted, {r.n_quarantined} quarantined "
          f"({r.n_bad} bad, {r.bad_fraction:.1%} of songs; reasons: {reasons}); GX suite "
          f"{'passed' if r.gx_success else 'found failures'}; data docs: {r.docs_dir / 'index.html'}"
          + (f"; drift: {r.drift_verdict} ({r.docs_dir / 'drift.json'})" if r.drift_verdict else ""))
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="song stats, Great Expectations suite, quarantine",
                       description="Load every ingested song, build a per-song stats table, run the Great "
                       "Expectations suite over it, quarantine unreadable or failing songs. The data (--out) is "
                       "byte-identical for the same input; the data docs (--docs) are a separate folder.")
    p.add_argument("--raw", default=str(CWD.raw), help="ingested songs folder (default: %(default)s)")
    p.add_argument("--out", default=str(CWD.validated),
                   help="output folder: accepted/quarantine lists, stats.csv, summary.json; identical for "
                   "the same input, so its DVC hash names the data (default: %(default)s)")
    p.add_argument("--docs", default=None, metavar="DIR",
                   help="folder for the Great Expectations data docs site (index.html; changes every run, "
                   "so kept out of --out) (default: OUT-docs beside --out; dvc.yaml uses reports/data_docs)")
    p.add_argument("--drift", choices=("champion", "none"), default="champion",
                   help="compare the accepted songs' statistics with the registered champion's training data "
                   "(params drift; report in the docs folder: drift.json, drift.html) or skip it "
                   "(default: %(default)s; no champion yet: verdict no_reference, passes)")
    p.set_defaults(func=_cmd)
