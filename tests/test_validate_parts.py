"""Validate in parts: per-chunk stats and fingerprints, one merge that compares songs across the
whole corpus; the same bytes as one `validate` over every song."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from components.sharding import chunk_rows
from lpdvae.errors import DataError
from lpdvae.io import read_jsonl
from lpdvae.steps.validate import merge_parts, read_manifest, validate, validate_part
from lpdvae.validation.parts import read_part, write_part
from tests import songkit
from tests.test_components import tree


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, object]:
    """6 good songs, one file per failure kind, and two copies of song000 that sort last (so into
    another chunk): its bytes (`zz/copy.mid`) and its notes at another tempo (`zz/twin.mid`)."""
    raw = tmp_path_factory.mktemp("parts") / "raw"
    songkit.good_corpus(raw, n_midi=3, n_npz=3)
    songkit.add_bad_songs(raw)
    (raw / "files/zz").mkdir()
    shutil.copy(raw / "files/midi/song000.mid", raw / "files/zz/copy.mid")
    songkit.midi_song(raw / "files/zz/twin.mid", seed=0, tempo=90.0)
    songkit.write_manifest(raw)
    return raw, songkit.params(**{"validate.max_bad_fraction": 0.9})


def test_validate_in_chunks_and_one_merge_writes_the_bytes_one_validate_writes(corpus, tmp_path):
    raw, params = corpus
    validate(raw, tmp_path / "one", params, docs_dir=tmp_path / "one-docs")
    rows = read_manifest(raw)
    for chunk in range(3):  # each part through disk, as a fanned-out task hands it on
        write_part(validate_part(raw, chunk_rows(rows, chunk, 3), params, chunk, 3), tmp_path / f"part{chunk}")
    parts = [read_part(tmp_path / f"part{c}") for c in (2, 0, 1)]  # any completion order
    merge_parts(parts, tmp_path / "merged", params, docs_dir=tmp_path / "merged-docs")
    assert tree(tmp_path / "merged") == tree(tmp_path / "one")
    twins = {r["path"]: r["detail"] for r in read_jsonl(tmp_path / "merged" / "quarantine.jsonl")
             if r["reason"] == "duplicate"}
    assert set(twins) == {"files/zz/copy.mid", "files/zz/twin.mid"}, "duplicates found across chunks"
    assert all("files/midi/song000.mid" in d for d in twins.values())


def test_a_merge_without_every_chunk_is_refused(corpus, tmp_path):
    raw, params = corpus
    rows = read_manifest(raw)
    parts = [validate_part(raw, chunk_rows(rows, c, 3), params, c, 3) for c in (0, 2)]
    with pytest.raises(DataError, match=r"parts 0/3, 2/3 are not chunks 0..n-1 of one plan"):
        merge_parts(parts, tmp_path / "merged", params)
    assert not (tmp_path / "merged").exists()
