"""train: phrase shards -> MusicVAE, checkpoints and an MLflow run.

`launch` is what every runner calls (the CLI, `lpdvae run`, the DVC stage through the CLI, the
KFP components): it trains in this process when `train.nproc` is 1 or it already runs under
torchrun, and otherwise starts `torchrun --standalone --nproc_per_node N`, whose ranks run
`python -m lpdvae.training.worker`. `train` is this process's share alone (one rank; DDP with
gloo on CPU, nccl on CUDA; rank 0 alone logs and writes). The loop and its parts live in
`lpdvae.training`, which never imports this module.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from lpdvae.errors import LpdvaeError
from lpdvae.params import Params
from lpdvae.training.distributed import under_torchrun
from lpdvae.training.outputs import TrainResult, read_result

log = logging.getLogger(__name__)


def launch(tensor_dir: str | Path, out_dir: Path, params: Params, resume: bool = False,
           checkpoints: str | None = None) -> TrainResult:
    """Train with `params.train.nproc` processes; returns rank 0's result. `tensor_dir`: a tensor
    folder or `s3://bucket/prefix` (streamed shard by shard, `lpdvae.data.shard_stream`).
    `checkpoints`: a folder or `s3://bucket/prefix` (default `<out_dir>.checkpoints/`)."""
    tensor_dir, out_dir = tensor_location(tensor_dir), Path(out_dir).resolve()
    checkpoints = _absolute(checkpoints)
    if params.train.nproc == 1 or under_torchrun():
        return train(tensor_dir, out_dir, params, resume, checkpoints)
    return _torchrun(tensor_dir, out_dir, params, resume, checkpoints)


def tensor_location(where: str | Path) -> str | Path:
    """An s3:// prefix as it is, a folder made absolute (torchrun's ranks may start elsewhere)."""
    return str(where).rstrip("/") if str(where).startswith("s3://") else Path(where).resolve()


def _absolute(checkpoints: str | None) -> str | None:
    if checkpoints is None or "://" in checkpoints:
        return checkpoints
    return str(Path(checkpoints).resolve())


def train(tensor_dir: str | Path, out_dir: Path, params: Params, resume: bool = False,
          checkpoints: str | None = None) -> TrainResult:
    """Train a MusicVAE on `tensor_dir`'s train split in this process (one rank); torch's threads
    are this rank's share of the container's CPU quota (torchrun's LOCAL_WORLD_SIZE ranks share it)."""
    from lpdvae.host.cpus import torch_threads
    from lpdvae.training.loop import run_rank

    torch_threads(int(os.environ.get("LOCAL_WORLD_SIZE", "1")))

    return run_rank(tensor_dir, out_dir, params, resume, checkpoints)


def worker_command(tensor_dir: str | Path, out_dir: Path, params_file: Path, nproc: int,
                   resume: bool, checkpoints: str | None = None) -> list[str]:
    """The torchrun command line whose `nproc` ranks each run `lpdvae.training.worker`."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "lpdvae.training.worker",
           "--params", str(params_file), "--tensors", str(tensor_dir), "--out", str(out_dir)]
    cmd += ["--checkpoints", checkpoints] if checkpoints else []
    return cmd + (["--resume"] if resume else [])


def _torchrun(tensor_dir: str | Path, out_dir: Path, params: Params, resume: bool,
              checkpoints: str | None) -> TrainResult:
    n = params.train.nproc
    with tempfile.TemporaryDirectory(prefix="lpdvae-train-") as tmp:
        params_file = Path(tmp) / "params.yaml"
        params_file.write_text(yaml.safe_dump(params.to_dict(), sort_keys=False))
        cmd = worker_command(tensor_dir, out_dir, params_file, n, resume, checkpoints)
        env = dict(os.environ)
        import torch

        if not torch.cuda.is_available():
            env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # --standalone: every rank on this host
        log.info("launching %d processes: %s", n, " ".join(cmd))
        rc = subprocess.run(cmd, env=env).returncode
    if rc != 0:
        raise LpdvaeError(f"distributed training ({n} processes under torchrun) exited with code {rc}")
    return read_result(out_dir)


__all__ = ["TrainResult", "launch", "train"]
