"""Metrics checked against values computed by hand on tiny hand-made rolls."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pypianoroll import metrics as pm

from lpdvae.metrics import (
    drum_in_pattern_rate,
    frame_prf,
    full_roll,
    musegan_metrics,
    n_pitch_classes_used,
    note_prf,
    qualified_note_rate,
    tonal_distance,
    track_metrics,
)
from lpdvae.params import RepresentationParams

REP = RepresentationParams(beat_resolution=4, beats_per_bar=4, lowest_pitch=48, n_pitches=24, n_bars=2)


def phrase_with(notes: list[tuple[int, int, int, int]], tracks: int = 1) -> np.ndarray:
    """notes: (track, pitch row, start step, length) in a 2-bar phrase of 16 steps per bar."""
    phrase = np.zeros((tracks, REP.n_bars, REP.steps_per_bar, REP.n_pitches), dtype=np.uint8)
    flat = phrase.reshape(tracks, -1, REP.n_pitches)
    for t, p, start, length in notes:
        flat[t, start : start + length, p] = 1
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


def test_musegan_metrics_report_per_track_and_track_mean():
    phrase = phrase_with([(0, 0, 0, 4), (1, 0, 0, 4), (1, 0, 16, 4)], tracks=2)
    out = musegan_metrics(phrase[None], ["a", "b"], [False, False], REP)
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


def test_note_prf_matches_onsets_within_one_step():
    truth = phrase_with([(0, 0, 0, 4), (0, 4, 8, 2)])[None]
    # C starts one step late (a hit), E three steps late (a miss), G is not in the truth
    pred = phrase_with([(0, 0, 1, 3), (0, 4, 11, 2), (0, 7, 0, 1)])[None]
    assert note_prf(pred, truth) == pytest.approx({"precision": 1 / 3, "recall": 1 / 2, "f1": 0.4})
    assert note_prf(pred, truth, onset_tolerance=0)["f1"] == 0.0


def test_note_prf_counts_a_note_held_over_the_barline_once_and_matches_one_to_one():
    held = phrase_with([(0, 0, 14, 4)])[None]  # steps 14..17 cross the bar at step 16
    assert note_prf(held, held) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    two_near = phrase_with([(0, 0, 0, 1), (0, 0, 2, 1)])[None]  # both within 1 step of onset 1
    one = phrase_with([(0, 0, 1, 1)])[None]
    assert note_prf(two_near, one) == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3})


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
