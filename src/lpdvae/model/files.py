"""Model files: `model.pt` (the weights, loaded without unpickling code) and `model.json` (what
rebuilds the network and decodes its output), written atomically; read with bounded sizes and
an error that names the file and the reason.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lpdvae.errors import ModelFileError
from lpdvae.io import (
    NotRegularFile,
    atomic_write_bytes,
    atomic_write_json,
    first_line,
    regular_file_size,
)
from lpdvae.model.vae import MusicVAE
from lpdvae.params import ModelParams, Params, RepresentationParams

MODEL_FILE = "model.pt"
META_FILE = "model.json"
FORMAT_VERSION = 16  # 16: the whole z from a kernel density (model.prior: kde); 15: the echo counts the notes of a step one bar before; 14: the cells' echo of the bar before (model.bar_echo); 13: track presence (model.track_presence), the bars' kernel density (model.bar_prior: kde); 12: learned bar prior (model.bar_prior), bar harmony (model.bar_harmony); 11: cell harmony (pitch classes earlier in the bar); 10: bar silence; 9: cell chain; 8: per-bar latents; 7: voice chain; 6: conv phrase encoder and bar decoder; 5: factorised monophonic head


def model_meta(params: Params) -> dict[str, Any]:
    """What `load_model` needs to rebuild the network and decode its output."""
    return {
        "format_version": FORMAT_VERSION,
        "model": dataclasses.asdict(params.model),
        "representation": dataclasses.asdict(params.representation),
        "tracks": [dataclasses.asdict(t) for t in params.tracks],
        "params_digest": params.digest(),
        "torch_version": torch.__version__,
    }


def build_model(params: Params) -> MusicVAE:
    return MusicVAE(params.model, params.representation, [t.kind for t in params.tracks])


def unwrap(model: nn.Module) -> MusicVAE:
    """The bare MusicVAE inside DDP / torch.compile / Reconstructor wrappers."""
    while not isinstance(model, MusicVAE):
        inner = next((getattr(model, a) for a in ("module", "_orig_mod", "vae") if hasattr(model, a)),
                     None)
        if not isinstance(inner, nn.Module):
            raise TypeError(f"not a MusicVAE: {type(model).__name__}")
        model = inner
    return model


def save_model(model: nn.Module, out_dir: str | Path, params: Params) -> Path:
    """Write `model.pt` (state dict) and `model.json` (meta) into `out_dir`; returns `out_dir`."""
    import io

    out_dir = Path(out_dir)
    vae = unwrap(model)
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in vae.state_dict().items()}, buf)
    atomic_write_bytes(out_dir / MODEL_FILE, buf.getvalue())
    atomic_write_json(out_dir / META_FILE, model_meta(params))
    return out_dir


def load_model(model_dir: str | Path, map_location: str | torch.device = "cpu") -> MusicVAE:
    """Rebuild a saved MusicVAE (eval mode) from `model.pt` + `model.json`; `.meta` holds the meta.

    Nothing in either file is run: the weights go through torch's weights-only unpickler, the
    meta is plain JSON. Every failure names the file and the reason in one line: a missing file
    is a FileNotFoundError, anything else a `ModelFileError` (a ValueError)."""
    model_dir = Path(model_dir)
    meta = read_meta(model_dir)
    state = read_weights(model_dir / MODEL_FILE)
    try:
        args = (ModelParams(**dict(meta["model"])), RepresentationParams(**meta["representation"]),
                [t["kind"] for t in meta["tracks"]])
        with torch.device("meta"):  # shapes only: a meta asking for a huge network allocates nothing
            expected = {k: tuple(v.shape) for k, v in MusicVAE(*args).state_dict().items()}
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise ModelFileError(f"{model_dir / META_FILE}: not this lpdvae's model meta: "
                             f"{type(exc).__name__}: {first_line(exc)}") from None
    mismatch = _state_mismatch(expected, {k: tuple(v.shape) for k, v in state.items()})
    if mismatch:
        raise ModelFileError(f"{model_dir}: model.json does not match model.pt: {mismatch}")
    vae = MusicVAE(*args)
    vae.load_state_dict(state)
    vae.to(map_location)
    vae.meta = meta
    return vae.eval()


META_MAX_BYTES = 1 << 20  # a model.json is a few kB: anything near this is not one
_JSON_KIND = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


def read_meta(model_dir: Path) -> dict[str, Any]:
    """`model.json` as a dict of this format, read only when it is a regular file of sane size."""
    path = model_dir / META_FILE
    try:
        _check_regular(path, META_MAX_BYTES)
        meta = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no model here (run `lpdvae train`)") from None
    except (OSError, ValueError, RecursionError) as exc:  # JSONDecodeError and bad UTF-8 are ValueErrors
        raise ModelFileError(f"{path}: unreadable model meta: {first_line(exc)}") from None
    if not isinstance(meta, dict):
        raise ModelFileError(f"{path}: not a model meta: a JSON {_JSON_KIND.get(type(meta), 'value')}, "
                             "not an object")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(f"{path}: model format {meta.get('format_version')!r}, this lpdvae reads "
                             f"format {FORMAT_VERSION}: retrain it (`lpdvae train`)")
    return meta


def read_weights(path: Path) -> dict[str, Tensor]:
    """`model.pt` as a state dict, through the weights-only unpickler (a pickled object is refused
    before anything in it runs)."""
    import pickle
    import warnings

    try:
        size = _check_regular(path, None)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no weights beside model.json") from None
    if size == 0:
        raise ModelFileError(f"{path}: empty file, not model weights")
    try:
        with warnings.catch_warnings():  # garbage can make torch warn too: the error below is the one line
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelFileError(f"{path}: not model weights, refused by torch's weights-only loader "
                             f"before anything in it ran ({_unpickler_reason(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - parsing outside bytes: any parser error means "not weights"
        raise ModelFileError(f"{path}: not model weights ({type(exc).__name__}: "
                             f"{first_line(exc)})") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ModelFileError(f"{path}: not a state dict (names to tensors) but a {type(state).__name__}")
    return state


def _check_regular(path: Path, max_bytes: int | None) -> int:
    """The size of `path`, refused unless a regular file (a FIFO would block, a device never end)."""
    try:
        size = regular_file_size(path)
    except NotRegularFile:
        raise ModelFileError(f"{path}: not a regular file") from None
    if max_bytes is not None and size > max_bytes:
        raise ModelFileError(f"{path}: {size} bytes, more than the {max_bytes} a model meta can be")
    return size


def _state_mismatch(expected: dict[str, tuple[int, ...]], got: dict[str, tuple[int, ...]]) -> str:
    """'' when the names and shapes agree, else the first difference and how many there are."""
    diffs = [f"size mismatch for {k}: {list(got[k])} in model.pt, {list(v)} from model.json"
             for k, v in expected.items() if k in got and got[k] != v]
    diffs += [f"{k} missing from model.pt" for k in expected if k not in got]
    diffs += [f"unexpected {k} in model.pt" for k in got if k not in expected]
    return "" if not diffs else diffs[0] + (f" (and {len(diffs) - 1} more)" if len(diffs) > 1 else "")


def _unpickler_reason(exc: BaseException) -> str:
    """torch's weights-only refusal is a page of advice; the line that says what it met is the reason."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    found = [line for line in lines if line.startswith(("Unsupported", "Trying to"))]
    return (found or [first_line(exc)])[0][:200]
