"""Packed-bit shards of note codes round-trip exactly and are read lazily through memory maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lpdvae.data.shards import (
    PhraseDataset,
    ShardWriter,
    load_split,
    pack,
    packed_width,
    read_index,
    unpack,
    write_index,
)
from lpdvae.errors import DataError

SHAPE = (2, 4, 48, 84)


def random_codes(rng: np.random.Generator, n: int, shape=SHAPE, density: float = 0.05) -> np.ndarray:
    """uint8 codes `[n, *shape]`: ~density of the cells sound, a third of those as onsets."""
    cells = rng.random((n, *shape))
    return np.where(cells < density / 3, 2, np.where(cells < density, 1, 0)).astype(np.uint8)


def write_corpus(tmp_path, n_train=5, n_test=3, shard_size=2, seed=0):
    rng = np.random.default_rng(seed)
    data = {s: random_codes(rng, n) for s, n in [("train", n_train), ("test", n_test)]}
    writer = ShardWriter(tmp_path, SHAPE, shard_size)
    for split, arr in data.items():
        writer.add(split, arr[:2])
        writer.add(split, arr[2:])
    shards = writer.close()
    splits = {s: {"shards": shards[s], "n": sum(e["n"] for e in shards[s])} for s in shards}
    write_index(tmp_path, {"shape": list(SHAPE), "tracks": ["a", "b"], "packed": True, "splits": splits})
    return data


@pytest.mark.parametrize("n_pitches", [84, 8, 13, 1])
def test_pack_unpack_of_codes_is_exact(n_pitches):
    """Silent, sustain and onset survive the two bit planes, for any pitch count (padding bits)."""
    rng = np.random.default_rng(n_pitches)
    codes = rng.integers(0, 3, (5, 2, 2, 16, n_pitches)).astype(np.uint8)
    packed = pack(codes)
    assert packed.dtype == np.uint8 and packed.shape[-1] == packed_width(n_pitches)
    back = unpack(packed, n_pitches)
    assert back.dtype == np.uint8
    assert np.array_equal(back, codes)


def test_shards_round_trip_bit_exact(tmp_path):
    data = write_corpus(tmp_path)
    assert np.array_equal(load_split(tmp_path, "train"), data["train"])
    assert np.array_equal(load_split(tmp_path, "test"), data["test"])


def test_shards_hold_at_most_shard_size_phrases(tmp_path):
    write_corpus(tmp_path, n_train=5, shard_size=2)
    sizes = [e["n"] for e in read_index(tmp_path)["splits"]["train"]["shards"]]
    assert sizes == [2, 2, 1]


def test_phrase_dataset_items_match_the_written_phrases(tmp_path):
    data = write_corpus(tmp_path)
    ds = PhraseDataset(tmp_path, "train")
    assert len(ds) == 5
    for i in range(5):
        item = ds[i]
        assert item.dtype == torch.uint8
        assert np.array_equal(item.numpy(), data["train"][i])
    assert isinstance(ds._maps[0], np.memmap)


def test_missing_index_says_which_step_to_run(tmp_path):
    with pytest.raises(DataError, match="run `lpdvae tensorize` first"):
        read_index(tmp_path)


def test_shard_that_disagrees_with_index_is_named(tmp_path):
    write_corpus(tmp_path)
    np.save(tmp_path / "shards" / "train-00000.npy", np.zeros((2, 3), dtype=np.uint8))
    with pytest.raises(DataError, match=r"train-00000.npy: shard has shape"):
        load_split(tmp_path, "train")


def test_add_packed_round_trips_like_add(tmp_path):
    """Packed phrases (what tensorize workers send) give byte-identical shards to unpacked ones."""
    rng = np.random.default_rng(1)
    phrases = random_codes(rng, 7)
    plain, packed = ShardWriter(tmp_path / "plain", SHAPE, 3), ShardWriter(tmp_path / "packed", SHAPE, 3)
    for part in (phrases[:2], phrases[2:6], phrases[6:]):
        plain.add("train", part)
        packed.add_packed("train", pack(part))
    assert plain.close() == packed.close()
    files = sorted(p.name for p in (tmp_path / "plain" / "shards").iterdir())
    assert files == ["train-00000.npy", "train-00001.npy", "train-00002.npy"]
    for name in files:
        assert (tmp_path / "plain/shards" / name).read_bytes() == (tmp_path / "packed/shards" / name).read_bytes()
    shards = packed.shards["train"]
    write_index(tmp_path / "packed", {"shape": list(SHAPE), "tracks": ["a", "b"], "packed": True,
                                      "splits": {"train": {"shards": shards, "n": 7}}})
    assert np.array_equal(load_split(tmp_path / "packed", "train"), phrases)


def test_add_packed_rejects_unpacked_or_misshapen_input(tmp_path):
    writer = ShardWriter(tmp_path, SHAPE, 2)
    with pytest.raises(ValueError, match="packed phrase shape"):
        writer.add_packed("train", np.zeros((1, *SHAPE), dtype=np.uint8))
    with pytest.raises(ValueError, match="packed phrase shape"):
        writer.add_packed("train", pack(np.zeros((1, *SHAPE))).astype(np.int16))
    with pytest.raises(ValueError, match="unknown split"):
        writer.add_packed("holdout", pack(np.zeros((1, *SHAPE))))
