"""The latent prior generation draws z from (lpdvae.model.prior)."""

from __future__ import annotations

import torch

from lpdvae.model.prior import LatentPrior, posterior_samples
from lpdvae.model.vae import load_model, save_model

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
