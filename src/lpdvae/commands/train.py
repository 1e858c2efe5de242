"""`lpdvae train`: options here, the step (torch, MLflow) imported on run."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from lpdvae.errors import LpdvaeError
from lpdvae.layout import CWD
from lpdvae.params import Params


def _cmd(args: argparse.Namespace, params: Params) -> int:
    from lpdvae.steps.train import launch
    from lpdvae.training.distributed import under_torchrun

    if args.nproc is not None:
        if args.nproc < 1:
            raise LpdvaeError(f"--nproc must be >= 1, got {args.nproc}")
        params = dataclasses.replace(params, train=dataclasses.replace(params.train,
                                                                       nproc=args.nproc))
    result = launch(args.tensors, args.out, params, resume=args.resume, checkpoints=args.checkpoints)
    if under_torchrun() and int(os.environ.get("RANK", "0")) != 0:
        return 0
    m = result.metrics
    print(f"trained {m['steps']} steps / {m['epochs']} epochs "
          f"({m['samples_per_s'] or 0:.1f} samples/s): val_loss={m.get('val_loss')} "
          f"-> {result.out_dir} (run {result.run_id})")
    return 0


def _tensors(value: str) -> str | Path:
    return value if value.startswith("s3://") else Path(value)  # Path() would fold s3:// into s3:/


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the VAE on tensor shards (DDP with --nproc > 1)",
                       description="train: phrase shards -> MusicVAE, checkpoints and an MLflow run.")
    p.add_argument("--tensors", type=_tensors, default=CWD.tensors, metavar="DIR|s3://BUCKET/PREFIX",
                   help="tensorize output folder, or its copy on S3 read shard by shard with the pipeline "
                   "root's credentials, each rank fetching only its own shards (default: %(default)s)")
    p.add_argument("--out", type=Path, default=CWD.model,
                   help="model output folder; checkpoints go to <out>.checkpoints/ "
                   "(default: %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("--checkpoints", default=None, metavar="DIR|s3://BUCKET/PREFIX",
                   help="where checkpoints go (default: <out>.checkpoints/); s3:// uses the pipeline "
                   "root's credentials (LPDVAE_ARTIFACTS_*), what a TrainJob's nodes resume from")
    p.add_argument("--nproc", type=int, default=None,
                   help="processes (overrides train.nproc; >1 launches torchrun)")
    p.set_defaults(func=_cmd)
