"""Where training runs: in this process (`train.nproc` 1, or already under torchrun) or under
`torchrun --standalone --nproc_per_node N`, which starts `python -m lpdvae.training.worker`.

The CLI, the DVC stage and the KFP component all call `launch`; nothing re-invokes the CLI.
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


def launch(tensor_dir: Path, out_dir: Path, params: Params, resume: bool = False) -> TrainResult:
    """Train with `params.train.nproc` processes; returns rank 0's result."""
    from lpdvae.steps.train import train

    tensor_dir, out_dir = Path(tensor_dir).resolve(), Path(out_dir).resolve()
    if params.train.nproc == 1 or under_torchrun():
        return train(tensor_dir, out_dir, params, resume)
    return _torchrun(tensor_dir, out_dir, params, resume)


def worker_command(tensor_dir: Path, out_dir: Path, params_file: Path, nproc: int,
                   resume: bool) -> list[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "lpdvae.training.worker",
           "--params", str(params_file), "--tensors", str(tensor_dir), "--out", str(out_dir)]
    return cmd + (["--resume"] if resume else [])


def _torchrun(tensor_dir: Path, out_dir: Path, params: Params, resume: bool) -> TrainResult:
    n = params.train.nproc
    with tempfile.TemporaryDirectory(prefix="lpdvae-train-") as tmp:
        params_file = Path(tmp) / "params.yaml"
        params_file.write_text(yaml.safe_dump(params.to_dict(), sort_keys=False))
        cmd = worker_command(tensor_dir, out_dir, params_file, n, resume)
        env = dict(os.environ)
        import torch

        if not torch.cuda.is_available():
            env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # --standalone: every rank on this host
        log.info("launching %d processes: %s", n, " ".join(cmd))
        rc = subprocess.run(cmd, env=env).returncode
    if rc != 0:
        raise LpdvaeError(f"distributed training ({n} processes under torchrun) exited with code {rc}")
    return read_result(out_dir)
