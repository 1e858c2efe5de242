"""`lpdvae evaluate`: options here, the step (torch) imported on run."""

from __future__ import annotations

import argparse
from pathlib import Path

from lpdvae.layout import CWD
from lpdvae.params import Params


def _cmd(args: argparse.Namespace, params: Params) -> int:
    from lpdvae.steps.evaluate import evaluate

    result = evaluate(Path(args.model), Path(args.tensors), Path(args.out), params)
    verdict = "blessed" if result.blessed else "NOT blessed: " + "; ".join(result.reasons)
    m = result.metrics
    best = max((k for k in m if k.startswith("baseline.") and k.endswith(".recon_note_f1") and k.count(".") == 2),
               key=m.__getitem__)
    print(f"evaluate: note F1 {m['recon_note_f1']:.3f} (best baseline {best.split('.')[1]} {m[best]:.3f}), "
          f"{verdict}; samples in {result.out_dir / 'index.html'}")
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="metrics, samples (MIDI/PNG/WAV) and the blessing",
                       description="Reconstruction vs the average-cell baseline, generated music vs "
                       "the data (MuseGAN statistics), diversity and copying; render samples and "
                       "decide the blessing.")
    p.add_argument("--model", default=str(CWD.model), help="trained model folder (default: %(default)s)")
    p.add_argument("--tensors", default=str(CWD.tensors), help="tensor folder (default: %(default)s)")
    p.add_argument("--out", default=str(CWD.eval), help="output folder (default: %(default)s)")
    p.set_defaults(func=_cmd)
