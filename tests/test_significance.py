"""The paired bootstrap on known distributions."""

from __future__ import annotations

import numpy as np
import pytest

from lpdvae.evaluation.significance import paired_bootstrap


def mean_difference(a: np.ndarray, b: np.ndarray):
    return lambda idx: float(a[idx].mean() - b[idx].mean())


def interval(a: np.ndarray, b: np.ndarray, seed: int = 0, resamples: int = 2000, confidence: float = 0.95):
    return paired_bootstrap(mean_difference(a, b), [len(a)], resamples=resamples, confidence=confidence, seed=seed)


def test_two_samples_of_one_distribution_give_an_interval_containing_zero():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.5, 0.1, 200), rng.normal(0.5, 0.1, 200)
    ci = interval(a, b)
    assert ci.low < 0 < ci.high and not ci.above_zero() and not ci.below_zero()


def test_a_shifted_sample_gives_an_interval_excluding_zero_on_its_side():
    rng = np.random.default_rng(2)
    b = rng.normal(0.5, 0.1, 200)
    assert interval(b + 0.05 + rng.normal(0, 0.02, 200), b).above_zero()
    assert interval(b - 0.05, b).below_zero()


def test_pairing_detects_a_small_shift_that_the_spread_between_items_would_hide():
    rng = np.random.default_rng(3)
    hard = rng.uniform(0, 1, 100)  # item difficulty, shared by both models
    ci = interval(hard + 0.01 + rng.normal(0, 0.005, 100), hard)
    assert ci.above_zero() and ci.high - ci.low < 0.01


def test_the_estimate_is_the_full_sample_difference_and_the_interval_covers_it():
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 1.0, 1.0, 1.0])
    ci = interval(a, b)
    assert ci.estimate == 1.5 and ci.low <= 1.5 <= ci.high and ci.resamples == 2000


def test_the_same_seed_gives_the_same_interval_and_another_seed_another():
    rng = np.random.default_rng(4)
    a, b = rng.normal(0, 1, 50), rng.normal(0, 1, 50)
    assert interval(a, b, seed=7) == interval(a, b, seed=7)
    assert interval(a, b, seed=7) != interval(a, b, seed=8)


def test_a_higher_confidence_widens_the_interval():
    rng = np.random.default_rng(5)
    a, b = rng.normal(0, 1, 50), rng.normal(0, 1, 50)
    narrow, wide = interval(a, b, confidence=0.8), interval(a, b, confidence=0.99)
    assert wide.low < narrow.low and wide.high > narrow.high


def test_several_samples_are_resampled_independently():
    gen, ref = np.arange(10.0), np.arange(20.0)
    seen = []

    def stat(i, j):
        seen.append((len(i), len(j)))
        return float(gen[i].mean() - ref[j].mean())

    paired_bootstrap(stat, [10, 20], resamples=5, confidence=0.9, seed=0)
    assert set(seen) == {(10, 20)}


def test_resamples_where_the_statistic_is_undefined_are_left_out():
    a = np.array([np.nan, 1.0, 1.0, 1.0])
    ci = paired_bootstrap(lambda i: float(a[i].mean()), [4], resamples=200, confidence=0.9, seed=0)
    assert 0 < ci.resamples < 200 and ci.low == ci.high == 1.0


@pytest.mark.parametrize("kwargs, match", [({"resamples": 0}, "resamples"), ({"confidence": 1.0}, "confidence")])
def test_bad_settings_are_refused_with_the_name(kwargs, match):
    settings = {"resamples": 10, "confidence": 0.95, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=match):
        paired_bootstrap(lambda i: 0.0, [3], **settings)
