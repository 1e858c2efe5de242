"""The frozen evaluation set and what a model does on it, phrase by phrase.

evaluate measures the challenger here and writes the per-phrase record (`per_phrase.npz`, with
`evaluation_set.json` naming the set by content hash); register measures the champion with the
same function on the same phrases, the same generation seed and the same temperature rule, so
the two can be compared pairwise (`lpdvae.registry.promotion`). The set is a bounded, deterministic prefix
of the validation split (test is sealed: it only reports, it never chooses a temperature or a
champion); its identity is the sha256 of those phrases' codes, independent of sharding. `measure`
reads the validation and training splits only.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lpdvae.data.shards import load_split, read_index
from lpdvae.errors import DataError
from lpdvae.evaluation.gate import closest_temperature
from lpdvae.evaluation.metrics import aggregate_metrics, musegan_per_phrase, note_counts
from lpdvae.evaluation.voices import is_voice_set, voice_per_phrase, voice_ranges
from lpdvae.io import atomic_write_bytes, atomic_write_json
from lpdvae.params import EvaluateParams, RepresentationParams

if TYPE_CHECKING:  # torch is imported where a model runs: register's first run needs neither
    from lpdvae.model.vae import MusicVAE

METRIC_PHRASES = 256  # test / val / train phrases measured (bounded, spread over the split: `shards.spread`)
SPLIT = "val"  # what the temperature and the champion comparison are chosen on
PER_PHRASE_FILE = "per_phrase.npz"
SET_FILE = "evaluation_set.json"


@dataclass(frozen=True)
class PerPhrase:
    """One model on the evaluation set: note counts per phrase `[N, 3]` (correct, predicted,
    true), statistics per generated phrase and per evaluation-set phrase (`{key: [n]}`, NaN where
    undefined), and the set and generation it was measured with."""

    note_counts: np.ndarray
    generated: dict[str, np.ndarray]
    reference: dict[str, np.ndarray]
    info: dict[str, Any]

    @property
    def set_id(self) -> str:
        return str(self.info["sha256"])


@dataclass(frozen=True)
class Measured:
    """What `measure` computed, for evaluate's other metrics and its samples page."""

    val: np.ndarray
    train: np.ndarray
    generated: np.ndarray
    temperature: float
    per_phrase: PerPhrase
    voice_ranges: np.ndarray | None  # [T, 2] from train, for sets of monophonic voices


def set_id(phrases: np.ndarray) -> str:
    """Content hash of the evaluation phrases (shape and codes)."""
    h = hashlib.sha256(json.dumps(list(phrases.shape)).encode())
    h.update(np.ascontiguousarray(phrases, dtype=np.uint8).tobytes())
    return h.hexdigest()


def tensor_set_id(tensor_dir: Path) -> str:
    """The evaluation set's id as `measure` would record it for `tensor_dir` (no model needed)."""
    return set_id(load_split(Path(tensor_dir), SPLIT, limit=METRIC_PHRASES))


def reconstruct(vae: MusicVAE, x: np.ndarray, batch: int = 64) -> np.ndarray:
    import torch

    parts = [vae.reconstruct(torch.from_numpy(x[i : i + batch])).numpy() for i in range(0, len(x), batch)]
    return np.concatenate(parts) if parts else np.zeros_like(x)


def check_shape(vae: MusicVAE, tensor_dir: Path) -> None:
    shape = tuple(read_index(tensor_dir)["shape"])
    if shape != tuple(vae.shape):
        raise DataError(f"{tensor_dir}: phrases are {list(shape)} but the model was trained on "
                        f"{list(vae.shape)} (tracks, bars, steps, pitches)")


def phrase_statistics(vae: MusicVAE, ranges: np.ndarray | None) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """Per-phrase statistics for this model's tracks: MuseGAN's, plus the voice statistics when
    the tracks are monophonic voices (`lpdvae.evaluation.voices`, ranges fitted on train)."""
    rep = RepresentationParams(**vae.meta["representation"])
    names = [t["name"] for t in vae.meta["tracks"]]
    drums = [t["kind"] == "drums" for t in vae.meta["tracks"]]

    def per(arr: np.ndarray) -> dict[str, np.ndarray]:
        out = musegan_per_phrase(arr, names, drums, rep)
        if ranges is not None:
            out.update(voice_per_phrase(arr, names, ranges))
        return dict(sorted(out.items()))

    return per


def measure(vae: MusicVAE, tensor_dir: Path, ev: EvaluateParams) -> Measured:
    """Reconstruct the evaluation set (validation) and generate `ev.n_generated` phrases (seed
    `ev.seed`) at the temperature whose statistics sit closest to the validation split's."""
    tensor_dir = Path(tensor_dir)
    check_shape(vae, tensor_dir)
    val, train = (load_split(tensor_dir, s, limit=METRIC_PHRASES) for s in (SPLIT, "train"))
    if not len(val):
        raise DataError(f"{tensor_dir}: the validation split is empty: nothing to choose the temperature "
                        "and compare champions on (more songs, or a larger tensorize.val_fraction)")
    kinds = [t["kind"] for t in vae.meta["tracks"]]
    ranges = voice_ranges(train) if is_voice_set(kinds) and len(train) else None
    per = phrase_statistics(vae, ranges)
    val_per = per(val)
    tries = {t: vae.sample(ev.n_generated, ev.seed, t).numpy() for t in ev.temperatures}
    tried = {t: per(g) for t, g in tries.items()}
    temperature = closest_temperature({t: aggregate_metrics(p) for t, p in tried.items()},
                                      aggregate_metrics(val_per), ev)
    info = {"split": SPLIT, "sha256": set_id(val), "n_phrases": len(val), "limit": METRIC_PHRASES,
            "seed": ev.seed, "n_generated": ev.n_generated, "temperature": temperature}
    record = PerPhrase(note_counts(reconstruct(vae, val), val), tried[temperature], val_per, info)
    return Measured(val, train, tries[temperature], temperature, record, ranges)


def write_per_phrase(out_dir: Path, record: PerPhrase) -> None:
    """`per_phrase.npz` (note counts, statistics per phrase) and `evaluation_set.json`, atomically."""
    arrays = {"note_counts": record.note_counts}
    arrays.update({f"generated/{k}": v for k, v in record.generated.items()})
    arrays.update({f"reference/{k}": v for k, v in record.reference.items()})
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(Path(out_dir) / PER_PHRASE_FILE, buf.getvalue())
    atomic_write_json(Path(out_dir) / SET_FILE, record.info)


def read_per_phrase(eval_dir: Path) -> PerPhrase:
    """The record `write_per_phrase` left in `eval_dir`; a missing or unreadable one is a DataError
    naming the file (an evaluation from before per-phrase records: evaluate again)."""
    eval_dir = Path(eval_dir)
    npz, info_file = eval_dir / PER_PHRASE_FILE, eval_dir / SET_FILE
    try:
        with np.load(npz) as data:
            arrays = {k: data[k] for k in data.files}
        info = json.loads(info_file.read_text())
    except FileNotFoundError as exc:
        raise DataError(f"{exc.filename}: missing; run `lpdvae evaluate` again to write the "
                        "per-phrase record register compares champions on") from None
    except (ValueError, OSError) as exc:
        raise DataError(f"{npz} or {info_file}: unreadable: {exc}") from None
    if "note_counts" not in arrays or "sha256" not in info:
        raise DataError(f"{npz}: no note_counts, or {info_file} no sha256: not an evaluation record")
    pick = lambda side: {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(side + "/")}  # noqa: E731
    return PerPhrase(arrays["note_counts"], pick("generated"), pick("reference"), info)
