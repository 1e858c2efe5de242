"""One torchrun rank: `python -m lpdvae.training.worker --params P --tensors T --out O`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from lpdvae.params import load_params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lpdvae.training.worker",
                                     description="one rank of a torchrun training job")
    parser.add_argument("--params", type=Path, required=True)
    parser.add_argument("--tensors", required=True, help="folder or s3://bucket/prefix")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--checkpoints", default=None, help="folder or s3://bucket/prefix")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import os

    from lpdvae.errors import LpdvaeError
    from lpdvae.host.cpus import torch_threads
    from lpdvae.training.loop import run_rank

    torch_threads(int(os.environ.get("LOCAL_WORLD_SIZE", "1")))  # this rank's share of the pod's CPU quota
    try:
        run_rank(args.tensors, args.out, load_params(args.params), args.resume, args.checkpoints)
    except LpdvaeError as exc:  # e.g. a refused checkpoint: one line, as `lpdvae train` prints it
        print(f"lpdvae train (rank {os.environ.get('RANK', '0')}): {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
