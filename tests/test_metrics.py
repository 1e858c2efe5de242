"""Metrics checked against values computed by hand on tiny hand-made rolls."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lpdvae.metrics import (
    full_roll,
    musegan_metrics,
    note_f1,
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


def test_note_f1_on_hand_counted_cells():
    truth = np.array([1, 1, 1, 0, 0], dtype=np.uint8)
    pred = np.array([1, 1, 0, 1, 0], dtype=np.uint8)  # tp 2, fp 1, fn 1
    assert note_f1(pred, truth) == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3})
