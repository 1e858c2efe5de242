"""Phrase shards read straight from `s3://bucket/prefix` (the tensors artifact), shard by shard,
and the shard-by-shard order that lets each DDP rank fetch only its own shards.

`S3PhraseDataset` is `PhraseDataset` over an S3 prefix laid out as tensorize writes a folder
(`index.json` + `shards/*.npy`): a shard is fetched whole into memory when first read, and at most
`KEEP` shards are held, so memory stays at a couple of shards (~20 MiB each at the LPD-5 shape)
whatever the corpus. `shard_order` is the order that makes that enough: rank r owns shards
r, r + world, ...; each epoch visits its shards in a seeded order, phrases shuffled within each, so
a rank reads each of its shards once per epoch and never another rank's. Training uses it for
`train.data_order: shards` (always for s3:// tensors); the same order over a local folder gives the
same batches (tests/test_shard_stream.py).
"""

from __future__ import annotations

import io
import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from lpdvae.data.shards import INDEX, PhraseDataset, check_shard, packed_width
from lpdvae.errors import DataError

KEEP = 2  # shards held in memory: the one being read and the one before (a batch may straddle them)
MAX_INDEX_BYTES = 64 << 20  # index.json of 21,000 songs is a few MB
NPY_HEADER_BYTES = 4096  # np.save's header is at most a few hundred bytes for these arrays
MAX_SHARD_BYTES = 1 << 30  # an index may lie about `n` too: a 2,048-phrase LPD-5 shard is ~20 MiB


def is_s3(where: str | Path) -> bool:
    return str(where).startswith("s3://")


def split_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/prefix` -> (bucket, prefix without a trailing slash)."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise DataError(f"{uri}: tensors on S3 need a bucket (s3://bucket/prefix)")
    return bucket, prefix.strip("/")


class S3Shards:
    """GETs of one tensor prefix with the pipeline root's credentials (`lpdvae.host.s3auth`),
    every object size-checked before it is read."""

    def __init__(self, uri: str, client: Any = None) -> None:
        self.uri = uri.rstrip("/")
        self.bucket, self.prefix = split_uri(self.uri)
        self.s3 = client or _client()

    def _get(self, name: str, limit: int) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        key = f"{self.prefix}/{name}" if self.prefix else name
        where = f"{self.uri}/{name}"
        try:
            obj = self.s3.get_object(Bucket=self.bucket, Key=key)
            if int(obj["ContentLength"]) > limit:  # before reading the body: memory is bounded
                obj["Body"].close()
                raise DataError(f"{where}: {obj['ContentLength']} bytes, more than the {limit} it may hold")
            return obj["Body"].read()
        except ClientError as exc:
            err = exc.response.get("Error", {})
            raise DataError(f"{where}: cannot read: {err.get('Code')} {err.get('Message', '')}".rstrip()) from None
        except BotoCoreError as exc:
            raise DataError(f"{where}: cannot read: {exc}") from None

    def index(self) -> dict[str, Any]:
        raw = self._get(INDEX, MAX_INDEX_BYTES)
        try:
            index = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{self.uri}/{INDEX}: not valid JSON: {exc}") from None
        for key in ("shape", "splits", "tracks"):
            if key not in index:
                raise DataError(f"{self.uri}/{INDEX}: missing key {key!r}")
        return index

    def shard(self, entry: dict[str, Any], shape: list[int]) -> np.ndarray:
        """One packed shard, whole, in memory; checked against the index."""
        want = int(entry["n"]) * int(np.prod(shape[:3])) * packed_width(shape[3])
        if want > MAX_SHARD_BYTES:
            raise DataError(f"{self.uri}/{INDEX}: {entry['file']} would hold {want} bytes ({entry['n']} phrases), "
                            f"more than a shard may ({MAX_SHARD_BYTES})")
        raw = self._get(entry["file"], want + NPY_HEADER_BYTES)
        try:
            arr = np.load(io.BytesIO(raw), allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"{self.uri}/{entry['file']}: unreadable shard: {exc}") from None
        return check_shard(arr, entry, shape, f"{self.uri}/{entry['file']}")


def _client() -> Any:
    from lpdvae.host.s3auth import retrying, s3_client

    # the pipeline root's credentials (a TrainJob node holds no others); a dropped connection is
    # retried more often than a data task's: a lost shard stops every rank
    return s3_client("artifacts", config=retrying(max_attempts=10))


class S3PhraseDataset(PhraseDataset):
    """`PhraseDataset` over `s3://bucket/prefix`: at most KEEP shards in memory at a time."""

    def __init__(self, uri: str, split: str = "train", client: Any = None) -> None:
        self.tensor_dir = uri.rstrip("/")  # type: ignore[assignment]  # where, for messages
        self._client = client
        self.index = S3Shards(uri, client).index()
        self.shape = tuple(self.index["shape"])
        self.entries = self.index["splits"].get(split, {}).get("shards", [])
        self.offsets = np.cumsum([0] + [e["n"] for e in self.entries])
        self._maps: OrderedDict[int, np.ndarray] = OrderedDict()  # type: ignore[assignment]
        self._source: S3Shards | None = None

    def _shard(self, k: int) -> np.ndarray:
        if k in self._maps:
            self._maps.move_to_end(k)
            return self._maps[k]
        if self._source is None:  # made lazily: a pickled copy (a DataLoader worker) makes its own
            self._source = S3Shards(str(self.tensor_dir), self._client)
        while len(self._maps) >= KEEP:
            self._maps.popitem(last=False)
        self._maps[k] = self._source.shard(self.entries[k], list(self.shape))
        return self._maps[k]

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.update(_maps=OrderedDict(), _source=None, _client=None)
        return state


def open_phrases(where: str | Path, split: str) -> PhraseDataset:
    """The phrases of `split` in a tensor folder or under an s3:// prefix."""
    return S3PhraseDataset(str(where), split) if is_s3(where) else PhraseDataset(where, split)


def rank_shards(offsets: np.ndarray, rank: int, world: int) -> list[int]:
    """The shards rank `rank` of `world` owns: rank, rank + world, ..."""
    return list(range(rank, len(offsets) - 1, world))


def rank_phrases(offsets: np.ndarray, rank: int, world: int) -> int:
    return int(sum(offsets[k + 1] - offsets[k] for k in rank_shards(offsets, rank, world)))


def shard_order(offsets: np.ndarray, rank: int, world: int, seed: int | None, epoch: int = 0) -> list[int]:
    """Phrase indices rank `rank` reads in `epoch`: its shards in a seeded order, phrases shuffled
    within each (`seed` None: both in file order, as validation reads)."""
    shards = rank_shards(offsets, rank, world)
    rng = np.random.default_rng(None if seed is None else [seed, epoch])
    if seed is not None:
        shards = [shards[i] for i in rng.permutation(len(shards))]
    out: list[int] = []
    for k in shards:
        ids = np.arange(offsets[k], offsets[k + 1])
        out.extend((rng.permutation(ids) if seed is not None else ids).tolist())
    return out
