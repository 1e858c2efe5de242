"""Validate: stats table, Great Expectations suite + data docs, quarantine, threshold failure."""

from __future__ import annotations

import argparse
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from lpdvae.commands import tensorize as tensorize_cli
from lpdvae.commands import validate as validate_cli
from lpdvae.data.music.midi import MIDI_PARSER
from lpdvae.data.shards import load_split
from lpdvae.errors import DataError, LpdvaeError, ValidationFailed
from lpdvae.io import read_jsonl
from lpdvae.registry.lineage import dvc_hash
from lpdvae.steps.tensorize import tensorize
from lpdvae.steps.validate import EXCLUSIONS, default_docs_dir, validate
from lpdvae.validation import song_stats
from tests import songkit


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A corpus of 6 good songs + one file of each failure kind, validated once."""
    root = tmp_path_factory.mktemp("mixed")
    raw = root / "raw"
    songkit.good_corpus(raw, n_midi=3, n_npz=3)
    songkit.midi_song(raw / "files/short/two_bars.mid", seed=9, n_bars=2)
    songkit.add_bad_songs(raw)
    params = songkit.params(**{"validate.max_bad_fraction": 0.7})
    result = validate(raw, root / "validated", params)
    return raw, root / "validated", params, result


MADRIGAL = {"Soprano": (67, 79), "Soprano II": (64, 76), "Alto": (60, 72), "Quintus": (55, 67), "Bass": (40, 52)}


@pytest.fixture(scope="module")
def madrigal(tmp_path_factory):
    """3 SATB songs and a five-voice madrigal (two sopranos merge into soprano, Quintus matches no
    configured track and is dropped), validated once."""
    root = tmp_path_factory.mktemp("madrigal")
    raw = root / "raw"
    songkit.good_corpus(raw, n_midi=2, n_npz=1)
    songkit.midi_song(raw / "files/madrigal/five.mid", seed=21, voices=MADRIGAL)
    songkit.write_manifest(raw)
    result = validate(raw, root / "validated", songkit.params(), docs_dir=root / "docs")
    return root, result


def test_stats_csv_names_which_source_track_went_where(madrigal):
    root, _ = madrigal
    stats = pd.read_csv(root / "validated/stats.csv", keep_default_na=False).set_index("path")
    five = stats.loc["files/madrigal/five.mid"]
    assert five["track_map"] == "Soprano->soprano|Soprano II->soprano|Alto->alto|Quintus->(dropped)|Bass->bass"
    assert five["dropped_tracks"] == "Quintus" and five["merged_tracks"] == "soprano<-Soprano+Soprano II"
    assert five["n_merged_tracks"] == 2 and five["n_unmatched_tracks"] == 1
    satb = stats.loc["files/midi/song000.mid"]
    assert satb["track_map"] == "Soprano->soprano|Alto->alto|Tenor->tenor|Bass->bass"
    assert satb["dropped_tracks"] == "" and satb["merged_tracks"] == "" and satb["n_merged_tracks"] == 0


def test_dropped_and_merged_tracks_are_warned_in_summary_and_data_docs(madrigal):
    root, result = madrigal
    summary = json.loads((root / "validated/summary.json").read_text())
    assert summary["tracks"] == {"songs_with_dropped_tracks": 1, "songs_with_merged_tracks": 1,
                                 "dropped": {"Quintus": 1}, "merged": {"soprano<-Soprano+Soprano II": 1}}
    assert summary["warnings"] == result.warnings and len(result.warnings) == 2
    assert result.warnings[0].startswith("1 of 4 accepted songs have source tracks that match no configured "
                                         "track and are dropped: Quintus (1)")
    assert result.warnings[1].startswith("1 of 4 accepted songs merge several source tracks into one "
                                         "configured track: soprano<-Soprano+Soprano II (1)")
    page = (root / "docs/index.html").read_text()
    assert "Source tracks dropped or merged" in page and "warning: 1 of 4 songs" in page
    assert "<code>files/madrigal/five.mid</code></td><td>Quintus</td><td>soprano&lt;-Soprano+Soprano II</td>" in page
    assert "files/midi/song000.mid</code></td><td>" not in page.split("Source tracks dropped")[1]


def test_bad_files_quarantined_with_reasons(mixed):
    raw, out, _, result = mixed
    rows = {r["path"]: r for r in read_jsonl(out / "quarantine.jsonl")}
    expected = {f"files/{name}": reason for name, reason in songkit.BAD_REASONS.items()}
    expected["files/short/two_bars.mid"] = "too_short"
    assert {p: r["reason"] for p, r in rows.items()} == expected
    for row in rows.values():
        assert row["detail"] and set(row) >= {"path", "reason", "detail"}
        assert row["kind"] == ("excluded" if row["reason"] in EXCLUSIONS else "bad")
    assert "3/4" in rows["files/bad/waltz.mid"]["detail"]
    assert "200" in rows["files/bad/loud.npz"]["detail"]
    accepted = read_jsonl(out / "accepted.jsonl")
    assert [a["path"] for a in accepted] == sorted(a["path"] for a in accepted)
    assert len(accepted) == 6 and all(a["song_id"] == a["sha256"] for a in accepted)
    assert result.n_songs == 17 and result.n_accepted == 6 and result.n_bad == 9
    assert result.n_quarantined == 11 and result.bad_fraction == pytest.approx(11 / 17)  # excluded count too


def test_stats_table_and_summary(mixed):
    raw, out, _, _ = mixed
    stats = pd.read_csv(out / "stats.csv")
    manifest = read_jsonl(raw / "manifest.jsonl")
    assert list(stats["path"]) == [m["path"] for m in manifest]
    good = stats[stats["path"].str.startswith(("files/midi", "files/npz"))]
    assert (good["n_tracks_present"] == 4).all() and (good["time_signature"] == "4/4").all()
    assert (good["tracks_present"] == "soprano|alto|tenor|bass").all()
    assert (good["n_bars"] == 8).all() and (good["n_notes"] >= 32).all()
    assert good["max_polyphony"].between(1, 2).all() and (good["n_phrases"] == 3).all()
    assert set(good["parser"]) == {MIDI_PARSER, "pypianoroll"}
    assert {"tempo", "n_beats", "pitch_min", "pitch_max", "empty_bar_ratio", "programs", "drum_flags"} <= set(stats)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_quarantined"] == 11 and summary["n_excluded"] == 2
    assert summary["reasons"]["time_signature"] == 1
    failed = {e["reason"] for e in summary["gx"]["expectations"] if not e["success"]}
    assert failed == {"time_signature", "too_short", "nan_values", "velocity_out_of_range"}
    assert summary["gx"]["success"] is False


def test_data_docs_written_beside_the_data(mixed):
    _, out, _, result = mixed
    docs = out.with_name("validated-docs")
    assert result.docs_dir == docs == default_docs_dir(out)
    index = docs / "index.html"
    assert index.exists()
    page = index.read_text()
    assert "lpdvae_songs" in page and "files/short/two_bars.mid" in page  # an unexpected song, listed
    assert sorted(p.name for p in out.iterdir()) == ["accepted.jsonl", "quarantine.jsonl", "stats.csv", "summary.json"]


def test_validated_output_is_byte_identical_across_runs(mixed, tmp_path):
    """Same raw data + params -> the same bytes and DVC hash (the lineage tag names the data)."""
    raw, out, params, _ = mixed
    again = validate(raw, tmp_path / "again", params, docs_dir=tmp_path / "docs")
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again.out_dir) for p in again.out_dir.rglob("*") if p.is_file())
    for rel in files:
        assert (out / rel).read_bytes() == (again.out_dir / rel).read_bytes(), rel
    assert dvc_hash(out) == dvc_hash(again.out_dir)
    assert (tmp_path / "docs" / "index.html").exists()
    for rel in files:  # nothing that depends on where the folders lie
        assert str(raw) not in (out / rel).read_text() and str(tmp_path) not in (again.out_dir / rel).read_text()


def test_docs_folder_must_not_overlap_the_data(tmp_path):
    for docs in (tmp_path / "v" / "data_docs", tmp_path / "v", tmp_path):
        with pytest.raises(LpdvaeError, match="must not contain each other"):
            validate(tmp_path / "raw", tmp_path / "v", songkit.params(), docs_dir=docs)


def test_load_error_detail_names_the_manifest_path_not_the_disk_path(tmp_path):
    disk = str(tmp_path / "raw" / "files" / "a.mid")
    detail = f"cannot read file: [Errno 13] Permission denied: '{disk}'"
    assert song_stats._relative(detail, disk, "files/a.mid") == \
        "cannot read file: [Errno 13] Permission denied: 'files/a.mid'"


def test_good_files_still_tensorize(mixed, tmp_path):
    raw, out, params, _ = mixed
    result = tensorize(raw, out, tmp_path / "tensors", params)
    assert result.n_songs == 6 and result.n_phrases == 18 and not result.failed
    total = sum(len(load_split(tmp_path / "tensors", s)) for s in ("train", "val", "test"))
    assert total == 18


def test_threshold_failure_keeps_previous_output(mixed, tmp_path):
    raw, out, _, _ = mixed
    previous, previous_docs = tmp_path / "validated", tmp_path / "docs"
    shutil.copytree(out, previous)
    shutil.copytree(default_docs_dir(out), previous_docs)
    before = (previous / "summary.json").read_bytes()
    docs_before = {p: p.read_bytes() for p in previous_docs.rglob("*") if p.is_file()}
    with pytest.raises(ValidationFailed) as err:
        validate(raw, previous, songkit.params(**{"validate.max_bad_fraction": 0.1}), docs_dir=previous_docs)
    message = str(err.value)
    assert "11 of 17 songs quarantined (9 bad, 2 excluded" in message and "max_bad_fraction 10.0%" in message
    assert "corrupt_npz 1" in message
    assert (previous / "summary.json").read_bytes() == before
    assert {p: p.read_bytes() for p in previous_docs.rglob("*") if p.is_file()} == docs_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs", "validated", "validated.failed"]  # no temp left
    report = tmp_path / "validated.failed"
    assert (report / "quarantine.jsonl").exists() and (report / "data_docs" / "index.html").exists()


def test_duplicates_and_all_bad(tmp_path):
    raw = tmp_path / "raw"
    songkit.good_corpus(raw, n_midi=2, n_npz=0)
    shutil.copy(raw / "files/midi/song000.mid", raw / "files/midi/zcopy.mid")
    songkit.write_manifest(raw)
    result = validate(raw, tmp_path / "v", songkit.params(**{"validate.max_bad_fraction": 0.5}))
    rows = read_jsonl(tmp_path / "v/quarantine.jsonl")
    assert [(r["path"], r["reason"]) for r in rows] == [("files/midi/zcopy.mid", "duplicate")]
    assert "files/midi/song000.mid" in rows[0]["detail"]
    assert result.n_accepted == 2

    bad = tmp_path / "bad"
    (bad / "files").mkdir(parents=True)
    (bad / "files/a.mid").write_bytes(b"")
    songkit.write_manifest(bad)
    with pytest.raises(ValidationFailed, match="no song passed validation"):
        validate(bad, tmp_path / "vb", songkit.params(**{"validate.max_bad_fraction": 1.0}))
    with pytest.raises(DataError, match="run `lpdvae ingest` first"):
        validate(tmp_path / "nowhere", tmp_path / "vn", songkit.params())


def _run_cli(argv: list[str], params) -> int:
    """The two subcommands as `lpdvae.cli` wires them (register_cli + set_defaults(func))."""
    parser = argparse.ArgumentParser(prog="lpdvae")
    sub = parser.add_subparsers(dest="command")
    validate_cli.register_cli(sub)
    tensorize_cli.register_cli(sub)
    args = parser.parse_args(argv)
    return args.func(args, params)


def test_cli_validate_and_tensorize(tmp_path, capsys):
    raw = tmp_path / "raw"
    songkit.good_corpus(raw, n_midi=1, n_npz=2)
    params = songkit.params()
    assert _run_cli(["validate", "--raw", str(raw), "--out", str(tmp_path / "v"),
                     "--docs", str(tmp_path / "reports/data_docs")], params) == 0
    out = capsys.readouterr().out
    assert "validated 3 songs: 3 accepted, 0 quarantined" in out
    assert f"data docs: {tmp_path / 'reports/data_docs/index.html'}" in out
    assert (tmp_path / "reports/data_docs/index.html").exists() and not (tmp_path / "v/data_docs").exists()
    assert _run_cli(["tensorize", "--raw", str(raw), "--validated", str(tmp_path / "v"),
                     "--out", str(tmp_path / "t")], params) == 0
    assert "tensorized 3 songs into 9 phrases" in capsys.readouterr().out
    assert np.load(next((tmp_path / "t/shards").glob("*.npy")), mmap_mode="r").dtype == np.uint8


def test_cli_help_describes_the_docs_folder(capsys):
    with pytest.raises(SystemExit):
        _run_cli(["validate", "--help"], songkit.params())
    text = " ".join(capsys.readouterr().out.split())
    assert "--docs DIR" in text and "Great Expectations data docs" in text and "OUT-docs" in text


def test_non_utf8_file_name_is_quarantined_not_a_crash(tmp_path):
    raw = tmp_path / "raw"
    songkit.good_corpus(raw, n_midi=2, n_npz=2)
    odd = os.fsdecode(b"odd-\xff\xfe.mid")  # bytes no UTF-8 decoder accepts, as Linux hands them over
    songkit.midi_song(raw / "files" / "midi" / odd, seed=11)
    songkit.write_manifest(raw)
    result = validate(raw, tmp_path / "validated", songkit.params(**{"validate.max_bad_fraction": 0.5}))
    (row,) = read_jsonl(tmp_path / "validated" / "quarantine.jsonl")
    assert row["reason"] == "file_name_not_utf8" and row["path"] == "files/midi/odd-\\xff\\xfe.mid"
    assert result.n_accepted == 4 and "\\xff" in (tmp_path / "validated" / "stats.csv").read_text()
