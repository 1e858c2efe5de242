"""The latent prior generation draws z from (lpdvae.model.prior)."""

from __future__ import annotations

import pytest
import torch

from lpdvae.model.files import load_model, save_model
from lpdvae.model.prior import KernelDensity, LatentPrior, posterior_samples

from .test_model import make_vae, note_phrases, small_params


def test_an_unfitted_prior_draws_z_exactly_as_randn_does() -> None:
    prior = LatentPrior(6, components=3)
    z = prior.sample(5, torch.Generator().manual_seed(1))
    assert torch.equal(z, torch.randn(5, 6, generator=torch.Generator().manual_seed(1)))


def test_a_fitted_mixture_draws_where_the_posteriors_are() -> None:
    g = torch.Generator().manual_seed(0)
    modes = torch.tensor([[4.0, 0.0], [-4.0, 2.0]])
    z = modes[torch.randint(0, 2, (2000,), generator=g)] + 0.3 * torch.randn(2000, 2, generator=g)
    prior = LatentPrior(2, components=2)
    prior.fit(z, seed=0)
    drawn = prior.sample(4000, torch.Generator().manual_seed(2))
    nearest = torch.cdist(drawn, modes).min(1).values
    assert (nearest < 1.5).float().mean() > 0.99  # not N(0, I): almost nothing between the modes
    torch.testing.assert_close(drawn.std(0)[0], z.std(0)[0], rtol=0.05, atol=0.0)


def test_zero_components_keep_n01_after_fit() -> None:
    prior = LatentPrior(2, components=0)
    prior.fit(torch.full((100, 2), 5.0), seed=0)
    assert not bool(prior.fitted)


def test_the_fitted_prior_travels_in_model_pt_and_samples_the_same_after_loading(tmp_path) -> None:
    params = small_params(kinds=("monophonic",) * 2, prior_components=2)
    vae = make_vae(params)
    x = note_phrases(40, params)
    vae.prior.fit(posterior_samples(vae.encode, [x[:20], x[20:]], seed=3), seed=0)
    before = vae.sample(4, seed=5)
    loaded = load_model(save_model(vae, tmp_path, params))
    assert bool(loaded.prior.fitted)
    assert torch.equal(loaded.sample(4, seed=5), before)
    assert not torch.equal(make_vae(params).sample(4, seed=5), before)  # unfitted: N(0, I)


def clustered(n: int, spread: float, seed: int) -> torch.Tensor:
    """Sequences of 8 bar dims around 20 fixed centres, Gaussian with sd `spread` about them."""
    centres = torch.randn(20, 8, generator=torch.Generator().manual_seed(0)) * 3
    g = torch.Generator().manual_seed(seed)
    return centres[torch.randint(0, 20, (n,), generator=g)] + spread * torch.randn(n, 8, generator=g)


def test_an_unfitted_bar_density_draws_as_randn_does() -> None:
    z = KernelDensity(8).sample(5, torch.Generator().manual_seed(1))
    assert torch.equal(z, torch.randn(5, 8, generator=torch.Generator().manual_seed(1)))


def test_the_bar_density_chooses_the_bandwidth_under_which_held_out_sequences_are_likeliest() -> None:
    kde = KernelDensity(8, rows=2000)
    scores = kde.fit(clustered(4000, 0.3, seed=1), clustered(500, 0.3, seed=2), seed=0)
    assert float(kde.bandwidth) == pytest.approx(max(scores, key=lambda h: scores[h]))
    assert 0.2 <= float(kde.bandwidth) <= 0.4  # near the clusters' own spread: not 0.05, not 1.0
    assert int(kde.count) == 2000


def test_the_bar_density_draws_a_kept_sequence_plus_noise_of_its_bandwidth() -> None:
    kde = KernelDensity(8, rows=2000)
    kde.fit(clustered(4000, 0.3, seed=1), clustered(500, 0.3, seed=2), seed=0)
    drawn = kde.sample(3000, torch.Generator().manual_seed(3))
    offset = drawn - kde.rows[torch.cdist(drawn, kde.rows).argmin(1)]
    assert offset.pow(2).sum(1).sqrt().median().item() < float(kde.bandwidth) * 8 ** 0.5  # near a kept one
    assert torch.equal(drawn, kde.sample(3000, torch.Generator().manual_seed(3)))


def test_with_a_bar_density_generation_draws_the_phrase_z_from_the_mixture_and_the_bars_from_the_density(tmp_path) -> None:
    params = small_params(kinds=("monophonic",) * 2, prior_components=2, bar_latent_dim=3, bar_prior="kde")
    vae = make_vae(params)
    assert vae.prior.dim == vae.phrase_dim and vae.bar_kde is not None
    x = note_phrases(40, params)
    z = posterior_samples(vae.encode, [x[:20], x[20:]], seed=3)
    vae.prior.fit(z[:, :vae.phrase_dim], seed=0)
    vae.bar_kde.fit(z[:, vae.phrase_dim:], z[:8, vae.phrase_dim:], seed=0)
    drawn = vae.draw_z(64, torch.Generator().manual_seed(4))
    bars = drawn[:, vae.phrase_dim:]
    nearest = torch.cdist(bars, vae.bar_kde.rows[:int(vae.bar_kde.count)]).min(1).values
    assert drawn.shape == (64, vae.latent_dim)
    assert nearest.median().item() < torch.cdist(torch.randn(64, bars.shape[1]), z[:, vae.phrase_dim:]).min(1).values.median().item()
    loaded = load_model(save_model(vae, tmp_path, params))
    assert torch.equal(loaded.sample(4, seed=5), vae.sample(4, seed=5))


def test_with_a_latent_density_generation_draws_the_whole_z_near_a_kept_training_posterior(tmp_path) -> None:
    params = small_params(kinds=("monophonic",) * 2, bar_latent_dim=3, prior="kde")
    vae = make_vae(params)
    assert vae.latent_kde is not None and vae.latent_kde.dim == vae.latent_dim
    z = posterior_samples(vae.encode, [note_phrases(40, params)], seed=3)
    vae.latent_kde.keep(z, seed=0)
    vae.latent_kde.bandwidth.fill_(0.1)
    drawn = vae.draw_z(64, torch.Generator().manual_seed(4))
    kept = vae.latent_kde.rows[:int(vae.latent_kde.count)]
    assert int(vae.latent_kde.count) == len(z)  # fewer draws than rows: all kept
    assert torch.cdist(drawn, kept).min(1).values.max().item() < 0.1 * 3 * vae.latent_dim ** 0.5
    loaded = load_model(save_model(vae, tmp_path, params))
    assert float(loaded.latent_kde.bandwidth) == pytest.approx(0.1)
    assert torch.equal(loaded.sample(4, seed=5), vae.sample(4, seed=5))
