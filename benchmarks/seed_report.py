"""The demo (or any profile) retrained with several `train.seed`s, side by side: is "blessed" a
property of the model or of one seed?

Reads finished runs, one project root each (e.g. fresh clones that ran `make run` with another
`train.seed`), and writes `benchmarks/results/seeds-<name>.json` and `.md`: per seed the
model's test note F1 and every baseline's with their 95 % intervals, the lower bound of each
margin, per-track F1, every gated statistic generated vs data with its gap interval and allowed
gap, the copy check, KL bits, the temperature chosen on val, the wall time and the verdict. It
measures nothing itself and is not a test: `python -m benchmarks.seed_report --root DIR[=WALL_S]
[--root ...] [--name demo] [--profile FILE]` (WALL_S: the measured `make run` time of that root,
if known; FILE: the profile the roots ran with, laid over each root's params.yaml, or over this
checkout's when an `lpdvae run --root` folder has none).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lpdvae.evaluation.baselines import BASELINES
from lpdvae.evaluation.gate import allowed_gap
from lpdvae.params import load_params, profile_overrides

HERE = Path(__file__).resolve().parent


def seed_row(root: Path, wall_s: float | None, profile: Path | None = None) -> dict[str, Any]:
    """One run's figures, read from its reports/eval and models/vae folders."""
    m = json.loads((root / "reports/eval/metrics.json").read_text())
    blessing = json.loads((root / "reports/eval/blessing.json").read_text())
    train = json.loads((root / "models/vae/train_metrics.json").read_text())
    base = root / "params.yaml" if (root / "params.yaml").exists() or profile is None else HERE.parent / "params.yaml"
    params = load_params(base, profile_overrides(profile) if profile else None)
    span = lambda k: [m.get(k), m.get(f"{k}.lo"), m.get(f"{k}.hi")]  # noqa: E731
    stats = {}
    for key in params.evaluate.statistics:
        if f"reference.{key}" in m and f"generated.{key}" in m:
            ref = m[f"reference.{key}"]
            stats[key] = {"generated": m[f"generated.{key}"], "data": ref, "gap": span(f"gap.{key}")[1:],
                          "allowed": allowed_gap(ref, params.evaluate, m.get(f"split_gap.{key}", 0.0)),
                          "gated": m.get(f"constant.{key}") != 1.0}
    return {
        "seed": params.train.seed, "blessed": blessing["blessed"], "reasons": blessing["reasons"],
        "wall_s": wall_s, "train_time_s": train.get("train_time_s"), "steps": train.get("steps"),
        "model": span("recon_note_f1"), "val_model": m.get("val.recon_note_f1"),
        "baselines": {b: span(f"baseline.{b}.recon_note_f1") for b in BASELINES},
        "margin_lo": {b: m.get(f"margin.{b}.lo") for b in BASELINES},
        "bits": {b: m.get(f"baseline.{b}.bits") for b in BASELINES},
        "per_track": {k.split("/", 1)[1]: v for k, v in m.items() if k.startswith("recon_note_f1/") and "." not in k},
        "statistics": stats, "kl_bits": m.get("kl_bits"), "temperature": m.get("temperature"),
        "copy": {k.split(".", 1)[1]: v for k, v in m.items() if k.startswith("copy.")},
    }


def _f(v: Any) -> str:
    return "–" if v is None else f"{v:.3f}"


def markdown(rows: list[dict[str, Any]], name: str) -> str:
    lines = [f"# {name}: {len(rows)} seeds", "",
             "| seed | blessed | wall s | model F1 [95%] | " + " | ".join(f"{b} [95%]" for b in BASELINES)
             + " | min margin lo | KL bits | temp |", "|" + "---|" * (7 + len(BASELINES))]
    for r in rows:
        cells = [f"{_f(a)} [{_f(lo)}, {_f(hi)}]" for a, lo, hi in [r["model"], *r["baselines"].values()]]
        lines.append(f"| {r['seed']} | {'yes' if r['blessed'] else 'NO'} | {_f(r['wall_s'])} | "
                     + " | ".join(cells) + f" | {_f(min(v for v in r['margin_lo'].values() if v is not None))} | "
                     f"{_f(r['kl_bits'])} | {r['temperature']} |")
    lines += ["", "| seed | statistic | generated | data | gap interval | allowed |", "|---|---|---|---|---|---|"]
    for r in rows:
        for key, s in r["statistics"].items():
            lo, hi = s["gap"]
            lines.append(f"| {r['seed']} | {key}{'' if s['gated'] else ' (constant, not gated)'} | "
                         f"{_f(s['generated'])} | {_f(s['data'])} | [{_f(lo)}, {_f(hi)}] | ±{_f(s['allowed'])} |")
    lines += ["", "| seed | per-track F1 | copy: median best match / val floor, share at match / val's, p |",
              "|---|---|---|"]
    for r in rows:
        c = r["copy"]
        tracks = ", ".join(f"{k} {_f(v)}" for k, v in r["per_track"].items())
        lines.append(f"| {r['seed']} | {tracks} | {_f(c.get('median_best_match'))} / {_f(c.get('val_floor'))}, "
                     f"{_f(c.get('share_at_match'))} / {_f(c.get('val_share_at_match'))}, {_f(c.get('p_value'))} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.seed_report", description=__doc__)
    parser.add_argument("--root", action="append", required=True, metavar="DIR[=WALL_S]",
                        help="a finished run's project root, optionally with its measured wall time")
    parser.add_argument("--name", default="demo", help="report name: benchmarks/results/seeds-NAME.json")
    parser.add_argument("--out-dir", type=Path, default=HERE / "results")
    parser.add_argument("--profile", type=Path, default=None, help="the profile the roots ran with (e.g. profiles/full.yaml)")
    args = parser.parse_args(argv)
    rows = []
    for spec in args.root:
        root, _, wall = spec.partition("=")
        try:
            rows.append(seed_row(Path(root), float(wall) if wall else None, args.profile))
        except FileNotFoundError as exc:
            print(f"seed_report: {exc.filename}: missing (run `make run` there first)", file=sys.stderr)
            return 1
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"seeds-{args.name}.json").write_text(json.dumps(rows, indent=2) + "\n")
    (args.out_dir / f"seeds-{args.name}.md").write_text(markdown(rows, args.name))
    print(markdown(rows, args.name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
