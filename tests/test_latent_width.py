"""The width of generation's kernel density over whole z's, chosen on held-out phrases
(`lpdvae.training.latent_width`)."""

from __future__ import annotations

import numpy as np
import pytest

from lpdvae.model.prior import KernelDensity, posterior_samples
from lpdvae.training.latent_width import choose_width, closest_width

from .test_model import make_vae, note_phrases, small_params


def test_the_width_is_the_one_whose_samples_sit_as_near_the_training_phrases_as_held_out_ones() -> None:
    assert closest_width({1.0: 0.40, 0.8: 0.52, 0.7: 0.57}, target=0.533) == 0.8


def test_of_two_widths_equally_near_the_held_out_phrases_the_wider_is_chosen() -> None:
    assert closest_width({0.5: 0.6, 0.7: 0.4}, target=0.5) == 0.7


@pytest.fixture
def kept_vae():
    params = small_params(kinds=("monophonic",) * 2, prior="kde")
    vae = make_vae(params).eval()
    train = note_phrases(32, params)
    vae.latent_kde.keep(posterior_samples(vae.encode, [train], seed=0), seed=0)
    return vae, train.numpy()


def test_held_out_phrases_further_from_training_than_any_sample_stop_the_search_at_the_widest_width(kept_vae) -> None:
    vae, train = kept_vae
    medians = choose_width(vae, train, np.zeros_like(train[:8]), transpose=0, seed=0)
    assert medians["held_out"] == 0.0  # silent phrases share no onset with any training phrase
    assert list(medians) == ["held_out", str(max(KernelDensity.BANDWIDTHS))]
    assert float(vae.latent_kde.bandwidth) == max(KernelDensity.BANDWIDTHS)


def test_held_out_phrases_nearer_than_every_sample_try_every_width_and_take_the_nearest(kept_vae) -> None:
    vae, train = kept_vae
    medians = choose_width(vae, train, train[:8], transpose=0, seed=0)
    assert medians["held_out"] == 1.0  # training phrases themselves
    tried = {float(h): m for h, m in medians.items() if h != "held_out"}
    assert sorted(tried) == sorted(KernelDensity.BANDWIDTHS) and all(m < 1.0 for m in tried.values())
    assert float(vae.latent_kde.bandwidth) == pytest.approx(max(tried, key=lambda h: (tried[h], h)))


def test_choosing_a_width_needs_a_latent_density_with_its_rows_kept() -> None:
    vae = make_vae(small_params(kinds=("monophonic",) * 2, prior="kde"))
    with pytest.raises(ValueError, match="model.prior: kde and its rows kept"):
        choose_width(vae, np.zeros((2, 2, 2, 16, 24), np.uint8), np.zeros((2, 2, 2, 16, 24), np.uint8), 0, 0)

