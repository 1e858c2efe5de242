"""train: phrase shards -> MusicVAE, checkpoints and an MLflow run.

`train` runs this process's share: alone, or as one rank under torchrun (DDP; gloo on CPU,
nccl on CUDA; rank 0 alone logs and writes). `lpdvae.training.launcher.launch` is what runners
call: it starts torchrun when `train.nproc` > 1. The loop and its parts live in
`lpdvae.training`.
"""

from __future__ import annotations

from pathlib import Path

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


__all__ = ["TrainResult", "train"]
