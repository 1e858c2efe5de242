"""Baselines, song-bootstrap intervals, the interval gate, the calibrated copy check, the voice
statistics, and the sealed test split (nothing reads test to choose)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import lpdvae.data.shards as shards
from lpdvae.data.codes import ONSET, SUSTAIN
from lpdvae.data.nearest import nearest, shift_pitches
from lpdvae.evaluation.baselines import (
    copy_predict,
    information_bits,
    repeat_bar_predict,
)
from lpdvae.evaluation.copy_check import copy_check
from lpdvae.evaluation.gate import baseline_reasons
from lpdvae.evaluation.intervals import group_index, reconstruction_intervals, resample_weights
from lpdvae.evaluation.metrics import note_counts, note_prf
from lpdvae.evaluation.voices import voice_per_phrase
from lpdvae.model.files import load_model
from lpdvae.steps.evaluate import choose
from tests.evalkit import make_model, random_codes
from tests.test_gate import EV, quarter_notes, small_params, write_tensors

EV_FAST = dataclasses.replace(EV, bootstrap_resamples=400)


@pytest.fixture(scope="module")
def corpus():
    params = small_params()
    train, val, test = (quarter_notes(n, params, seed, favourite=0.25) for n, seed in ((96, 0), (32, 1), (32, 2)))
    return params, train, val, test


def test_the_copy_baseline_scores_one_on_a_test_set_drawn_from_train(corpus):
    _, train, _, _ = corpus
    test = train[10:40]
    assert note_prf(copy_predict(test, train, 2), test)["f1"] == 1.0


def test_the_copy_baseline_finds_a_training_phrase_transposed_within_the_range(corpus):
    _, train, _, _ = corpus
    moved = shift_pitches(train[:8], -2)
    match = nearest(moved, train, 2)
    assert match.f1.tolist() == [1.0] * 8 and match.shift.tolist() == [-2] * 8
    assert (nearest(moved, train, 1).f1 < 1.0).all()  # outside +-1 semitone: not found


def test_repeat_bar_never_predicts_a_bar_from_itself():
    x = np.zeros((1, 1, 3, 4, 6), dtype=np.uint8)
    for bar in range(3):
        x[0, 0, bar, 0, bar] = ONSET  # bar k plays pitch k
    pred = repeat_bar_predict(x)
    played = [int(np.flatnonzero(pred[0, 0, bar].any(0))[0]) for bar in range(3)]
    assert played == [1, 0, 1]


def test_information_bits_count_what_each_predictor_names():
    x = np.zeros((2, 4, 4, 16, 84), dtype=np.uint8)
    bits = information_bits(x, n_train=1000, transpose=2)
    assert bits["average_cell"] == 0.0 and bits["repeat_bar"] == 0.0  # silence copies nothing
    assert bits["copy"] == pytest.approx(np.log2(5000)) and bits["copy_per_voice"] == pytest.approx(4 * np.log2(5000))


def test_the_song_bootstrap_draws_whole_songs():
    groups = group_index(np.array(["a", "a", "a", "b", "c"], dtype=object), 5)
    weights = resample_weights(groups, 200, seed=0)
    assert (weights[:, 0] == weights[:, 1]).all() and (weights[:, 1] == weights[:, 2]).all()
    assert (weights[:, 0] + weights[:, 3] + weights[:, 4] == 3).all()  # three songs drawn each time


def gate_on(model: np.ndarray, base: np.ndarray, n_songs: int) -> list[str]:
    weights = resample_weights(np.arange(n_songs), EV_FAST.bootstrap_resamples, 0)
    return baseline_reasons(reconstruction_intervals(model, {"copy": base}, weights, EV_FAST.confidence), EV_FAST)


def test_the_gate_refuses_a_lookup_model(corpus):
    _, train, _, test = corpus
    lookup = copy_predict(test, train, 2)  # a "model" that returns the closest training phrase
    counts = note_counts(lookup, test)
    reasons = gate_on(counts, counts, len(test))
    assert len(reasons) == 1 and "copy baseline" in reasons[0]


def test_the_gate_refuses_a_model_whose_interval_overlaps_the_baseline_margin():
    """Better on the point estimate by more than the margin, not over the interval: refused."""
    rng = np.random.default_rng(0)
    base = np.stack([rng.integers(5, 15, 40), np.full(40, 20), np.full(40, 20)], 1)
    model = base.copy()
    model[:, 0] += rng.choice([-2, -1, 0, 1, 2, 3], 40)
    weights = resample_weights(np.arange(40), EV_FAST.bootstrap_resamples, 0)
    m = reconstruction_intervals(model, {"copy": base}, weights, EV_FAST.confidence)
    assert m["margin.copy"] > EV_FAST.min_margin > m["margin.copy.lo"]
    assert len(baseline_reasons(m, EV_FAST)) == 1


def test_a_model_clearly_above_every_baseline_passes_the_margin():
    base = np.tile([8, 20, 20], (40, 1))
    model = np.tile([14, 20, 20], (40, 1))
    assert gate_on(model, base, 40) == []


def test_val_phrases_posing_as_samples_pass_the_calibrated_copy_check(corpus):
    params, train, val, _ = corpus
    more_val = quarter_notes(32, params, seed=5, favourite=0.25)
    m = copy_check(more_val, val, train, 2, EV)
    assert m["copy.p_value"] >= EV.copy_alpha and m["copy.median_best_match"] >= m["copy.val_floor"]


def test_train_phrases_posing_as_samples_fail_the_calibrated_copy_check(corpus):
    _, train, val, _ = corpus
    m = copy_check(train[:32], val, train, 2, EV)
    assert m["copy.share_at_match"] == 1.0 and m["copy.p_value"] < EV.copy_alpha


def test_nothing_reads_test_to_choose(tmp_path, monkeypatch):
    """Temperature, cell threshold, voice ranges and the copy calibration open no test shard."""
    params = small_params()
    splits = {s: random_codes(16, params, k) for k, s in enumerate(("train", "val", "test"))}
    tensors = write_tensors(tmp_path / "tensors", splits, params)
    vae = load_model(make_model(tmp_path / "model", params))
    opened: list[str] = []
    real = shards.open_shard

    def recording(tensor_dir, entry, shape):  # the real loader, recording what it opens
        opened.append(entry["file"])
        return real(tensor_dir, entry, shape)

    monkeypatch.setattr(shards, "open_shard", recording)
    choose(vae, tensors, params)
    assert opened and not [f for f in opened if "test" in f]
    assert {f.split("/")[-1].split("-")[0] for f in opened} == {"train", "val"}


def voices(soprano: list[int], alto: list[int]) -> np.ndarray:
    """Two voices of quarter notes (pitch rows), one bar of 4 steps per note."""
    x = np.zeros((1, 2, 1, 4 * len(soprano), 24), dtype=np.uint8)
    for v, line in enumerate((soprano, alto)):
        for i, p in enumerate(line):
            x[0, v, 0, 4 * i, p] = ONSET
            x[0, v, 0, 4 * i + 1 : 4 * i + 4, p] = SUSTAIN
    return x


def test_parallel_fifths_are_counted_among_similar_motions():
    ranges = np.array([[0, 23], [0, 23]])
    parallel = voice_per_phrase(voices([19, 21], [12, 14]), ["s", "a"], ranges)  # fifth -> fifth
    contrary = voice_per_phrase(voices([19, 17], [12, 14]), ["s", "a"], ranges)
    assert parallel["parallel_motion_rate/s-a"][0] == 1.0
    assert np.isnan(contrary["parallel_motion_rate/s-a"][0])  # no similar motion to rate


def test_voice_crossings_and_range_adherence():
    per = voice_per_phrase(voices([10, 12], [11, 9]), ["s", "a"], np.array([[10, 23], [0, 10]]))
    assert per["voice_crossing_rate/s-a"][0] == 0.5
    assert per["voice_range_adherence/s"][0] == 1.0 and per["voice_range_adherence/a"][0] == 0.5
