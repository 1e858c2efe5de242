"""`lpdvae tensorize`: options here, the step (numpy, pypianoroll) imported on run."""

from __future__ import annotations

import argparse
from pathlib import Path

from lpdvae.layout import CWD
from lpdvae.params import Params


def _cmd(args: argparse.Namespace, params: Params) -> int:
    from lpdvae.data.shards import SPLITS
    from lpdvae.steps.tensorize import tensorize

    r = tensorize(Path(args.raw), Path(args.validated), Path(args.out), params)
    print(f"tensorized {r.n_songs} songs into {r.n_phrases} phrases in {r.out_dir}: "
          + ", ".join(f"{k} {r.phrases[k]} phrases / {r.songs[k]} songs" for k in SPLITS)
          + (f"; {len(r.failed)} songs could not be read" if r.failed else "")
          + (f"; {len(r.warnings)} split warning(s), in the log and index.json" if r.warnings else ""))
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tensorize", help="cut accepted songs into sharded phrase tensors",
                       description="Merge tracks, downsample, crop, binarize and cut every accepted song "
                       "into phrases; write packed-bit shards and index.json with a song-level split.")
    p.add_argument("--raw", default=str(CWD.raw), help="ingested songs folder (default: %(default)s)")
    p.add_argument("--validated", default=str(CWD.validated), help="validate output folder (default: %(default)s)")
    p.add_argument("--out", default=str(CWD.tensors), help="output folder (default: %(default)s)")
    p.set_defaults(func=_cmd)
