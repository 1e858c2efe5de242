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
from lpdvae.validation import tune_groups as tune_groups_mod
from lpdvae.validation.tune_groups import (
    SongContent,
    duplicates,
    jaccard,
    melody_ngrams,
    ngram_keys,
    note_similarity,
)
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


# --- the bounded searches give the all-pairs answers -----------------------------------------

def _all_pairs_melody(songs: list[SongContent], threshold: float) -> set[tuple[str, str]]:
    """The definition: every pair of songs, set Jaccard of their melody n-grams."""
    grams = {s.path: melody_ngrams(s.melody) for s in songs}
    return {(a.path, b.path) for i, b in enumerate(songs) for a in songs[:i]
            if jaccard(grams[a.path], grams[b.path]) >= threshold}


def _all_pairs_duplicates(members: list[SongContent], similarity: float) -> dict[str, tuple[str, float]]:
    """The definition: each song against every earlier song of its group, in path order."""
    out: dict[str, tuple[str, float]] = {}
    for i, song in enumerate(members):
        for twin in members[:i]:
            score = note_similarity(twin.notes, song.notes)
            if twin.path not in out and score >= similarity:
                out[song.path] = (twin.path, score)
                break
    return out


def test_melody_pairs_in_blocks_are_the_all_pairs_answer(monkeypatch):
    rng = np.random.default_rng(11)
    tunes = [rng.integers(50, 80, 60) for _ in range(40)]
    variants = [np.r_[t[: int(rng.integers(20, 60))] + int(rng.integers(-5, 6)), rng.integers(50, 80, 30)]
                for t in tunes[:25]]  # transposed partial copies, some above 0.25, some below
    songs = [_song(k, list(m)) for k, m in enumerate([*tunes, *variants])]
    monkeypatch.setattr(tune_groups_mod, "PAIR_BLOCK", 7)  # several blocks, one partial
    expected = _all_pairs_melody(songs, 0.25)
    assert 5 < len(expected) < 25
    assert tune_groups_mod._melody_pairs({s.path: ngram_keys(s.melody) for s in songs}, 0.25) == expected


def test_duplicate_search_with_prefix_filter_is_the_all_pairs_answer():
    rng = np.random.default_rng(5)
    base = [np.unique(rng.integers(0, 4000, 300)) for _ in range(6)]
    notes = []
    for k in range(60):  # one large group: copies of 6 songs, transposed, with 0-20% of notes changed
        keys = base[k % 6].copy()
        changed = rng.random(len(keys)) < rng.choice([0.0, 0.03, 0.08, 0.2])
        keys[changed] = rng.integers(0, 4000, int(changed.sum()))
        track, step, pitch = keys % 2, keys // 2 % 200, 60 + keys // 400 % 10
        notes.append(np.unique((track << 40) | (step << 9) | (pitch + int(rng.integers(-3, 4)) + 64)))
    members = [SongContent(f"files/d{k:02d}.mid", f"d{k}", "", np.zeros(0, np.int64), n) for k, n in enumerate(notes)]
    expected = _all_pairs_duplicates(members, 0.9)
    assert 10 < len(expected) < 50
    assert duplicates(members, dict.fromkeys((m.path for m in members), "g"), 0.9) == expected


def test_duplicate_search_in_a_group_on_one_rhythm_grid_compares_only_the_near_copies():
    """Songs that all strike the same (track, step) slots differ only in pitch: the filter must
    look at pitches, or every pair of the group is a candidate."""
    rng = np.random.default_rng(9)
    slots = [(track, step) for track in range(2) for step in range(0, 128, 2)]
    notes = []
    for k in range(120):  # 100 different songs, 20 near-copies (transposed, 3 of 128 notes changed)
        pitches = rng.integers(40, 80, len(slots)) if k < 100 else notes[k - 100][1].copy()
        if k >= 100:
            pitches[rng.choice(len(slots), 3, replace=False)] = rng.integers(40, 80, 3)
        shift = int(rng.integers(-5, 6)) if k >= 100 else 0
        notes.append((np.unique([(t << 40) | (s << 9) | (p + shift + 64) for (t, s), p in zip(slots, pitches, strict=True)]), pitches))
    members = [SongContent(f"files/g{k:03d}.mid", f"g{k}", "", np.zeros(0, np.int64), n) for k, (n, _) in enumerate(notes)]
    pairs = tune_groups_mod._candidate_pairs([m.notes for m in members], 0.9)
    expected = _all_pairs_duplicates(members, 0.9)
    assert len(expected) == 20
    assert len(pairs) < 7140 / 3  # of 7,140 pairs
    assert sum(map(len, pairs.values())) < 7140 * 25 / 50  # transpositions to try
    assert duplicates(members, dict.fromkeys((m.path for m in members), "g"), 0.9) == expected
