"""The LPD-5 profile (profiles/lpd5.yaml) and the synthetic LPD-5 corpus (benchmarks/lpd_synth.py):
the profile loads with LPD-5's five tracks, a profile track without a known kind is refused in
one line naming the file and the key, and generated songs go through the real validate and
tensorize steps with every track present."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from benchmarks.lpd_synth import synth_song, write_corpus
from lpdvae import cli
from lpdvae.data.shards import load_split, read_index
from lpdvae.io import read_jsonl
from lpdvae.params import load_params, profile_overrides
from lpdvae.steps.tensorize import tensorize
from lpdvae.steps.validate import validate
from tests.songkit import REPO

PROFILE = REPO / "profiles" / "lpd5.yaml"
N_SONGS = 10


def lpd5_params(**dotted):
    return load_params(REPO / "params.yaml", {**profile_overrides(PROFILE), **dotted})


def test_lpd5_profile_has_lpd5s_five_tracks_with_their_kinds():
    params = lpd5_params()
    assert [(t.name, t.kind, t.is_drum) for t in params.tracks] == [
        ("Drums", "drums", True), ("Piano", "polyphonic", False), ("Guitar", "polyphonic", False),
        ("Bass", "monophonic", False), ("Strings", "polyphonic", False)]
    programs = [set(t.programs) for t in params.tracks[1:]]
    assert programs[:3] == [set(range(8)), set(range(24, 32)), set(range(32, 40))]
    assert programs[3] == set(range(128)) - set(range(8)) - set(range(24, 40))  # LPD: every other program


def _refused(tmp_path, capsys, track: str) -> str:
    profile = tmp_path / "bad.yaml"
    profile.write_text("tracks:\n  - {name: Drums, kind: drums, program: 0, is_drum: true, names: [], programs: []}\n"
                       f"  - {track}\n")
    assert cli.main(["--params", str(REPO / "params.yaml"), "--profile", str(profile), "status"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(profile) in err
    return err


def test_a_profile_track_without_a_kind_is_refused_naming_the_file_and_the_key(tmp_path, capsys):
    err = _refused(tmp_path, capsys, "{name: Bass, program: 32, is_drum: false, names: [], programs: [32]}")
    assert "tracks[1] (Bass): missing key kind (one of monophonic, polyphonic, drums)" in err


def test_a_profile_track_of_an_unknown_kind_is_refused_naming_the_file_and_the_key(tmp_path, capsys):
    err = _refused(tmp_path, capsys, "{name: Bass, kind: lead, program: 32, is_drum: false, names: [], programs: [32]}")
    assert "tracks[1] (Bass): kind must be one of monophonic, polyphonic, drums, got 'lead'" in err


def test_synthetic_songs_repeat_per_seed_and_differ_between_seeds():
    def same(x, y) -> bool:
        return all(np.array_equal(s.pianoroll, t.pianoroll) for s, t in zip(x.tracks, y.tracks, strict=True))

    a = synth_song(3)
    assert [t.name for t in a.tracks] == ["Drums", "Piano", "Guitar", "Bass", "Strings"]
    assert same(a, synth_song(3)) and not same(a, synth_song(4))


@pytest.fixture(scope="module")
def lpd5_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("lpd5")
    write_corpus(root / "raw", N_SONGS)
    params = lpd5_params(**{"tensorize.workers": 1, "tensorize.min_split_phrases": 0})
    checked = validate(root / "raw", root / "validated", params)
    tensors = tensorize(root / "raw", root / "validated", root / "tensors", params)
    return root, checked, tensors


def test_synthetic_lpd5_songs_all_pass_validate_each_its_own_tune(lpd5_corpus):
    root, checked, _ = lpd5_corpus
    assert (checked.n_accepted, checked.n_quarantined) == (N_SONGS, 0)
    rows = list(csv.DictReader((root / "validated" / "stats.csv").open()))
    assert len({r["group"] for r in rows}) == N_SONGS  # distinct seeds, distinct tunes
    assert all(r["dropped_tracks"] == "" for r in rows)  # LPD's programs route every track


def test_synthetic_lpd5_songs_tensorize_with_every_track_sounding(lpd5_corpus):
    root, _, tensors = lpd5_corpus
    assert tensors.n_songs == N_SONGS and not tensors.failed
    assert read_index(root / "tensors")["shape"] == [5, 4, 16, 84]
    phrases = np.concatenate([load_split(root / "tensors", s) for s in ("train", "val", "test")])
    assert len(phrases) == tensors.n_phrases > 0
    assert (phrases > 0).any(axis=(0, 2, 3, 4)).all()  # every track has notes somewhere
    bass = (phrases[:, 3] > 0).sum(-1)
    assert bass.max() == 1  # the monophonic track is one note at a time
    accepted = read_jsonl(root / "validated" / "accepted.jsonl")
    assert len(accepted) == N_SONGS
