"""Tensorize: shard round trip, index contract, split stability, worker-count determinism,
PhraseDataset reading lazily from memory-mapped shards."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from lpdvae.errors import DataError
from lpdvae.io import atomic_write_jsonl, read_jsonl
from lpdvae.music.phrases import song_phrases
from lpdvae.shards import SPLITS, PhraseDataset, load_split, packed_width, read_index
from lpdvae.steps.tensorize import split_of, tensor_params_digest, tensorize
from tests import songkit


def accept_all(raw: Path, validated: Path) -> list[dict]:
    """accepted.jsonl for every manifest song (what validate writes for a clean corpus)."""
    rows = [{"song_id": r["sha256"], "path": r["path"], "sha256": r["sha256"]}
            for r in read_jsonl(raw / "manifest.jsonl")]
    atomic_write_jsonl(validated / "accepted.jsonl", rows)
    return rows


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    raw = root / "raw"
    songkit.good_corpus(raw, n_midi=4, n_npz=8)
    rows = accept_all(raw, root / "validated")
    params = songkit.params(**{"tensorize.shard_size": 7})
    result = tensorize(raw, root / "validated", root / "tensors", params)
    return raw, root, rows, params, result


def test_shard_round_trip(corpus):
    raw, root, rows, params, result = corpus
    expected = {s: [] for s in SPLITS}
    for row in sorted(rows, key=lambda r: r["path"]):
        expected[split_of(row["song_id"], params)].append(song_phrases(raw / row["path"], params))
    for split in SPLITS:
        want = np.concatenate(expected[split]) if expected[split] else np.zeros((0, 4, 4, 48, 84), bool)
        got = load_split(root / "tensors", split)
        assert got.dtype == np.uint8 and np.array_equal(got, want.astype(np.uint8)), split
    assert result.n_phrases == 36 and not result.failed


def test_index_contract(corpus):
    _, root, rows, params, _ = corpus
    index = read_index(root / "tensors")
    rep = params.representation
    assert index["shape"] == [4, rep.n_bars, rep.steps_per_bar, rep.n_pitches]
    assert index["tracks"] == ["soprano", "alto", "tenor", "bass"] and index["packed"] is True
    assert index["params_digest"] == tensor_params_digest(params)
    assert set(index["songs"]) == {r["song_id"] for r in rows}
    for split, entry in index["splits"].items():
        assert entry["n"] == sum(s["n"] for s in entry["shards"])
        assert entry["n"] == sum(v["n_phrases"] for v in index["songs"].values() if v["split"] == split)
        for k, shard in enumerate(entry["shards"]):
            assert shard["file"] == f"shards/{split}-{k:05d}.npy" and 0 < shard["n"] <= 7
            arr = np.load(root / "tensors" / shard["file"], mmap_mode="r")
            assert arr.shape == (shard["n"], 4, rep.n_bars, rep.steps_per_bar,
                                 packed_width(rep.n_pitches))
    assert all(v["split"] == split_of(k, params) for k, v in index["songs"].items())


def test_split_is_a_pure_function_of_the_song_id():
    params = songkit.params()
    ids = [f"{i:064x}" for i in range(2000)]
    splits = [split_of(i, params) for i in ids]
    counts = {s: splits.count(s) / len(ids) for s in SPLITS}
    assert counts["train"] == pytest.approx(0.8, abs=0.04) and counts["val"] == pytest.approx(0.1, abs=0.03)
    other = songkit.params(**{"tensorize.split_seed": "other"})
    assert splits != [split_of(i, other) for i in ids]


def test_adding_songs_never_moves_old_ones(corpus, tmp_path):
    raw, root, rows, params, _ = corpus
    before = read_index(root / "tensors")["songs"]
    bigger = tmp_path / "raw"
    shutil.copytree(raw / "files", bigger / "files")
    songkit.good_corpus(bigger, n_midi=3, n_npz=3, seed0=50)
    accept_all(bigger, tmp_path / "validated")
    tensorize(bigger, tmp_path / "validated", tmp_path / "tensors", params)
    after = read_index(tmp_path / "tensors")["songs"]
    assert len(after) == len(before) + 6
    assert {k: after[k] for k in before} == before


def test_output_independent_of_worker_count(corpus, tmp_path):
    raw, root, _, params, _ = corpus
    two = songkit.params(**{"tensorize.shard_size": 7, "tensorize.workers": 2})
    tensorize(raw, root / "validated", tmp_path / "t2", two)
    one, other = root / "tensors", tmp_path / "t2"
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(other) for p in other.rglob("*") if p.is_file())
    for f in files:  # shards and index.json (the params digest leaves `workers` out)
        assert (one / f).read_bytes() == (other / f).read_bytes(), f


def test_phrase_dataset_reads_lazily(corpus):
    _, root, _, _, _ = corpus
    ds = PhraseDataset(root / "tensors", "train")
    reference = load_split(root / "tensors", "train")
    assert len(ds) == len(reference) > 7
    assert ds._maps == {}  # nothing opened until an item is read
    last = ds[len(ds) - 1]
    assert list(ds._maps) == [len(ds.entries) - 1]  # only the shard holding that item is mapped
    assert isinstance(ds._maps[len(ds.entries) - 1], np.memmap)
    assert np.array_equal(last.numpy(), reference[-1].astype(np.float32))
    assert np.array_equal(ds[3].numpy(), reference[3])


def test_stale_or_missing_validation(corpus, tmp_path):
    raw, root, rows, params, _ = corpus
    with pytest.raises(DataError, match="run `lpdvae validate` first"):
        tensorize(raw, tmp_path / "nothing", tmp_path / "t", params)
    stale = tmp_path / "validated"
    atomic_write_jsonl(stale / "accepted.jsonl", [{**rows[0], "sha256": "0" * 64}])
    with pytest.raises(DataError, match="raw data changed since validation"):
        tensorize(raw, stale, tmp_path / "t", params)
    assert not (tmp_path / "t").exists()
