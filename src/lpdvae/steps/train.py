"""train: phrase shards -> MusicVAE, checkpoints and an MLflow run.

`train` runs this process's share: alone, or as one rank under torchrun (DDP; gloo on CPU,
nccl on CUDA; rank 0 alone logs and writes). `lpdvae.training.launcher.launch` is what runners
call: it starts torchrun when `train.nproc` > 1. The loop and its parts live in
`lpdvae.training`.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from lpdvae.errors import LpdvaeError
from lpdvae.params import Params
from lpdvae.training.outputs import TrainResult


def train(tensor_dir: Path, out_dir: Path, params: Params, resume: bool = False) -> TrainResult:
    """Train a MusicVAE on `tensor_dir`'s train split in this process (one rank)."""
    import torch

    from lpdvae.training.distributed import init_distributed, shutdown
    from lpdvae.training.loop import Trainer

    tensor_dir, out_dir = Path(tensor_dir).resolve(), Path(out_dir).resolve()
    env = init_distributed(params.train.device)
    prev_det = torch.are_deterministic_algorithms_enabled()
    try:
        return Trainer(tensor_dir, out_dir, params, env).run(resume)
    finally:
        torch.use_deterministic_algorithms(prev_det)
        shutdown(env)


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the VAE on tensor shards (DDP with --nproc > 1)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--tensors", type=Path, default=Path("data/tensors"),
                   help="tensorize output folder (default: %(default)s)")
    p.add_argument("--out", type=Path, default=Path("models/vae"),
                   help="model output folder; checkpoints go to <out>.checkpoints/ "
                   "(default: %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("--nproc", type=int, default=None,
                   help="processes (overrides train.nproc; >1 launches torchrun)")
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace, params: Params) -> int:
    from lpdvae.training.launcher import launch

    if args.nproc is not None:
        if args.nproc < 1:
            raise LpdvaeError(f"--nproc must be >= 1, got {args.nproc}")
        params = dataclasses.replace(params, train=dataclasses.replace(params.train,
                                                                       nproc=args.nproc))
    result = launch(args.tensors, args.out, params, resume=args.resume)
    m = result.metrics
    print(f"trained {m['steps']} steps / {m['epochs']} epochs "
          f"({m['samples_per_s'] or 0:.1f} samples/s): val_loss={m.get('val_loss')} "
          f"-> {result.out_dir} (run {result.run_id})")
    return 0


__all__ = ["TrainResult", "register_cli", "train"]
