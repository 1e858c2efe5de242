"""MusicVAE: shapes for any (steps, pitches), the loss, sampling, interpolation, persistence, and
that it can memorise 8 phrases (the usual "can it learn at all" check)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from lpdvae.model import (
    MusicVAE,
    active_units,
    load_model,
    save_model,
    vae_loss,
)
from lpdvae.params import Params, load_params

from .conftest import REPO


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models run fastest (and steadiest on a shared 2-core box) on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_params(steps: int = 16, pitches: int = 24, bars: int = 2, **model: object) -> Params:
    sizes = {"conv_channels": [4, 8], "bar_embedding": 16, "encoder_hidden": 16,
             "latent_dim": 4, "conductor_hidden": 16, "decoder_hidden": 16, **model}
    return load_params(REPO / "params.yaml", {
        "tracks": [{"name": "a"}, {"name": "b"}],
        "representation.beat_resolution": steps, "representation.beats_per_bar": 1,
        "representation.source_resolution": steps,
        "representation.n_pitches": pitches, "representation.n_bars": bars,
        **{f"model.{k}": v for k, v in sizes.items()},
    })


def make_vae(params: Params, seed: int = 0) -> MusicVAE:
    torch.manual_seed(seed)
    return MusicVAE(params.model, params.representation, len(params.tracks))


def rolls(n: int, params: Params, seed: int = 0, density: float = 0.05) -> torch.Tensor:
    r = params.representation
    g = torch.Generator().manual_seed(seed)
    shape = (n, len(params.tracks), r.n_bars, r.steps_per_bar, r.n_pitches)
    return (torch.rand(shape, generator=g) < density).float()


@pytest.mark.parametrize(("steps", "pitches", "channels"), [
    (16, 24, [4, 8]), (48, 84, [4, 8, 8]), (7, 13, [4, 8]), (12, 5, [4, 4, 4, 4]), (1, 1, [4]),
])
def test_shapes_round_trip_any_grid(steps: int, pitches: int, channels: list[int]) -> None:
    params = small_params(steps, pitches, conv_channels=channels)
    vae = make_vae(params)
    x = rolls(3, params)
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (3, 4)
    logits = vae.decode(mu)
    assert logits.shape == x.shape
    out, mu2, _ = vae(x)
    assert out.shape == x.shape and torch.equal(mu, mu2)


def test_default_params_shape() -> None:
    params = load_params(REPO / "params.yaml")
    vae = MusicVAE(params.model, params.representation, len(params.tracks))
    x = torch.zeros(1, 4, 4, 48, 84)
    assert vae(x)[0].shape == (1, 4, 4, 48, 84)


def test_loss_on_a_tiny_batch() -> None:
    params = small_params()
    vae = make_vae(params)
    x = rolls(4, params)
    logits, mu, logvar = vae(x, torch.zeros(4, 4))
    out = vae_loss(logits, x, mu, logvar, beta=0.5, free_bits=0.0, pos_weight=4.0)
    assert set(out) == {"loss", "recon", "kl", "kl_per_dim"}
    assert out["kl_per_dim"].shape == (4,)
    assert torch.isfinite(out["loss"]) and out["recon"] > 0 and out["kl"] >= 0
    assert out["loss"].item() == pytest.approx(out["recon"].item() + 0.5 * out["kl"].item(), rel=1e-5)
    # BCE summed over the cells of a phrase: at the initial bias (p ~ 5 %) about 0.2-0.4 nats/cell
    cells = x[0].numel()
    assert 0.05 < out["recon"].item() / cells < 1.0
    out["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in vae.parameters())


def test_free_bits_floor_and_kl_report() -> None:
    mu = torch.zeros(2, 3, requires_grad=True)
    logvar = torch.zeros(2, 3)
    with torch.no_grad():
        mu[:, 0] = 2.0  # dim 0 carries 2 nats, dims 1-2 none
    logits = torch.zeros(2, 1)
    x = torch.ones(2, 1)
    out = vae_loss(logits, x, mu, logvar, beta=1.0, free_bits=0.5, pos_weight=1.0)
    assert out["kl_per_dim"].tolist() == pytest.approx([2.0, 0.0, 0.0])
    assert out["kl"].item() == pytest.approx(2.0)  # the true KL, no floor
    assert out["loss"].item() == pytest.approx(out["recon"].item() + 2.0 + 2 * 0.5)
    out["loss"].backward()
    assert mu.grad[:, 1:].abs().sum() == 0  # dims under the floor get no KL gradient
    assert mu.grad[:, 0].abs().sum() > 0
    assert active_units(out["kl_per_dim"]) == 1
    # a global reference (as DDP passes) decides the floor instead of the local batch
    ref = torch.tensor([0.0, 1.0, 0.0])
    out = vae_loss(logits, x, mu, logvar, 1.0, 0.5, 1.0, kl_reference=ref)
    assert out["loss"].item() == pytest.approx(out["recon"].item() + 0.5 + 0.0 + 0.5)


def test_sample_is_deterministic_per_seed_and_keeps_mode() -> None:
    params = small_params(dropout=0.3)
    vae = make_vae(params)
    vae.train()
    a, b, c = vae.sample(3, seed=1), vae.sample(3, seed=1), vae.sample(3, seed=2)
    assert a.shape == (3, 2, 2, 16, 24)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert 0 <= a.min() and a.max() <= 1
    assert vae.training
    cold, hot = vae.sample(2, seed=1, temperature=0.0), vae.sample(2, seed=5, temperature=0.0)
    assert torch.equal(cold, hot)  # temperature 0: every sample is the decoded prior mean


def test_interpolate_ends_at_the_two_phrases() -> None:
    params = small_params()
    vae = make_vae(params).eval()
    x = rolls(2, params, seed=3)
    path = vae.interpolate(x[0], x[1], steps=5)
    assert path.shape == (5, 2, 2, 16, 24)
    mu, _ = vae.encode(x)
    ends = torch.sigmoid(vae.decode(mu))
    torch.testing.assert_close(path[0], ends[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(path[-1], ends[1], atol=1e-5, rtol=0)
    with pytest.raises(ValueError):
        vae.interpolate(x[0], x[1], steps=1)


def test_save_and_load_round_trip(tmp_path) -> None:
    params = small_params(7, 13)
    vae = make_vae(params)
    save_model(vae, tmp_path, params)
    assert {p.name for p in tmp_path.iterdir()} == {"model.pt", "model.json"}
    loaded = load_model(tmp_path)
    assert not loaded.training
    assert loaded.meta["params_digest"] == params.digest()
    assert [t["name"] for t in loaded.meta["tracks"]] == ["a", "b"]
    assert loaded.meta["representation"]["n_pitches"] == 13
    assert loaded.meta["model"]["conv_channels"] == [4, 8]
    x = rolls(2, params)
    vae.eval()
    torch.testing.assert_close(loaded.decode(loaded.encode(x)[0]), vae.decode(vae.encode(x)[0]))
    assert torch.equal(loaded.sample(2, 9), vae.sample(2, 9))


def note_phrases(n: int, params: Params, seed: int = 1) -> torch.Tensor:
    """Four held notes per track and bar at random pitches: phrase-like, not white noise."""
    r = params.representation
    t, b, s, p = len(params.tracks), r.n_bars, r.steps_per_bar, r.n_pitches
    g = torch.Generator().manual_seed(seed)
    pitches = torch.randint(0, p, (n, t, b, 4), generator=g)
    x = torch.zeros(n, t, b, s, p)
    for k in range(4):
        x[..., k * s // 4:(k + 1) * s // 4, :] = torch.nn.functional.one_hot(
            pitches[..., k], p).float().unsqueeze(-2)
    return x


def test_overfits_eight_phrases() -> None:
    params = small_params(conv_channels=[16, 32], bar_embedding=64, encoder_hidden=64,
                          conductor_hidden=64, decoder_hidden=64, latent_dim=8)
    vae = make_vae(params)
    x = note_phrases(8, params)
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    first = None
    for _ in range(300):
        logits, mu, logvar = vae(x)
        out = vae_loss(logits, x, mu, logvar, beta=0.01, free_bits=0.0, pos_weight=1.0)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first = first if first is not None else out["recon"].item()
    vae.eval()
    with torch.no_grad():
        logits = vae.decode(vae.encode(x)[0])
    recon = vae_loss(logits, x, *vae.encode(x), 0.0, 0.0, 1.0)["recon"].item()
    assert recon / x[0].numel() < 0.005, recon  # nats per cell, from ~0.17 at the start
    assert recon < 0.02 * first
    wrong = ((torch.sigmoid(logits) > 0.5).float() != x).sum().item()
    assert wrong <= 0.01 * x.sum().item()


def test_encoder_tells_sparse_phrases_apart_at_initialisation() -> None:
    """Piano rolls are ~1 % ones; the encoder must not map them all to one mu (posterior
    collapse before training starts). Default sizes, a 4-voice chorale-like density."""
    params = load_params(REPO / "params.yaml")
    vae = make_vae(params).eval()
    x = rolls(32, params, density=0.01)
    with torch.no_grad():
        mu, _ = vae.encode(x)
    assert mu.std(0).mean().item() > 0.01


def test_decoder_output_depends_on_z_at_initialisation() -> None:
    """Without norms in the bar decoder the logits moved by ~3e-4 across z ~ N(0, I) at init,
    so gradients into z were as small and training stalled on the data's marginal."""
    params = load_params(REPO / "params.yaml")
    vae = make_vae(params).eval()
    z = torch.randn(32, vae.latent_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = vae.decode(z)
    assert logits.std(0).mean().item() > 0.01


def test_a_model_of_another_format_is_refused_with_the_reason(tmp_path) -> None:
    params = small_params()
    save_model(make_vae(params), tmp_path, params)
    meta = tmp_path / "model.json"
    meta.write_text(meta.read_text().replace('"format_version": 3', '"format_version": 2'))
    with pytest.raises(ValueError, match=r"model\.json: model format 2, .* retrain"):
        load_model(tmp_path)
