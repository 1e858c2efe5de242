"""Songs of one tune share a split; near-identical songs are one song (validate's `group` and
`duplicate`, `lpdvae.validation.tune_groups`, `lpdvae.data.splits`)."""

from __future__ import annotations

import numpy as np
import pretty_midi
import pytest

from lpdvae.data import demo
from lpdvae.data.shards import SPLITS
from lpdvae.data.splits import assign_splits, song_groups
from lpdvae.io import read_jsonl
from lpdvae.steps.validate import validate
from lpdvae.validation.tune_groups import SongContent
from lpdvae.validation.tune_groups import song_groups as tune_groups
from tests import songkit

# bwv270 ("Befiehl du deine Wege") and bwv244.54 ("O Haupt voll Blut und Wunden"): one melody
# under two titles. bwv24.6 and bwv45.7: one title ("O Gott, du frommer Gott") on two melodies.
# bwv279 repeats bwv158.4 note for note under another number. The rest: unrelated tunes.
CHORALES = ("bwv270", "bwv244.54", "bwv24.6", "bwv45.7", "bwv158.4", "bwv279", "bwv10.7", "bwv253",
            "bwv26.6", "bwv32.6", "bwv40.8", "bwv3.6")
SEEDS = [f"seed{k}" for k in range(24)]  # split salts: a shared group must hold under each


def _chorales(files) -> None:
    paths = {p.name.removesuffix(".mxl"): p for p in demo.chorale_paths()}
    files.mkdir(parents=True, exist_ok=True)
    for name in CHORALES:
        (files / f"{name}.mid").write_bytes(demo.render_chorale(paths[name]))


def _melody_midi(path, soprano: list[int], seed: int) -> None:
    """Four voices of quarter notes: `soprano` on top, the lower voices random (seeded)."""
    rng = np.random.default_rng(seed)
    pm = pretty_midi.PrettyMIDI(initial_tempo=100.0)
    pm.time_signature_changes.append(pretty_midi.TimeSignature(4, 4, 0.0))
    lines = {"Soprano": soprano}
    lower = list(songkit.VOICES.items())[1:]
    lines |= {name: [int(rng.integers(lo, hi)) for _ in soprano] for name, (lo, hi) in lower}
    for name, pitches in lines.items():
        inst = pretty_midi.Instrument(program=52, name=name)
        inst.notes = [pretty_midi.Note(80, p, b * 0.6, (b + 0.9) * 0.6) for b, p in enumerate(pitches)]
        pm.instruments.append(inst)
    path.parent.mkdir(parents=True, exist_ok=True)
    pm.write(str(path))


def _lpd_pair(files) -> None:
    """Two LPD-style npz of random notes named "Artist - Title" alike (case, spacing, a suffix)."""
    for k, name in enumerate(["The Band - A Song (Live)", "the band -  a song"]):
        songkit.npz_song(files / f"lpd/take{k}.npz", seed=500 + k, name=name)


@pytest.fixture(scope="module")
def grouped(tmp_path_factory):
    """Real chorales, a synthetic melody and its transposition under other lower voices, two
    LPD-style songs of one title/artist: validated once."""
    root = tmp_path_factory.mktemp("groups")
    files = root / "raw" / "files"
    _chorales(files)
    melody = [int(p) for p in np.random.default_rng(7).integers(64, 76, 32)]
    _melody_midi(files / "synthetic/tune.mid", melody, seed=1)
    _melody_midi(files / "synthetic/tune_up_a_fourth.mid", [p + 5 for p in melody], seed=2)
    _lpd_pair(files)
    songkit.write_manifest(root / "raw")
    validate(root / "raw", root / "validated", songkit.params(), docs_dir=root / "docs")
    accepted = {r["path"]: r for r in read_jsonl(root / "validated/accepted.jsonl")}
    quarantine = {r["path"]: r for r in read_jsonl(root / "validated/quarantine.jsonl")}
    return accepted, quarantine


def _one_split_always(accepted, a: str, b: str) -> bool:
    groups = song_groups(list(accepted.values()))
    ida, idb = accepted[a]["song_id"], accepted[b]["song_id"]
    return all(len({s[ida], s[idb]}) == 1 for s in
               (assign_splits(groups, songkit.params(**{"tensorize.split_seed": seed})) for seed in SEEDS))


def test_two_harmonizations_of_one_melody_never_land_in_different_splits(grouped):
    accepted, _ = grouped
    assert _one_split_always(accepted, "files/bwv270.mid", "files/bwv244.54.mid")


def test_two_harmonizations_under_one_title_never_land_in_different_splits(grouped):
    accepted, _ = grouped
    assert _one_split_always(accepted, "files/bwv24.6.mid", "files/bwv45.7.mid")


def test_a_transposed_melody_with_other_voices_never_lands_in_another_split(grouped):
    accepted, _ = grouped
    assert _one_split_always(accepted, "files/synthetic/tune.mid", "files/synthetic/tune_up_a_fourth.mid")


def test_bwv158_4_and_bwv279_are_one_song(grouped):
    accepted, quarantine = grouped
    assert "files/bwv158.4.mid" in accepted and "files/bwv279.mid" not in accepted
    twin = quarantine["files/bwv279.mid"]
    assert twin["reason"] == "duplicate" and twin["kind"] == "excluded"
    assert "files/bwv158.4.mid" in twin["detail"]


def test_lpd_songs_of_one_title_and_artist_never_land_in_different_splits(grouped):
    accepted, _ = grouped
    assert _one_split_always(accepted, "files/lpd/take0.npz", "files/lpd/take1.npz")


def test_unrelated_chorales_are_groups_of_their_own(grouped):
    accepted, _ = grouped
    unrelated = ["files/bwv10.7.mid", "files/bwv253.mid", "files/bwv26.6.mid", "files/bwv32.6.mid"]
    assert len({accepted[p]["group"] for p in unrelated}) == len(unrelated)


def _song(k: int, melody: list[int], title: str = "") -> SongContent:
    return SongContent(f"files/s{k:02d}.mid", f"id{k:02d}", title, np.array(melody), np.zeros(0, np.int64))


def test_the_group_of_a_song_is_stable_when_songs_are_added():
    rng = np.random.default_rng(3)
    tunes = [list(rng.integers(60, 80, 40)) for _ in range(6)]
    old = [_song(0, tunes[0]), _song(1, [p + 2 for p in tunes[0]]), _song(2, tunes[1], "Hymn"),
           _song(3, tunes[2])]
    added = [_song(4, tunes[3]), _song(5, tunes[4], "Other hymn"), _song(6, tunes[5]), _song(7, tunes[1], "hymn")]
    before = tune_groups(old, 0.25)
    after = tune_groups(old + added, 0.25)
    assert {p: after[p] for p in before} == before


def test_no_split_is_empty_from_three_groups_up():
    songs = {f"song{k}": f"group{k % 3}" for k in range(12)}
    for seed in SEEDS:
        splits = assign_splits(songs, songkit.params(**{"tensorize.split_seed": seed}))
        assert set(splits.values()) == set(SPLITS)
        assert all(len({splits[s] for s in songs if songs[s] == g}) == 1 for g in set(songs.values()))
