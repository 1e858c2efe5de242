"""Checkpoints `step-XXXXXXXX.pt`: written atomically, pruned, read newest-first, never executed.

A checkpoint holds the model, optimizer, scheduler, every rank's RNG state, the noise
generator and the loop `State`, so a resumed run ends with bit-identical weights. Everything in
it is a tensor or a plain value (the RNG states too: `schedules.rng_state`), so it is read with
`torch.load(weights_only=True)`: a file that asks the unpickler to call anything (a planted
`__reduce__`) is refused with one line naming it, and nothing in it runs. Where the files live
is `checkpoint_store`: `<out>.checkpoints/` by default, an S3 prefix on the cluster.
"""

from __future__ import annotations

import io
import logging
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from lpdvae.errors import LpdvaeError
from lpdvae.training.checkpoint_store import CKPT_RE, Store, checkpoint_name, open_store

log = logging.getLogger(__name__)

KEEP_CHECKPOINTS = 2
REQUIRED = ("state", "model", "optimizer", "scheduler", "noise", "rng")
AGAIN = "delete it, or run without --resume to start over"

__all__ = ["CKPT_RE", "KEEP_CHECKPOINTS", "checkpoint_dir", "check_compatible", "clear_checkpoints",
           "open_store", "read_checkpoint", "read_newest", "size_cap", "write_checkpoint"]


def checkpoint_dir(out_dir: str | Path) -> Path:
    """`<out_dir>.checkpoints/`: beside the DVC output, so a rerun does not delete it."""
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + ".checkpoints")


def size_cap(model: torch.nn.Module, total_steps: int) -> int:
    """The most bytes a checkpoint of `model` can hold: the weights, the best weights and AdamW's
    two moments, plus the per-step history and slack; a larger file is refused before reading."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return 5 * weights + 1024 * total_steps + (256 << 20)


def write_checkpoint(store: Store, step: int, payload: dict[str, Any]) -> str:
    """Write one checkpoint (whole or not at all) and keep only the newest `KEEP_CHECKPOINTS`."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    name = checkpoint_name(step)
    store.put(name, buf.getvalue())
    for old in store.names()[:-KEEP_CHECKPOINTS]:
        store.delete(old)
    log.debug("checkpoint %s/%s", store, name)
    return name


def clear_checkpoints(store: Store) -> None:
    store.clear()


def read_checkpoint(store: Store, name: str, cap: int) -> dict[str, Any]:
    """One checkpoint, tensors and plain values only. Raises LpdvaeError (one line) for a file
    that would run code, is larger than `cap` or holds no checkpoint; other exceptions mean
    a damaged file."""
    where = f"{store}/{name}"
    size = store.size(name)
    if size > cap:
        raise LpdvaeError(f"{where}: refused: {size} bytes, more than a checkpoint of this model can hold "
                          f"({cap}); {AGAIN}")
    with store.fetch(name) as path:
        try:
            with warnings.catch_warnings():  # torch warns about a foreign pickle protocol before refusing it
                warnings.simplefilter("ignore", UserWarning)
                # CPU first: RNG states must stay CPU ByteTensors; load_state_dict moves the rest
                ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            if "Weights only load failed" not in str(exc):
                raise
            raise LpdvaeError(f"{where}: refused: loading it would {_why(str(exc))}; lpdvae checkpoints "
                              f"hold only tensors and plain values, so nothing in a file is run; {AGAIN}") from None
    if not isinstance(ckpt, dict) or not all(k in ckpt for k in REQUIRED):
        raise LpdvaeError(f"{where}: refused: not an lpdvae checkpoint (no {', '.join(REQUIRED)}); {AGAIN}")
    return ckpt


def _why(message: str) -> str:
    """What torch's weights-only unpickler refused, in a few words."""
    if m := re.search(r"GLOBAL (\S+)", message):
        return f"call {m.group(1)}"
    if m := re.search(r"Unsupported operand (\d+)", message):
        return f"need pickle opcode {m.group(1)}, which a weights-only file never uses"
    return "run code from the file (torch's weights-only loader refused it)"


def read_newest(store: Store, cap: int) -> tuple[str, dict[str, Any]] | None:
    """The newest readable checkpoint and its name; a damaged file (torn, truncated) falls back
    to the one before, a refused one stops here."""
    for name in reversed(store.names()):
        try:
            return name, read_checkpoint(store, name, cap)
        except LpdvaeError:
            raise
        except Exception as exc:
            log.warning("%s/%s: unreadable checkpoint (%s), trying an older one", store, name,
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return None


def check_compatible(ckpt: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    """Refuse to resume from a checkpoint of another model format, model or data/batch."""
    again = "run without --resume to start over"
    if ckpt.get("model_format") != expected["model_format"]:
        raise LpdvaeError(f"{where}: checkpoints hold model format {ckpt.get('model_format')}, "
                          f"this lpdvae trains format {expected['model_format']}; {again}")
    if ckpt.get("model_params") != expected["model_params"]:
        raise LpdvaeError(f"{where}: checkpoints were trained with other model params; {again}")
    if (ckpt.get("n_train"), ckpt.get("batch_size")) != (expected["n_train"], expected["batch_size"]):
        raise LpdvaeError(f"{where}: checkpoints were trained on {ckpt.get('n_train')} phrases "
                          f"with global batch {ckpt.get('batch_size')}; {again}")
    if ckpt.get("params_digest") != expected["params_digest"]:
        log.warning("params changed since the checkpoint; resuming anyway")
