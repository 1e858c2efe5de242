"""Checkpoint files `step-XXXXXXXX.pt` in `<out>.checkpoints/`: atomic, pruned, newest-readable.

A checkpoint holds the model, optimizer, scheduler, every rank's RNG state, the noise
generator and the loop `State`, so a resumed run ends with bit-identical weights.
"""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path
from typing import Any

import torch

from lpdvae.errors import LpdvaeError
from lpdvae.io import atomic_write_bytes

log = logging.getLogger(__name__)

KEEP_CHECKPOINTS = 2
CKPT_RE = re.compile(r"^step-(\d{8})\.pt$")


def checkpoint_dir(out_dir: str | Path) -> Path:
    """`<out_dir>.checkpoints/`: beside the DVC output, so a rerun does not delete it."""
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + ".checkpoints")


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Checkpoint files, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    return sorted(p for p in ckpt_dir.iterdir() if CKPT_RE.match(p.name))


def write_checkpoint(ckpt_dir: Path, step: int, payload: dict[str, Any]) -> Path:
    """Atomically write one checkpoint and keep only the newest `KEEP_CHECKPOINTS`."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    path = ckpt_dir / f"step-{step:08d}.pt"
    atomic_write_bytes(path, buf.getvalue())
    for old in list_checkpoints(ckpt_dir)[:-KEEP_CHECKPOINTS]:
        old.unlink(missing_ok=True)
    log.debug("checkpoint %s", path)
    return path


def clear_checkpoints(ckpt_dir: Path) -> None:
    for old in list_checkpoints(ckpt_dir):
        old.unlink(missing_ok=True)


def read_newest(ckpt_dir: Path) -> dict[str, Any] | None:
    """The newest readable checkpoint; a damaged file falls back to the one before."""
    for path in reversed(list_checkpoints(ckpt_dir)):
        try:
            # CPU first: RNG states must stay CPU ByteTensors; load_state_dict moves the rest
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:
            log.warning("%s: unreadable checkpoint (%s), trying an older one", path, exc)
    return None


def check_compatible(ckpt: dict[str, Any], expected: dict[str, Any], ckpt_dir: Path) -> None:
    """Refuse to resume from a checkpoint of another model format, model or data/batch."""
    again = "run without --resume to start over"
    if ckpt.get("model_format") != expected["model_format"]:
        raise LpdvaeError(f"{ckpt_dir}: checkpoints hold model format {ckpt.get('model_format')}, "
                          f"this lpdvae trains format {expected['model_format']}; {again}")
    if ckpt.get("model_params") != expected["model_params"]:
        raise LpdvaeError(f"{ckpt_dir}: checkpoints were trained with other model params; {again}")
    if (ckpt.get("n_train"), ckpt.get("batch_size")) != (expected["n_train"], expected["batch_size"]):
        raise LpdvaeError(f"{ckpt_dir}: checkpoints were trained on {ckpt.get('n_train')} phrases "
                          f"with global batch {ckpt.get('batch_size')}; {again}")
    if ckpt.get("params_digest") != expected["params_digest"]:
        log.warning("params changed since the checkpoint; resuming anyway")
