"""Model quality report: what a run's evaluation measured, beside issue 14's targets.

Reads a finished run's outputs (default: the `make run` layout under the project root) and writes
`benchmarks/results/quality-<profile>.json` and `.md`: note F1 vs the average-cell baseline on
test and train, every generated statistic vs the data, diversity, copying, KL nats, active
units, training wall time, and whether each target holds. It measures nothing itself and is not
a test: it reports (`python -m benchmarks.quality_report [--root R] [--profile demo|full]`).
With `--docs DIR` it also writes DIR/README.md with the learning curves (PNG, from the run's
epochs.csv and history.csv) and a few of the evaluation's sample PNGs, for committing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

from lpdvae.evaluation.baselines import BASELINES
from lpdvae.evaluation.gate import allowed_gap
from lpdvae.params import EvaluateParams, load_params

HERE = Path(__file__).resolve().parent
COMMON = {"min_margin": 0.02, "stat_rel_tolerance": 0.10, "stat_abs_floor": 0.02,
          "min_unique_fraction": 0.95}
TARGETS = {  # issue 14: the demo's and the full profile's targets, in the gate's own terms
    "demo": {**COMMON, "min_note_f1": 0.15},
    "full": {**COMMON, "min_note_f1": 0.5},
}


def target_gate(root: Path, profile: str) -> EvaluateParams:
    """The run's evaluate params with the issue's target numbers in place of the shipped ones.
    A run under `--root` has no params.yaml of its own: then the project's statistics list."""
    params_file = root / "params.yaml" if (root / "params.yaml").exists() else HERE.parent / "params.yaml"
    return dataclasses.replace(load_params(params_file).evaluate, **TARGETS[profile])


def report(root: Path, profile: str) -> dict:
    ev = json.loads((root / "reports/eval/metrics.json").read_text())
    tr = json.loads((root / "models/vae/train_metrics.json").read_text())
    gate = target_gate(root, profile)
    f1 = ev["recon_note_f1"]
    rows = {"recon_note_f1 (test)": [f1, None, f1 >= gate.min_note_f1],
            "recon_note_f1 (train)": [ev["train.recon_note_f1"], ev["baseline.average_cell.train.recon_note_f1"], None]}
    for name in BASELINES:  # the model's margin over each baseline: its interval's lower bound decides
        rows[f"model - {name} baseline (lower bound)"] = [ev[f"margin.{name}.lo"], ev[f"baseline.{name}.recon_note_f1"],
                                                          ev[f"margin.{name}.lo"] > gate.min_margin]
    stats = sorted({k.split(".", 1)[1] for k in ev if k.startswith("generated.") and "/" not in k})
    for s in stats:
        gen, ref = ev[f"generated.{s}"], ev.get(f"reference.{s}")
        ok = None if ref is None else abs(gen - ref) <= allowed_gap(ref, gate, ev.get(f"split_gap.{s}", 0.0))
        rows[f"{s} (generated vs data)"] = [gen, ref, ok]
    rows["unique samples"] = [ev["diversity.unique_fraction"], None,
                              ev["diversity.unique_fraction"] >= gate.min_unique_fraction]
    rows["copy check p (samples vs val at best match)"] = [ev["copy.p_value"], None, ev["copy.p_value"] >= gate.copy_alpha]
    rows["samples' median best match vs val floor"] = [ev["copy.median_best_match"], ev.get("copy.val_floor"),
                                                       ev["copy.median_best_match"] >= ev.get("copy.val_floor", 0.0)]
    rows["mean pairwise note F1"] = [ev["diversity.mean_pairwise_note_f1"], None, None]
    rows["KL nats"] = [ev["kl_nats"], None, None]
    rows["active units"] = [ev["active_units"], None, None]
    rows["temperature (chosen on val)"] = [ev["temperature"], None, None]
    rows["train wall time s"] = [tr["train_time_s"], None, None]
    rows["train steps"] = [tr["steps"], None, None]
    blessing = json.loads((root / "reports/eval/blessing.json").read_text())
    return {"profile": profile, "targets": TARGETS[profile], "rows": rows, "blessed": blessing["blessed"],
            "reasons": blessing["reasons"],
            "all_targets_met": all(v[2] is not False for v in rows.values())}


def markdown(rep: dict) -> str:
    fmt = lambda v: "–" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = [f"# Model quality: {rep['profile']} profile", "",
             "| measure | model | baseline / data | target met |", "|---|---|---|---|"]
    for name, (a, b, ok) in rep["rows"].items():
        lines.append(f"| {name} | {fmt(a)} | {fmt(b)} | {'–' if ok is None else ('yes' if ok else 'NO')} |")
    lines += ["", f"blessed by the shipped gate: {rep['blessed']}"]
    lines += [f"- {r}" for r in rep["reasons"]]
    return "\n".join(lines) + "\n"


def learning_curves(root: Path, out_png: Path) -> None:
    """Train loss per step and val recon / KL per epoch, side by side."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    read = lambda name: list(csv.DictReader((root / "models/vae" / name).open()))  # noqa: E731
    hist, epochs = read("history.csv"), read("epochs.csv")
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot([int(r["step"]) for r in hist], [float(r["recon"]) for r in hist], lw=0.6, label="train recon NLL")
    a.plot([int(r["step"]) for r in epochs], [float(r["val_recon"]) for r in epochs], "o-", label="val recon NLL")
    a.set_xlabel("step"), a.set_ylabel("nats per phrase"), a.set_ylim(top=400), a.legend()
    b.plot([int(r["step"]) for r in epochs], [float(r["val_kl"]) for r in epochs], "o-", label="val KL")
    b.set_xlabel("step"), b.set_ylabel("nats per phrase"), b.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def write_docs(root: Path, rep: dict, out: Path, samples: int = 3) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    learning_curves(root, out / "learning_curves.png")
    lines = [markdown(rep), "## Learning curves", "", "![learning curves](learning_curves.png)", "",
             "## Samples (drawn from the prior at the temperature chosen on val)", ""]
    for png in sorted((root / "reports/eval/samples").glob("generated-*.png"))[:samples]:
        shutil.copyfile(png, out / png.name)
        shutil.copyfile(png.with_suffix(".mid"), out / png.with_suffix(".mid").name)
        lines.append(f"![{png.stem}]({png.name}) ([MIDI]({png.with_suffix('.mid').name}))")
    (out / "README.md").write_text("\n".join(lines) + "\n")
    return out / "README.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality_report", description=__doc__)
    parser.add_argument("--root", type=Path, default=HERE.parent, help="project root of the run")
    parser.add_argument("--profile", choices=sorted(TARGETS), default="demo")
    parser.add_argument("--docs", type=Path, help="also write DIR/README.md with curves and samples")
    args = parser.parse_args(argv)
    try:
        rep = report(args.root, args.profile)
    except FileNotFoundError as exc:
        print(f"quality_report: {exc.filename}: missing (run `make run` first)", file=sys.stderr)
        return 1
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"quality-{args.profile}.json").write_text(json.dumps(rep, indent=2) + "\n")
    (out / f"quality-{args.profile}.md").write_text(markdown(rep))
    print(markdown(rep))
    if args.docs:
        print(f"wrote {write_docs(args.root, rep, args.docs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
