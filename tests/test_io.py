"""Writes are atomic: a failure never leaves a half-written file or folder in place."""

from __future__ import annotations

import pytest

from lpdvae.io import atomic_dir, atomic_write_json, atomic_write_text, read_jsonl


def test_atomic_write_replaces_content_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_dir_swaps_in_new_content_on_success(tmp_path):
    final = tmp_path / "step"
    with atomic_dir(final) as tmp:
        (tmp / "a").write_text("1")
    with atomic_dir(final) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in final.iterdir()) == ["b"]
    assert [p.name for p in tmp_path.iterdir()] == ["step"]


def test_atomic_dir_keeps_previous_output_when_the_step_crashes(tmp_path):
    final = tmp_path / "step"
    with atomic_dir(final) as tmp:
        atomic_write_json(tmp / "good.json", {"ok": True})
    with pytest.raises(RuntimeError), atomic_dir(final) as tmp:
        (tmp / "partial").write_text("half")
        raise RuntimeError("crash mid-step")
    assert sorted(p.name for p in final.iterdir()) == ["good.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["step"]


def test_read_jsonl_names_file_and_line_of_bad_json(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"a": 1}\n{broken\n')
    with pytest.raises(ValueError, match=r"m.jsonl:2: not valid JSON"):
        read_jsonl(path)


def test_atomic_dir_removes_a_stale_temp_folder_but_not_a_live_one(tmp_path):
    final = tmp_path / "step"
    stale = tmp_path / ".step.abcd1234.tmp"  # what a killed run leaves: nobody holds its lock
    (stale / "shards").mkdir(parents=True)
    other = tmp_path / ".step-other.abcd1234.tmp"  # another output's name: not this step's
    other.mkdir()
    with atomic_dir(final) as live:
        (live / "a").write_text("1")
        with atomic_dir(tmp_path / "step") as second:  # a concurrent run of the same step
            assert live.exists() and not stale.exists()
            (second / "b").write_text("2")
        assert (live / "a").exists()  # the live run's temp folder survived the second run
    assert (final / "a").exists() and sorted(p.name for p in tmp_path.iterdir()) == [".step-other.abcd1234.tmp", "step"]
