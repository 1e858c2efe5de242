"""Tensorize: shard round trip, index contract, split stability, small-corpus splits and their
report, worker-count determinism, stale temp folders of a killed run, PhraseDataset reading
lazily from memory-mapped shards."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lpdvae.data.music.phrases import song_phrases
from lpdvae.data.shards import (
    SPLITS,
    PhraseDataset,
    load_split,
    packed_width,
    phrase_groups,
    phrase_songs,
    read_index,
)
from lpdvae.data.splits import assign_splits, split_report
from lpdvae.errors import DataError
from lpdvae.io import atomic_write_jsonl, read_jsonl
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
    splits = assign_splits([r["song_id"] for r in rows], params)
    for row in sorted(rows, key=lambda r: r["path"]):
        expected[splits[row["song_id"]]].append(song_phrases(raw / row["path"], params))
    for split in SPLITS:
        want = np.concatenate(expected[split]) if expected[split] else np.zeros((0, 4, 4, 48, 84), bool)
        got = load_split(root / "tensors", split)
        assert got.dtype == np.uint8 and np.array_equal(got, want.astype(np.uint8)), split
    assert result.n_phrases == 36 and not result.failed


def test_each_phrase_is_mapped_to_the_song_it_was_cut_from(corpus):
    raw, root, rows, params, _ = corpus
    splits = assign_splits([r["song_id"] for r in rows], params)
    for split in SPLITS:
        want = [r["song_id"] for r in sorted(rows, key=lambda r: r["path"]) if splits[r["song_id"]] == split
                for _ in range(len(song_phrases(raw / r["path"], params)))]
        assert list(phrase_songs(root / "tensors", split)) == want, split


def test_phrases_of_songs_sharing_a_tune_map_to_one_resampling_group(tmp_path):
    raw, validated = tmp_path / "raw", tmp_path / "validated"
    songkit.good_corpus(raw, n_midi=2, n_npz=4)
    rows = accept_all(raw, validated)
    for row in rows[:3]:  # three harmonizations of one tune
        row["group"] = "title:one tune"
    atomic_write_jsonl(validated / "accepted.jsonl", rows)
    tensorize(raw, validated, tmp_path / "tensors", songkit.params())
    split = read_index(tmp_path / "tensors")["songs"][rows[0]["song_id"]]["split"]
    songs, groups = phrase_songs(tmp_path / "tensors", split), phrase_groups(tmp_path / "tensors", split)
    tune = {r["song_id"] for r in rows[:3]}
    assert len(set(songs[np.isin(songs, list(tune))])) == 3  # three songs ...
    assert set(groups[np.isin(songs, list(tune))]) == {"title:one tune"}  # ... one group to resample
    assert all(g == s for s, g in zip(songs, groups, strict=True) if s not in tune)  # alone: its own group


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
    assert {k: v["split"] for k, v in index["songs"].items()} == assign_splits(
        {k: v["group"] for k, v in index["songs"].items()}, params)


def test_split_is_a_pure_function_of_the_song_id():
    params = songkit.params()
    ids = [f"{i:064x}" for i in range(2000)]
    splits = [split_of(i, params) for i in ids]
    counts = {s: splits.count(s) / len(ids) for s in SPLITS}
    assert counts["train"] == pytest.approx(0.8, abs=0.04) and counts["val"] == pytest.approx(0.1, abs=0.03)
    other = songkit.params(**{"tensorize.split_seed": "other"})
    assert splits != [split_of(i, other) for i in ids]


def test_adding_songs_never_moves_old_ones(corpus, tmp_path):
    """The hash alone places every song here: with split_seed "grow-2" both corpora give each
    split a song (checked below), so the small-corpus fix of `assign_splits`, which may move
    boundary songs, has nothing to do; songkit writes its files byte-for-byte reproducibly, so
    the song ids, and this, are the same on every run."""
    raw, root, _, _, _ = corpus
    params = songkit.params(**{"tensorize.shard_size": 7, "tensorize.split_seed": "grow-2"})
    tensorize(raw, root / "validated", tmp_path / "before", params)
    before = read_index(tmp_path / "before")["songs"]
    bigger = tmp_path / "raw"
    shutil.copytree(raw / "files", bigger / "files")
    songkit.good_corpus(bigger, n_midi=3, n_npz=3, seed0=50)
    accept_all(bigger, tmp_path / "validated")
    tensorize(bigger, tmp_path / "validated", tmp_path / "tensors", params)
    after = read_index(tmp_path / "tensors")["songs"]
    for songs in (before, after):
        assert {split_of(song, params) for song in songs} == set(SPLITS)
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


# --- small corpora: every split gets songs, a small split is reported, an empty one refused -----

def _ids(n: int) -> list[str]:
    return [f"{i:064x}" for i in range(n)]


def test_a_small_corpus_still_fills_every_split():
    params = songkit.params(**{"tensorize.train_fraction": 0.98, "tensorize.val_fraction": 0.01})
    for n in (3, 4, 10):
        ids = _ids(n)
        assert all(split_of(i, params) == "train" for i in ids)  # the hash alone leaves val/test empty
        splits = assign_splits(ids, params)
        counts = {s: list(splits.values()).count(s) for s in SPLITS}
        assert counts == {"train": n - 2, "val": 1, "test": 1}, n
        assert splits == assign_splits(list(reversed(ids)), params)  # deterministic, order-free


def test_the_small_corpus_fix_moves_only_the_boundary_songs():
    params = songkit.params(**{"tensorize.train_fraction": 0.98, "tensorize.val_fraction": 0.01})
    ids = _ids(10)
    splits = assign_splits(ids, params)
    from lpdvae.data.splits import unit
    ranked = sorted(ids, key=lambda i: unit(i, params.tensorize.split_seed))
    assert [splits[i] for i in ranked] == ["train"] * 8 + ["val", "test"]


def test_a_corpus_the_hash_fills_is_left_as_the_hash_puts_it():
    params = songkit.params()
    ids = _ids(200)
    assert assign_splits(ids, params) == {i: split_of(i, params) for i in ids}


def test_fewer_than_three_songs_cannot_fill_the_splits():
    params = songkit.params()
    assert set(assign_splits(_ids(2), params).values()) < set(SPLITS)


def _index(phrases: dict[str, int], songs: dict[str, int]) -> dict:
    return {"splits": {s: {"n": n} for s, n in phrases.items()},
            "songs": {f"{s}{k}": {"split": s} for s, n in songs.items() for k in range(n)}}


def test_a_split_below_min_split_phrases_is_a_warning_naming_it():
    params = songkit.params(**{"tensorize.min_split_phrases": 20})
    warnings = split_report(_index({"train": 100, "val": 19, "test": 20}, {"train": 8, "val": 1, "test": 1}),
                            params, "t")
    assert warnings == ["val split has 19 phrases from 1 songs, fewer than tensorize.min_split_phrases = 20: "
                        "too small for a reliable evaluation; ingest more songs or change "
                        "tensorize.train_fraction / tensorize.val_fraction"]


def test_an_empty_split_is_an_error_saying_how_to_fix_it():
    params = songkit.params()
    with pytest.raises(DataError) as err:
        split_report(_index({"train": 30, "val": 0, "test": 0}, {"train": 2}), params, "tensorize out")
    message = str(err.value)
    assert message.startswith("tensorize out: the val and test splits are empty (train 2 songs / 30 phrases, "
                              "val 0 songs / 0 phrases, test 0 songs / 0 phrases; 2 accepted songs)")
    assert "Ingest more songs (from 3 song groups up" in message and "tensorize.train_fraction" in message


def test_tensorize_of_a_tiny_corpus_reports_its_small_splits(tmp_path, caplog):
    raw = tmp_path / "raw"
    songkit.good_corpus(raw, n_midi=2, n_npz=1)
    accept_all(raw, tmp_path / "validated")
    params = songkit.params(**{"tensorize.train_fraction": 0.98, "tensorize.val_fraction": 0.01,
                               "tensorize.min_split_phrases": 4})
    result = tensorize(raw, tmp_path / "validated", tmp_path / "tensors", params)
    assert result.songs == {"train": 1, "val": 1, "test": 1} and min(result.phrases.values()) == 3
    index = read_index(tmp_path / "tensors")
    assert index["warnings"] == result.warnings and len(result.warnings) == 3
    assert all("fewer than tensorize.min_split_phrases = 4" in w for w in result.warnings)
    logged = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert [m for m in logged if "min_split_phrases" in m] == [f"tensorize: {w}" for w in result.warnings]


def test_tensorize_refuses_a_corpus_too_small_to_split_and_keeps_the_old_output(tmp_path):
    raw = tmp_path / "raw"
    songkit.good_corpus(raw, n_midi=1, n_npz=1)
    accept_all(raw, tmp_path / "validated")
    (tmp_path / "tensors").mkdir()
    (tmp_path / "tensors" / "previous").write_text("kept")
    with pytest.raises(DataError, match="split(s are| is) empty .*2 accepted songs"):
        tensorize(raw, tmp_path / "validated", tmp_path / "tensors", songkit.params())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw", "tensors", "validated"]
    assert [p.name for p in (tmp_path / "tensors").iterdir()] == ["previous"]


# --- a killed run's temp folder --------------------------------------------------------------

def test_a_killed_runs_temp_folder_is_removed_by_the_next_run(corpus, tmp_path):
    raw, root, _, params, _ = corpus
    out = tmp_path / "tensors"
    killed = subprocess.run([sys.executable, "-c", (
        "import os, signal, sys\n"
        "from lpdvae.io import atomic_dir\n"
        "with atomic_dir(sys.argv[1]) as tmp:\n"
        "    (tmp / 'half.npy').write_bytes(b'x' * 1000)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"), str(out)])
    assert killed.returncode == -9
    stale = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".tensors."))
    assert len(stale) == 2 and stale[0].endswith(".tmp") and stale[1] == stale[0] + ".owner"  # folder + its owner
    (tmp_path / ".tensors-notes.tmp").mkdir()  # not this step's temp pattern: left alone
    tensorize(raw, root / "validated", out, params)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tensors-notes.tmp", "tensors"]
