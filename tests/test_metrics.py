"""Metrics checked against values computed by hand on tiny hand-made phrases of note codes."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from pypianoroll import metrics as pm

from lpdvae.data.codes import ONSET, SUSTAIN
from lpdvae.evaluation.metrics import (
    aggregate_metrics,
    diversity,
    drum_in_pattern_rate,
    fit_cell_baseline,
    frame_prf,
    full_roll,
    musegan_per_phrase,
    n_pitch_classes_used,
    nearest_train_f1,
    note_prf,
    octave_layout,
    pairwise_note_f1,
    qualified_note_rate,
    qualified_note_rate_per_pitch,
    tonal_distance,
    track_metrics,
)
from lpdvae.params import RepresentationParams

REP = RepresentationParams(source_resolution=4, beat_resolution=4, beats_per_bar=4, lowest_pitch=48, n_pitches=24, n_bars=2)


def phrase_with(notes: list[tuple[int, int, int, int]], tracks: int = 1) -> np.ndarray:
    """notes: (track, pitch row, start step, length) in a 2-bar phrase of 16 steps per bar, as
    codes (an onset, then sustains)."""
    phrase = np.zeros((tracks, REP.n_bars, REP.steps_per_bar, REP.n_pitches), dtype=np.uint8)
    flat = phrase.reshape(tracks, -1, REP.n_pitches)
    for t, p, start, length in notes:
        flat[t, start : start + length, p] = SUSTAIN
        flat[t, start, p] = ONSET
    return phrase


def test_empty_bar_rate_counts_silent_bars():
    roll = full_roll(phrase_with([(0, 0, 0, 4)])[0], REP)  # a note in bar 1 only
    assert track_metrics(roll, REP, is_drum=False)["empty_bar_rate"] == 0.5


def test_pitch_classes_per_bar_are_averaged_over_bars():
    # bar 1: C and E (rows 0, 4) -> 2 classes; bar 2: C and the C an octave up -> 1 class
    roll = full_roll(phrase_with([(0, 0, 0, 2), (0, 4, 0, 2), (0, 0, 16, 2), (0, 12, 16, 2)])[0], REP)
    assert track_metrics(roll, REP, is_drum=False)["n_pitch_classes_used"] == 1.5


def test_qualified_note_rate_pairs_overlapping_notes_per_pitch():
    # a 3-step note and a 1-step note starting together: one of two notes is qualified (>= 2 steps)
    roll = full_roll(phrase_with([(0, 0, 0, 3), (0, 4, 0, 1)])[0], REP)
    assert qualified_note_rate(roll, threshold=2) == 0.5


def test_qualified_note_rate_of_silence_is_nan():
    assert math.isnan(qualified_note_rate(np.zeros((32, 128), dtype=bool)))


def test_polyphonic_rate_is_share_of_steps_with_more_than_two_pitches():
    # steps 0-1 have three pitches, steps 2-3 one: 2 of 32 steps are polyphonic (MuseGAN, threshold 2)
    roll = full_roll(phrase_with([(0, 0, 0, 4), (0, 4, 0, 2), (0, 7, 0, 2)])[0], REP)
    assert track_metrics(roll, REP, is_drum=False)["polyphonic_rate"] == pytest.approx(2 / 32)


def test_aggregated_musegan_metrics_report_per_track_and_track_mean():
    phrase = phrase_with([(0, 0, 0, 4), (1, 0, 0, 4), (1, 0, 16, 4)], tracks=2)
    out = aggregate_metrics(musegan_per_phrase(phrase[None], ["a", "b"], [False, False], REP))
    assert out["empty_bar_rate/a"] == 0.5
    assert out["empty_bar_rate/b"] == 0.0
    assert out["empty_bar_rate"] == 0.25
    assert out["tonal_distance/a-b"] == pytest.approx(0.0, abs=1e-9)  # identical harmony


def test_tonal_distance_of_a_fifth_apart_harmony_is_positive_and_symmetric():
    c_major = phrase_with([(0, 0, 0, 32), (0, 4, 0, 32), (0, 7, 0, 32)])[0]
    g_major = phrase_with([(0, 7, 0, 32), (0, 11, 0, 32), (0, 14, 0, 32)])[0]
    a, b = full_roll(c_major, REP), full_roll(g_major, REP)
    d = tonal_distance(a, b, REP.beat_resolution)
    assert d > 0.1
    assert d == pytest.approx(tonal_distance(b, a, REP.beat_resolution))
    assert tonal_distance(a, a, REP.beat_resolution) == pytest.approx(0.0, abs=1e-12)


def test_frame_prf_on_hand_counted_cells():
    truth = np.array([1, 1, 1, 0, 0], dtype=np.uint8)
    pred = np.array([1, 1, 0, 1, 0], dtype=np.uint8)  # tp 2, fp 1, fn 1
    assert frame_prf(pred, truth) == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3})


def test_note_prf_matches_onsets_exactly():
    truth = phrase_with([(0, 0, 0, 4), (0, 4, 8, 2)])[None]
    # C starts on time (a hit, its length differs), E one step late (a miss), G is not in the truth
    pred = phrase_with([(0, 0, 0, 2), (0, 4, 9, 2), (0, 7, 0, 1)])[None]
    assert note_prf(pred, truth) == pytest.approx({"precision": 1 / 3, "recall": 1 / 2, "f1": 0.4})


def test_note_prf_counts_a_note_held_over_the_barline_once():
    held = phrase_with([(0, 0, 14, 4)])[None]  # steps 14..17 cross the bar at step 16
    assert note_prf(held, held) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    restruck = phrase_with([(0, 0, 14, 2), (0, 0, 16, 2)])[None]  # the same cells, struck again at 16
    assert note_prf(restruck, held) == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3})


def test_note_prf_reads_a_note_cut_at_the_phrase_start_as_an_onset():
    cut = phrase_with([(0, 3, 0, 4)])
    cut[cut == ONSET] = SUSTAIN  # a note that began before the phrase: sustain codes only
    assert note_prf(cut[None], phrase_with([(0, 3, 0, 4)])[None])["f1"] == 1.0


def test_note_prf_refuses_phrases_of_different_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        note_prf(phrase_with([])[None], phrase_with([], tracks=2)[None])


def test_note_prf_keeps_tracks_and_phrases_apart():
    a = phrase_with([(0, 0, 0, 2)], tracks=2)
    b = phrase_with([(1, 0, 0, 2)], tracks=2)  # same note, other track
    assert note_prf(a[None], b[None])["f1"] == 0.0
    assert note_prf(np.stack([a, b]), np.stack([b, a]))["f1"] == 0.0
    assert note_prf(np.stack([a, b]), np.stack([a, b]))["f1"] == 1.0


def test_drum_in_pattern_rate_weights_each_hit_by_the_beat_grid():
    # resolution 4: pypianoroll's mask is [1, 0.1, 1, 0.1] per beat; hits at steps 0, 4, 5
    roll = np.zeros((32, 128), dtype=bool)
    roll[[0, 4, 5], 36] = True
    assert drum_in_pattern_rate(roll, resolution=4) == pytest.approx((1 + 1 + 0.1) / 3)
    assert track_metrics(roll, REP, is_drum=True)["drum_in_pattern_rate"] == pytest.approx(2.1 / 3)
    assert "drum_in_pattern_rate" not in track_metrics(roll, REP, is_drum=False)


def test_a_drum_track_is_measured_on_empty_bars_and_drum_pattern_only():
    """Pitch classes, qualified notes and polyphony of drum "pitches" (instruments, short hits)
    would mix noise into the pitched tracks' means; MuseGAN leaves them out too."""
    roll = np.zeros((32, 128), dtype=bool)
    roll[[0, 4, 8, 12], 36] = roll[[4, 12], 38] = True
    assert set(track_metrics(roll, REP, is_drum=True)) == {"empty_bar_rate", "drum_in_pattern_rate"}


def test_pitch_classes_fold_octaves_including_the_top_one():
    roll = np.zeros((4, 128), dtype=bool)
    roll[:, [0, 60, 120]] = True  # three Cs
    assert n_pitch_classes_used(roll) == 1
    roll[:, 121] = True  # C#9
    assert n_pitch_classes_used(roll) == 2


def test_pypianoroll_1_0_4_bugs_that_the_workarounds_rely_on():
    """If these start failing, pypianoroll fixed them: drop the matching workaround in metrics.py."""
    roll = np.zeros((16, 128), dtype=np.int8)
    roll[0:12, 60] = 1  # 1 of 4 beats (resolution 4) is empty
    assert pm.empty_beat_rate(roll, 4) == 0.75  # the share of NON-empty beats
    octave = np.zeros((4, 128), dtype=bool)
    octave[:, [0, 12]] = True  # C0 and C1: one pitch class
    assert pm.n_pitch_classes_used(octave) == 2  # groups of 10 adjacent pitches, not octaves
    overlap = np.zeros((6, 3), dtype=np.int8)
    overlap[0:5, 0] = 1
    overlap[1:2, 1] = 1  # a 5-step and a 1-step note: QN at threshold 2 is 0.5
    assert pm.qualified_note_rate(overlap, 2) == 1.0


def chorale_like(n: int, seed: int = 0) -> np.ndarray:
    """`n` two-track phrases of random quarter notes (some repeated pitches: separate onsets)."""
    rng = np.random.default_rng(seed)
    return np.stack([
        phrase_with([(t, int(rng.integers(0, 12)), start, 4) for t in range(2) for start in range(0, 32, 4)],
                    tracks=2)
        for _ in range(n)
    ])


def test_the_data_against_itself_scores_note_f1_one():
    data = chorale_like(6)
    assert note_prf(data, data) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert frame_prf(data > 0, data > 0)["f1"] == 1.0


def test_pairwise_note_f1_has_a_diagonal_of_one_and_matches_note_prf():
    data = chorale_like(5, seed=1)
    pair = pairwise_note_f1(data, data, chunk=2)  # chunks smaller than the set
    assert pair.shape == (5, 5)
    np.testing.assert_allclose(np.diag(pair), 1.0)
    np.testing.assert_allclose(pair, pair.T)
    assert pair[0, 3] == pytest.approx(note_prf(data[:1], data[3:4])["f1"])
    silent = np.zeros_like(data[:2])
    assert pairwise_note_f1(silent, silent).tolist() == [[1.0, 1.0], [1.0, 1.0]]  # nothing vs nothing


def test_diversity_counts_distinct_phrases_and_their_mean_pairwise_f1():
    data = chorale_like(4, seed=2)
    assert diversity(data)["diversity.unique_fraction"] == 1.0
    same = np.stack([data[0]] * 4)
    out = diversity(same)
    assert out["diversity.unique_fraction"] == 0.25
    assert out["diversity.mean_pairwise_note_f1"] == 1.0


def test_nearest_train_f1_is_the_closest_match_of_any_generated_phrase():
    train = chorale_like(8, seed=3)
    others = chorale_like(3, seed=4)
    assert nearest_train_f1(others, train) < 1.0
    copied = np.concatenate([others, train[5:6]])  # one sample copies a training phrase
    assert nearest_train_f1(copied, train) == 1.0
    assert nearest_train_f1(others, train[:0]) == 0.0


def three_cell_train(n: int = 8) -> np.ndarray:
    """Onsets in cell A in every phrase, cell B in half of them, cell C in a quarter."""
    train = np.zeros((n, *phrase_with([]).shape), dtype=np.uint8)
    train[:, 0, 0, 0, 0] = ONSET
    train[: n // 2, 0, 0, 4, 5] = ONSET
    train[: n // 4, 0, 1, 8, 9] = ONSET
    return train


def test_the_cell_baseline_chooses_its_threshold_on_validation_not_train():
    train = three_cell_train()
    only_a = np.zeros_like(train[:4])
    only_a[:, 0, 0, 0, 0] = ONSET
    a_and_b = only_a.copy()
    a_and_b[:, 0, 0, 4, 5] = ONSET
    # on train itself predicting A and B scores better (F1 0.8) than A alone (8/11) ...
    dense, sparse = fit_cell_baseline(train, a_and_b), fit_cell_baseline(train, only_a)
    assert note_prf(dense.predict(len(train)), train)["f1"] == pytest.approx(0.8)
    assert note_prf(sparse.predict(len(train)), train)["f1"] == pytest.approx(8 / 11)
    # ... but a validation split with A only makes the baseline predict A only
    assert sparse.threshold > dense.threshold
    assert onsets_of(sparse.predict(1)) == {(0, 0, 0, 0)}
    assert onsets_of(dense.predict(1)) == {(0, 0, 0, 0), (0, 0, 4, 5)}
    np.testing.assert_allclose(sparse.frequency[0, 0, 0, 0], 1.0)  # frequencies come from train


def onsets_of(predicted: np.ndarray) -> set[tuple[int, ...]]:
    return {tuple(int(i) for i in idx) for idx in zip(*np.nonzero(predicted[0] == ONSET), strict=True)}


def test_the_cell_baseline_predicts_the_same_phrase_for_every_input():
    baseline = fit_cell_baseline(three_cell_train(), three_cell_train()[:2])
    out = baseline.predict(3)
    assert out.shape == (3, *three_cell_train().shape[1:])
    assert (out == out[0]).all()


# --- the fast paths give the same floats as the straightforward per-pitch / per-pair forms -------

WIDE = RepresentationParams(source_resolution=4, beat_resolution=4, beats_per_bar=4, lowest_pitch=44,
                            n_pitches=84, n_bars=4)  # up to pitch 127: the top octave's own folding


def random_roll(rng: np.random.Generator, steps: int = 64, dense: bool = False) -> np.ndarray:
    """A bool roll of random notes on random pitches (top octave included), some touching the
    roll's first or last step, some struck again right after a one-step rest; sometimes silent.
    `dense`: 1- and 2-step notes one rest apart, 20 to 30 notes per pitch (where one QN call
    and the per-pitch sum can round apart)."""
    roll = np.zeros((steps, 128), dtype=bool)
    for pitch in rng.choice(128, size=int(rng.integers(0, 12)), replace=False):
        pitch = int(rng.choice([pitch, 120 + pitch % 8]))
        start = int(rng.choice([0, rng.integers(0, 4 if dense else steps)]))
        while start < steps:
            length = int(rng.choice([1, 2] if dense else [1, 1, 2, 3, rng.integers(1, steps)]))
            roll[start : start + length, pitch] = True
            start += length + (1 if dense else int(rng.choice([1, 1, 2, rng.integers(1, 16)])))
    return roll


def random_codes(rng: np.random.Generator, n: int, tracks: int, rep: RepresentationParams) -> np.ndarray:
    """`[n, tracks, B, S, P]` note codes from `random_roll`s (onset, then sustains)."""
    steps = rep.n_bars * rep.steps_per_bar
    out = np.zeros((n, tracks, steps, rep.n_pitches), dtype=np.uint8)
    for i, k in itertools.product(range(n), range(tracks)):
        roll = random_roll(rng, steps)[:, rep.lowest_pitch : rep.lowest_pitch + rep.n_pitches]
        out[i, k][roll] = SUSTAIN
        out[i, k][roll & ~np.vstack([np.zeros((1, rep.n_pitches), dtype=bool), roll[:-1]])] = ONSET
    return out.reshape(n, tracks, rep.n_bars, rep.steps_per_bar, rep.n_pitches)


def same_float(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_qualified_note_rate_in_one_call_equals_the_onset_weighted_per_pitch_rates():
    rng = np.random.default_rng(0)
    rolls = [random_roll(rng, dense=i % 4 == 0) for i in range(800)] + [np.zeros((64, 128), dtype=bool)]
    for roll in rolls:
        for threshold in (1, 2, 3):
            assert same_float(qualified_note_rate(roll, threshold), qualified_note_rate_per_pitch(roll, threshold))


def test_qualified_note_rate_calls_pypianoroll_once_per_roll(monkeypatch):
    calls = []
    real = pm.qualified_note_rate
    monkeypatch.setattr(pm, "qualified_note_rate", lambda *a, **k: calls.append(a) or real(*a, **k))
    roll = full_roll(phrase_with([(0, 0, 0, 3), (0, 4, 0, 1), (0, 4, 30, 2)])[0], REP)
    assert qualified_note_rate(roll, threshold=2) == pytest.approx(2 / 3)
    assert len(calls) == 1


def test_qualified_note_rate_keeps_the_per_pitch_float_where_one_call_would_round_otherwise():
    # 22 notes on one pitch, 15 of them 2 steps long: 15 / 22 * 22 is 14.999999999999998 in floats
    roll = np.zeros((64, 128), dtype=bool)
    start = 0
    for length in [2] * 15 + [1] * 7:
        roll[start : start + length, 60] = True
        start += length + 1
    roll[[0, 2], 62] = True  # two 1-step notes on another pitch
    assert qualified_note_rate(roll, 2) == qualified_note_rate_per_pitch(roll, 2) == (15 / 22 * 22) / 24
    assert qualified_note_rate(roll, 2) != 15 / 24


def reference_per_phrase(phrases: np.ndarray, names: list[str], drums: list[bool],
                         rep: RepresentationParams) -> dict[str, np.ndarray]:
    """musegan_per_phrase as first written: the octave layout per bar, both tracks' centroids
    recomputed for every pair, QN one pitch at a time."""
    matrix = pm._get_tonal_matrix(1.0, 1.0, 0.5)

    def centroids(roll: np.ndarray) -> np.ndarray:
        chroma = pm._to_chroma(octave_layout(roll).astype(np.float64)).reshape(-1, rep.beat_resolution, 12).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            chroma = chroma / chroma.sum(1, keepdims=True)
        return chroma @ matrix.T

    per: dict[str, np.ndarray] = {}
    spb = rep.steps_per_bar
    for i, phrase in enumerate(phrases):
        rolls = [full_roll(phrase[k], rep) for k in range(len(names))]
        for name, roll, drum in zip(names, rolls, drums, strict=True):
            values = {"empty_bar_rate": 1.0 - pm.empty_beat_rate(roll, resolution=spb)}
            if drum:  # MuseGAN's drum metrics: empty bars and the drum pattern only
                if roll.any():
                    values["drum_in_pattern_rate"] = drum_in_pattern_rate(roll, rep.beat_resolution)
            else:
                upc = [n_pitch_classes_used(roll[j : j + spb]) for j in range(0, len(roll), spb)]
                values["n_pitch_classes_used"] = float(np.mean(upc))
                if roll.any():
                    values["qualified_note_rate"] = qualified_note_rate_per_pitch(roll, 2)
                    values["polyphonic_rate"] = pm.polyphonic_rate(roll, threshold=2)
            for key, value in values.items():
                per.setdefault(f"{key}/{name}", np.full(len(phrases), np.nan))[i] = float(value)
        for (a_i, a), (b_i, b) in itertools.combinations(enumerate(rolls), 2):
            if drums[a_i] or drums[b_i] or not a.any() or not b.any():
                continue
            ca, cb = centroids(a), centroids(b)
            both = np.isfinite(ca).all(1) & np.isfinite(cb).all(1)
            if both.any():
                per.setdefault(f"tonal_distance/{names[a_i]}-{names[b_i]}", np.full(len(phrases), np.nan))[i] = \
                    float(np.linalg.norm(ca[both] - cb[both], axis=1).mean())
    return dict(sorted(per.items()))


def test_musegan_per_phrase_equals_the_per_bar_and_per_pair_reference():
    rng = np.random.default_rng(1)
    names, drums = ["a", "b", "c", "drums"], [False, False, False, True]
    phrases = random_codes(rng, 200, len(names), WIDE)
    phrases[:10, 1] = 0  # silent tracks: no QN, no tonal distance with them
    expected = reference_per_phrase(phrases, names, drums, WIDE)
    got = musegan_per_phrase(phrases, names, drums, WIDE)
    assert list(got) == list(expected)
    for key in expected:
        assert got[key].tobytes() == expected[key].tobytes(), key
