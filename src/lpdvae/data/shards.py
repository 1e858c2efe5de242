"""Phrase shards on disk: packed-bit `.npy` files plus `index.json`, and a torch Dataset over them.

A shard holds at most `shard_size` phrases of note codes `[tracks, bars, steps, pitches]`
(`lpdvae.data.codes`: 0 silent, 1 sustain, 2 onset) as two bit planes packed along the pitch axis,
activity then onsets (84 pitches -> 2 x 11 bytes), so a 2,048-phrase shard of the LPD-5 shape is
~20 MiB. Readers memory-map shards: training never copies the corpus into RAM.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lpdvae.errors import DataError
from lpdvae.io import atomic_write_bytes, atomic_write_json

INDEX = "index.json"
SHARD_DIR = "shards"
SPLITS = ("train", "val", "test")
SONG_ORDER = "song_order"  # index key: per split, the song ids in the order their phrases were written


def packed_width(n_pitches: int) -> int:
    """Bytes per step of a packed phrase: two bit planes of `n_pitches` bits."""
    return 2 * ((n_pitches + 7) // 8)


def pack(phrases: np.ndarray) -> np.ndarray:
    """Codes `[n, T, B, S, P]` (0/1/2) -> uint8 `[..., packed_width(P)]`: activity bits, onset bits."""
    phrases = np.asarray(phrases)
    return np.concatenate([np.packbits(phrases > 0, axis=-1),
                           np.packbits(phrases == 2, axis=-1)], axis=-1)


def unpack(packed: np.ndarray, n_pitches: int) -> np.ndarray:
    """The inverse of `pack`: uint8 codes."""
    half = packed.shape[-1] // 2
    active = np.unpackbits(packed[..., :half], axis=-1, count=n_pitches)
    onset = np.unpackbits(packed[..., half:], axis=-1, count=n_pitches)
    return active + (onset & active)


@dataclass
class ShardWriter:
    """Buffers phrases per split and writes full shards as they fill; `close()` flushes the rest."""

    out_dir: Path
    shape: tuple[int, int, int, int]
    shard_size: int
    _buffers: dict[str, list[np.ndarray]] = field(default_factory=dict)
    _buffered: dict[str, int] = field(default_factory=dict)
    shards: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {s: [] for s in SPLITS})

    def add(self, split: str, phrases: np.ndarray) -> None:
        """Append code phrases `[n, *shape]` to `split`."""
        if phrases.shape[1:] != self.shape:
            raise ValueError(f"phrase shape {phrases.shape[1:]} != index shape {self.shape}")
        self._append(split, pack(phrases))

    def add_packed(self, split: str, packed: np.ndarray) -> None:
        """Append phrases already packed with `pack` (uint8 `[n, T, B, S, ceil(P / 8)]`).

        Tensorize workers send their songs bit-packed, so the parent only appends them and
        never unpacks and re-packs (that cost a third of the CPU on 2 cores). The shards are
        byte-identical to `add` with the unpacked phrases."""
        want = (*self.shape[:3], packed_width(self.shape[3]))
        if packed.shape[1:] != want or packed.dtype != np.uint8:
            raise ValueError(f"packed phrase shape {packed.shape[1:]} {packed.dtype} != {want} uint8")
        self._append(split, packed)

    def _append(self, split: str, packed: np.ndarray) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}")
        self._buffers.setdefault(split, []).append(packed)
        self._buffered[split] = self._buffered.get(split, 0) + len(packed)
        while self._buffered[split] >= self.shard_size:
            self._flush(split, self.shard_size)

    def close(self) -> dict[str, list[dict[str, Any]]]:
        for split in list(self._buffers):
            if self._buffered.get(split):
                self._flush(split, self._buffered[split])
        return self.shards

    def _flush(self, split: str, n: int) -> None:
        data = np.concatenate(self._buffers[split])
        head, rest = data[:n], data[n:]
        self._buffers[split] = [rest] if len(rest) else []
        self._buffered[split] = len(rest)
        name = f"{SHARD_DIR}/{split}-{len(self.shards[split]):05d}.npy"
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(head), allow_pickle=False)
        atomic_write_bytes(self.out_dir / name, buf.getvalue())
        self.shards[split].append({"file": name, "n": int(len(head))})


def write_index(out_dir: Path, index: dict[str, Any]) -> Path:
    return atomic_write_json(Path(out_dir) / INDEX, index)


def read_index(tensor_dir: str | Path) -> dict[str, Any]:
    path = Path(tensor_dir) / INDEX
    try:
        index = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: no tensor index (run `lpdvae tensorize` first)") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON: {exc}") from None
    for key in ("shape", "splits", "tracks"):
        if key not in index:
            raise DataError(f"{path}: missing key {key!r}")
    return index


def open_shard(tensor_dir: Path, entry: dict[str, Any], shape: list[int]) -> np.ndarray:
    """Memory-map one packed shard and check it matches the index."""
    path = Path(tensor_dir) / entry["file"]
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable shard: {exc}") from None
    return check_shard(arr, entry, shape, str(path))


def check_shard(arr: np.ndarray, entry: dict[str, Any], shape: list[int], where: str) -> np.ndarray:
    """`arr` when it is the packed shard the index describes, else DataError naming `where`."""
    packed_p = packed_width(shape[3])
    if arr.shape != (entry["n"], *shape[:3], packed_p) or arr.dtype != np.uint8:
        raise DataError(
            f"{where}: shard has shape {arr.shape} {arr.dtype}, index says "
            f"{(entry['n'], *shape[:3], packed_p)} uint8"
        )
    return arr


def spread(total: int, limit: int | None) -> np.ndarray:
    """Indices of at most `limit` of `total` phrases, evenly spaced and in order: a bounded
    evaluation set that reaches every part of a split (every song when there are more phrases
    than songs), where a prefix would hold only its first few songs. All of them below `limit`."""
    if limit is None or total <= limit:
        return np.arange(total)
    return np.arange(limit) * total // limit


def load_split(tensor_dir: str | Path, split: str, limit: int | None = None) -> np.ndarray:
    """Unpacked uint8 phrases of one split, at most `limit` of them spread over it (`spread`),
    one shard at a time (for evaluation-sized reads; training uses PhraseDataset)."""
    index = read_index(tensor_dir)
    shape = index["shape"]
    entries = index["splits"].get(split, {}).get("shards", [])
    keep = spread(sum(int(e["n"]) for e in entries), limit)
    parts, start = [], 0
    for entry in entries:
        n = int(entry["n"])
        rows = keep[(keep >= start) & (keep < start + n)] - start
        if len(rows):
            parts.append(unpack(open_shard(Path(tensor_dir), entry, shape)[rows], shape[3]))
        start += n
    if not parts:
        return np.zeros((0, *shape), dtype=np.uint8)
    return np.concatenate(parts)


def phrase_songs(tensor_dir: str | Path, split: str, limit: int | None = None) -> np.ndarray | None:
    """The song id of each phrase of `split` (as `load_split` reads them, `limit` included), from
    index.json's song order and per-song phrase counts; None for an index written without them."""
    index = read_index(tensor_dir)
    order = index.get(SONG_ORDER, {}).get(split)
    if order is None:
        return None
    songs = index.get("songs", {})
    ids = np.array([sid for sid in order for _ in range(int(songs[sid]["n_phrases"]))], dtype=object)
    if len(ids) != index["splits"].get(split, {}).get("n", 0):
        raise DataError(f"{Path(tensor_dir) / INDEX}: {SONG_ORDER} of {split!r} counts {len(ids)} phrases, "
                        f"its shards {index['splits'].get(split, {}).get('n', 0)}")
    return ids[spread(len(ids), limit)]


def phrase_groups(tensor_dir: str | Path, split: str, limit: int | None = None) -> np.ndarray | None:
    """`phrase_songs` with each song replaced by its tune group (index.json's `group`; the song
    itself when it has none): songs of one tune are not independent samples, so intervals
    resample groups."""
    songs = phrase_songs(tensor_dir, split, limit)
    if songs is None:
        return None
    meta = read_index(tensor_dir).get("songs", {})
    return np.array([meta.get(s, {}).get("group") or s for s in songs], dtype=object)


class PhraseDataset:
    """torch Dataset of uint8 code phrases `[T, B, S, P]` read lazily from memory-mapped shards."""

    def __init__(self, tensor_dir: str | Path, split: str = "train") -> None:
        self.tensor_dir = Path(tensor_dir)
        self.index = read_index(self.tensor_dir)
        self.shape = tuple(self.index["shape"])
        self.entries = self.index["splits"].get(split, {}).get("shards", [])
        self.offsets = np.cumsum([0] + [e["n"] for e in self.entries])
        self._maps: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _shard(self, k: int) -> np.ndarray:
        if k not in self._maps:  # opened lazily so each DataLoader worker maps its own
            self._maps[k] = open_shard(self.tensor_dir, self.entries[k], list(self.shape))
        return self._maps[k]

    def __getitem__(self, i: int):
        import torch

        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = int(np.searchsorted(self.offsets, i, side="right") - 1)
        packed = self._shard(k)[i - self.offsets[k]]
        return torch.from_numpy(unpack(packed, self.shape[3]))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_maps"] = {}
        return state
