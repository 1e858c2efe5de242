"""MusicVAE: shapes for any (steps, pitches) and any mix of track kinds, the per-kind likelihood
and the free-nats loss, sampling, interpolation, persistence (and its clear errors), and that it
can memorise 8 phrases (the usual "can it learn at all" check)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from lpdvae.data.codes import ONSET, SUSTAIN, mono_classes, planes
from lpdvae.evaluation.metrics import note_prf
from lpdvae.evaluation.voices import voice_per_phrase
from lpdvae.model.files import FORMAT_VERSION, build_model, load_model, save_model
from lpdvae.model.heads import bar_pitch_sets, silent_bars, tracks_playing
from lpdvae.model.loss import active_units, free_nats_kl, vae_loss
from lpdvae.model.vae import MusicVAE, ResidualConv
from lpdvae.params import Params, load_params

from .conftest import REPO
from .project import small_model


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models run fastest (and steadiest on a shared 2-core box) on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tracks(*kinds: str) -> list[dict]:
    return [{"name": f"t{k}", "kind": kind, "program": 0, "is_drum": kind == "drums", "names": [],
             "programs": []} for k, kind in enumerate(kinds)]


def small_params(steps: int = 16, pitches: int = 24, bars: int = 2,
                 kinds: tuple[str, ...] = ("monophonic", "polyphonic"), **model: object) -> Params:
    sizes = small_model(**model)
    return load_params(REPO / "params.yaml", {
        "tracks": tracks(*kinds),
        "representation.beat_resolution": steps, "representation.beats_per_bar": 1,
        "representation.source_resolution": steps,
        "representation.n_pitches": pitches, "representation.n_bars": bars,
        **{f"model.{k}": v for k, v in sizes.items()},
    })


def make_vae(params: Params, seed: int = 0) -> MusicVAE:
    torch.manual_seed(seed)
    return build_model(params)


def codes(n: int, params: Params, seed: int = 0, density: float = 0.05) -> torch.Tensor:
    """Random uint8 codes: ~`density` of the cells sound, half of those as onsets."""
    r = params.representation
    g = torch.Generator().manual_seed(seed)
    shape = (n, len(params.tracks), r.n_bars, r.steps_per_bar, r.n_pitches)
    u = torch.rand(shape, generator=g)
    return torch.where(u < density / 2, ONSET, torch.where(u < density, SUSTAIN, 0)).to(torch.uint8)


@pytest.mark.parametrize(("steps", "pitches"), [(16, 24), (48, 84), (7, 13), (12, 5), (1, 1)])
def test_shapes_round_trip_any_grid(steps: int, pitches: int) -> None:
    params = small_params(steps, pitches)
    vae = make_vae(params)
    x = codes(3, params)
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (3, 4)
    mono, poly, silence, harmony, presence = vae.decode(mu)
    assert mono.shape == (3, 1, 2, steps, pitches + 2)
    assert poly.shape == (3, 1, 2, steps, pitches, 2)
    assert silence.shape == (3, 1, 2) and presence.shape == (3, 0)  # no TrackPresence by default
    (mono2, *_), mu2, _, _ = vae(x)
    assert mono2.shape == mono.shape and torch.equal(mu, mu2)
    assert vae.to_codes((mono, poly, silence, harmony, presence)).shape == x.shape


@pytest.mark.parametrize("kinds", [
    ("monophonic",) * 4, ("polyphonic",), ("drums", "polyphonic", "monophonic", "polyphonic"),
])
def test_decoder_heads_fit_each_track_kind(kinds: tuple[str, ...]) -> None:
    params = small_params(kinds=kinds)
    vae = make_vae(params)
    n_mono = sum(k == "monophonic" for k in kinds)
    mono, poly, silence, harmony, presence = vae.decode(torch.zeros(2, vae.latent_dim))
    assert mono.shape == (2, n_mono, 2, 16, 24 + 2)  # a categorical: pitches + hold + rest
    assert poly.shape == (2, len(kinds) - n_mono, 2, 16, 24, 2)  # Bernoulli onset + sustain per cell
    assert silence.shape == (2, len(kinds) - n_mono, 2)  # and one Bernoulli per bar: silent through it
    assert (vae.mono_head is None) == (n_mono == 0)
    assert (vae.poly_head is None) == (n_mono == len(kinds))
    assert vae.mono_tracks == [k for k, kind in enumerate(kinds) if kind == "monophonic"]
    out = vae.to_codes((mono, poly, silence, harmony, presence))
    assert out.shape == (2, len(kinds), 2, 16, 24) and out.dtype == torch.uint8
    for k in vae.mono_tracks:  # a monophonic track never sounds two pitches at once
        assert ((out[:, k] > 0).sum(-1) <= 1).all()
    assert vae.recon_nll((mono, poly, silence, harmony, presence), codes(2, params)).shape == (2,)


def test_an_unknown_track_kind_is_refused() -> None:
    params = small_params()
    with pytest.raises(ValueError, match="unknown track kind 'choir'"):
        MusicVAE(params.model, params.representation, ["monophonic", "choir"])


def test_default_params_shape() -> None:
    params = load_params(REPO / "params.yaml")
    vae = build_model(params)
    r = params.representation
    x = torch.zeros(1, 4, r.n_bars, r.steps_per_bar, r.n_pitches, dtype=torch.uint8)
    (mono, poly, silence, *_), _, _, _ = vae(x)
    assert mono.shape == (1, 4, 4, 16, 84 + 2) and poly.shape[1] == silence.shape[1] == 0
    assert vae.reconstruct(x).shape == x.shape


def test_loss_on_a_tiny_batch() -> None:
    params = small_params()
    vae = make_vae(params)
    x = codes(4, params)
    out_, mu, logvar, _ = vae(x, torch.zeros(4, 4))
    out = vae_loss(vae, out_, x, mu, logvar, beta=0.5, free_nats=0.0)
    assert set(out) == {"loss", "recon", "hold_pitch", "kl", "prior_fit", "kl_per_dim"}
    assert out["kl_per_dim"].shape == (4,)
    assert torch.isfinite(out["loss"]) and out["recon"] > 0 and out["kl"] >= 0
    assert out["loss"].item() == pytest.approx(out["recon"].item() + 0.5 * out["kl"].item(), rel=1e-5)
    assert out["recon"].item() == pytest.approx(vae.recon_nll(out_, x).mean().item(), rel=1e-6)
    # at initialisation: the categorical is near uniform over P+2 classes per mono step, the
    # Bernoulli heads start sparse (bias -4: ~0.02-0.1 nats per cell and plane)
    r = params.representation
    steps = r.n_bars * r.steps_per_bar
    assert 0.5 * torch.log(torch.tensor(26.0)).item() * steps < out["recon"].item() < 2 * (
        torch.log(torch.tensor(26.0)).item() * steps + 2 * steps * 24)
    out["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in vae.parameters())


def test_mono_head_is_one_normalised_categorical_over_onset_pitches_hold_and_rest() -> None:
    params = small_params(kinds=("monophonic",))
    vae = make_vae(params)
    mono, *_ = vae.decode(torch.randn(3, vae.latent_dim))
    assert mono.shape[-1] == 24 + 2
    assert torch.allclose(mono.exp().sum(-1), torch.ones(mono.shape[:-1]), atol=1e-5)


def test_hold_pitch_term_scores_the_sounding_pitch_at_held_steps_only() -> None:
    params = small_params(kinds=("monophonic",))
    vae = make_vae(params)
    x = torch.zeros((1, 1, 2, 16, 24), dtype=torch.uint8)
    x[0, 0, 0, 0, 5], x[0, 0, 0, 1:4, 5] = ONSET, SUSTAIN  # one note: an onset and 3 held steps
    out_, mu, logvar, _ = vae(x, torch.zeros(1, 4))
    pitch_logp = torch.log_softmax(out_[0][0, 0, 0, 1:4, :24], -1)[:, 5]
    terms = {w: vae_loss(vae, out_, x, mu, logvar, beta=0.0, free_nats=0.0, hold_pitch_weight=w)
             for w in (0.0, 2.0)}
    assert terms[0.0]["hold_pitch"].item() == pytest.approx(-pitch_logp.sum().item(), rel=1e-5)
    assert terms[0.0]["loss"].item() == pytest.approx(terms[0.0]["recon"].item(), rel=1e-6)
    assert terms[2.0]["loss"].item() == pytest.approx(
        terms[0.0]["recon"].item() + 2.0 * terms[0.0]["hold_pitch"].item(), rel=1e-5)


def test_free_nats_apply_to_the_total_kl_per_phrase() -> None:
    kl = torch.tensor([2.0, 0.3, 5.0])
    assert free_nats_kl(kl, 1.0).tolist() == pytest.approx([1.0, 0.0, 4.0])
    assert free_nats_kl(kl, 0.0).tolist() == pytest.approx(kl.tolist())


def test_free_nats_hinge_in_the_loss_and_kl_report() -> None:
    params = small_params()
    vae = make_vae(params)
    x = codes(2, params)
    mu = torch.zeros(2, 4, requires_grad=True)
    logvar = torch.zeros(2, 4)
    with torch.no_grad():
        mu[:, 0] = 2.0  # dim 0 carries 2 nats, the others none: 2 nats in total per phrase
    with torch.no_grad():
        out_ = vae.decode(mu)
    below = vae_loss(vae, out_, x, mu, logvar, beta=1.0, free_nats=3.0)
    assert below["kl_per_dim"].tolist() == pytest.approx([2.0, 0.0, 0.0, 0.0])
    assert below["kl"].item() == pytest.approx(2.0)  # the true KL is reported, no allowance
    assert below["loss"].item() == pytest.approx(below["recon"].item())  # within the allowance: free
    below["loss"].backward()
    assert mu.grad is None or mu.grad.abs().sum() == 0
    above = vae_loss(vae, out_, x, mu, logvar, beta=0.5, free_nats=0.5)
    assert above["loss"].item() == pytest.approx(above["recon"].item() + 0.5 * (2.0 - 0.5))
    above["loss"].backward()
    assert mu.grad[:, 0].abs().sum() > 0 and mu.grad[:, 1:].abs().sum() == 0
    assert active_units(above["kl_per_dim"]) == 1


@pytest.mark.slow
def test_recon_nll_prefers_the_truth_after_fitting_one_batch() -> None:
    params = small_params(kinds=("monophonic", "polyphonic"))
    vae = make_vae(params)
    x = note_phrases(4, params)
    wrong = note_phrases(4, params, seed=9)
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    for _ in range(40):
        out, mu, logvar, _ = vae(x, torch.zeros(4, 4))
        loss = vae_loss(vae, out, x, mu, logvar, beta=0.0, free_nats=0.0)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    vae.eval()
    with torch.no_grad():
        out = vae.decode(vae.encode(x)[0])
        truth, other = vae.recon_nll(out, x), vae.recon_nll(out, wrong)
    assert (truth < other).all(), (truth, other)


def test_sample_is_deterministic_per_seed_and_keeps_mode() -> None:
    params = small_params(kinds=("monophonic", "monophonic", "polyphonic"), dropout=0.3)
    vae = make_vae(params)
    vae.train()
    a, b, c = vae.sample(3, seed=1), vae.sample(3, seed=1), vae.sample(3, seed=2)
    assert a.shape == (3, 3, 2, 16, 24) and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert set(a.unique().tolist()) <= {0, 1, 2}
    assert vae.training


def test_sample_draws_from_the_decoder_and_cools_to_its_most_likely_codes() -> None:
    vae = chained_vae()
    z = torch.randn(4, vae.latent_dim, generator=torch.Generator().manual_seed(1))
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    with torch.no_grad():
        assert torch.equal(vae.draw_codes(z, 1e-6, gen()), vae.to_codes(vae.decode(z)))
        warm = [vae.draw_codes(z, 1.0, gen()), vae.draw_codes(z, 1.0, torch.Generator().manual_seed(9))]
    assert not torch.equal(warm[0], warm[1])  # same z, different draws
    with pytest.raises(ValueError, match="temperature must be > 0"):
        vae.draw_codes(z, 0.0, gen())


def chained_vae(kinds: tuple[str, ...] = ("monophonic", "polyphonic", "monophonic", "monophonic"),
                **model: object) -> MusicVAE:
    """A voice- and cell-chained model whose chains already do something (they start at zero,
    the independent model)."""
    params = small_params(kinds=kinds, **model)
    vae = make_vae(params).eval()
    tables = []
    if vae.chain is not None:
        tables += [t for t in (vae.chain.out, vae.chain.harmonic, vae.chain.melodic, vae.chain.parallel,
                               vae.chain.duration) if t is not None]  # a lone voice has no upper-voice tables
    if vae.cells is not None:
        tables += [vae.cells.gate.weight, vae.cells.gate.bias, vae.cells.duration, vae.cells.chord, vae.cells.harmony]
        if vae.cells.echo is not None and vae.cells.echo_gate is not None:
            tables += [vae.cells.echo, vae.cells.echo_gate.weight, vae.cells.echo_gate.bias]
        if vae.cells.count is not None:
            tables += [vae.cells.count]
    if vae.silence is not None:
        tables += [vae.silence.before]
    with torch.no_grad():
        for k, table in enumerate(tables):
            table.normal_(0.0, 1.0 if k == 0 else 0.1, generator=torch.Generator().manual_seed(3 + k))
    return vae


def test_teacher_forcing_gives_the_chains_own_factorisation() -> None:
    vae = chained_vae()
    x = note_phrases(3, small_params(kinds=vae.kinds))
    z = torch.randn(3, vae.latent_dim, generator=torch.Generator().manual_seed(2))
    truth = mono_classes(x[:, vae.mono_tracks])
    with torch.no_grad():
        (logp, *_), picked, _ = vae.decode_in_order(z, lambda lp, v, t: truth[:, v].flatten(1)[:, t],
                                                      lambda lg, t, q: lg > 0, lambda lg, b: lg > 0)  # in order
        forced, *_ = vae.decode(z, x)  # all voices at once, the upper ones the truth
    assert torch.equal(picked, truth)
    torch.testing.assert_close(forced, logp)


@pytest.mark.parametrize("bar_echo", [False, True])
def test_teacher_forcing_gives_the_cells_own_factorisation(bar_echo: bool) -> None:
    vae = chained_vae(bar_echo=bar_echo)
    x = note_phrases(3, small_params(kinds=vae.kinds))
    z = torch.randn(3, vae.latent_dim, generator=torch.Generator().manual_seed(2))
    x[:, vae.poly_tracks[0], 1] = 0  # a silent bar: its cells are off by the hurdle, their logits moot
    truth = planes(x[:, vae.poly_tracks], stacked=True).bool()  # [N, Tp, B, S, P, 2]
    silent = silent_bars(truth)
    with torch.no_grad():
        (_, logits, silence, *_), _, cells = vae.decode_in_order(z, lambda lp, v, t: lp.argmax(-1),
                                                              lambda lg, t, q: truth.flatten(2, 3)[:, :, t, q],
                                                              lambda lg, b: silent[:, :, b])
        _, forced, forced_silence, *_ = vae.decode(z, x)  # every step at once, the cells before each the truth
    assert torch.equal(cells, truth) and silent.any()
    torch.testing.assert_close(forced_silence, silence)
    sounding = ~silent[..., None, None, None].expand_as(forced)
    torch.testing.assert_close(forced[sounding], logits[sounding])


def teacher_forced_before_and_after_a_change(vae: MusicVAE, output: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Output `output` of `decode(0, x)` for two phrases that differ only in bar 1 from step 8 on."""
    x = note_phrases(2, small_params(kinds=vae.kinds))
    later = x.clone()
    later[:, :, 1, 8:] = note_phrases(2, small_params(kinds=vae.kinds), seed=6)[:, :, 1, 8:]
    z = torch.zeros(2, vae.latent_dim)
    with torch.no_grad():
        return vae.decode(z, x)[output], vae.decode(z, later)[output]


def test_a_cell_sees_the_cells_before_it_and_nothing_later() -> None:
    vae = chained_vae(("polyphonic", "drums"))
    a, b = teacher_forced_before_and_after_a_change(vae, 1)
    assert torch.equal(a[:, :, 0], b[:, :, 0]) and torch.equal(a[:, :, 1, :8], b[:, :, 1, :8])
    assert not torch.allclose(a[:, :, 1, 9:], b[:, :, 1, 9:])  # each step sees the one before


@pytest.mark.parametrize("bar_echo", [False, True])
def test_a_cell_sees_the_same_step_of_the_bar_before_only_with_the_echo(bar_echo: bool) -> None:
    vae = chained_vae(("polyphonic", "drums"), bar_echo=bar_echo)
    x = note_phrases(2, small_params(kinds=vae.kinds))
    x[:, :, 0, 6] = 0  # a rest after the change: a note held into step 6 would be struck there instead
    struck = x.clone()
    struck[:, :, 0, 5] = 0
    struck[:, :, 0, 5, 7] = 2  # bar 0, step 5: one struck note in place of what sounded
    z = torch.zeros(2, vae.latent_dim)
    with torch.no_grad():
        a, b = vae.decode(z, x)[1], vae.decode(z, struck)[1]
    others = [t for t in range(16) if t != 5]
    assert torch.equal(a[:, :, 1, others], b[:, :, 1, others])  # bar 1: no other step sees bar 0's step 5
    assert torch.equal(a[:, :, 1, 5], b[:, :, 1, 5]) != bar_echo  # its own step 5 does, with the echo


def test_with_the_echo_a_cell_sees_how_many_notes_its_track_sounded_a_bar_before_not_which() -> None:
    vae = chained_vae(("polyphonic", "drums"), bar_echo=True)
    assert vae.cells is not None and vae.cells.echo is not None and vae.cells.echo_gate is not None
    with torch.no_grad():
        for table in (vae.cells.echo, vae.cells.echo_gate.weight, vae.cells.echo_gate.bias):
            table.zero_()  # the same-cell echo off: only the count table reads the bar before
    x = note_phrases(2, small_params(kinds=vae.kinds))
    x[:, :, 0, 4:7] = 0  # nothing held into or out of bar 0's step 5
    two, other_two, three = x.clone(), x.clone(), x.clone()
    two[:, :, 0, 5, [3, 7]] = 2
    other_two[:, :, 0, 5, [4, 9]] = 2
    three[:, :, 0, 5, [3, 7, 11]] = 2
    z = torch.zeros(2, vae.latent_dim)
    with torch.no_grad():
        a, b, c = (vae.decode(z, v)[1][:, :, 1, 5] for v in (two, other_two, three))
    assert torch.equal(a, b)  # bar 1, step 5: two notes a bar before, whichever they were
    assert not torch.allclose(a, c)  # three notes there: another count


def test_a_cell_sees_the_cells_below_it_at_its_own_step_and_none_above() -> None:
    vae = chained_vae(("polyphonic", "drums"))
    x = note_phrases(2, small_params(kinds=vae.kinds))
    above = x.clone()
    above[:, :, 0, 5, 12:] = 0  # one step's cells from pitch 12 up silenced, both tracks
    above[:, :, 0, 5, 20] = 2   # and one note struck there
    z = torch.zeros(2, vae.latent_dim)
    with torch.no_grad():
        a, b = vae.decode(z, x)[1], vae.decode(z, above)[1]
    assert torch.equal(a[:, :, 0, 5, :13], b[:, :, 0, 5, :13])  # below the change (and at its lowest pitch)
    assert not torch.allclose(a[:, :, 0, 5, 13:], b[:, :, 0, 5, 13:])  # above it, at the same step


def test_a_bar_decided_silent_has_no_notes_in_decoding_or_drawing() -> None:
    vae = chained_vae(("polyphonic", "drums"))
    z = torch.randn(3, vae.latent_dim, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        vae.poly_head.bias.fill_(2.0)  # every cell likely on ...
        vae.silence.head.bias.copy_(torch.tensor([20.0, -20.0]))  # ... but track 0 silent, track 1 not
        for phrase in (vae.to_codes(vae.decode(z)), vae.draw_codes(z, 1.0, torch.Generator().manual_seed(0))):
            assert not phrase[:, 0].any() and phrase[:, 1].any()


def test_a_silent_bar_costs_its_hurdle_alone_and_the_next_bar_knows_it() -> None:
    vae = chained_vae(("polyphonic", "drums"))
    x = note_phrases(2, small_params(kinds=vae.kinds))
    x[:, 0, 0] = 0  # bar 0 of track 0 silent
    z = torch.zeros(2, vae.latent_dim)
    with torch.no_grad():
        mono, poly, silence, harmony, presence = vae.decode(z, x)
        moved = poly.clone()
        moved[:, 0, 0] += 3.0  # the cells of the silent bar: no say in its likelihood
        assert torch.equal(vae.recon_nll((mono, poly, silence, harmony, presence), x), vae.recon_nll((mono, moved, silence, harmony, presence), x))
        moved[:, 1, 0] += 3.0  # a sounding bar's cells do
        assert not torch.equal(vae.recon_nll((mono, poly, silence, harmony, presence), x), vae.recon_nll((mono, moved, silence, harmony, presence), x))
        sounding = x.clone()
        sounding[:, 0, 0, 0, 3] = 2
        assert not torch.allclose(vae.decode(z, sounding)[2][:, 0, 1], silence[:, 0, 1])  # bar 1 sees bar 0


def test_a_cell_sees_the_pitch_classes_sounded_earlier_in_its_bar_and_none_of_the_bar_before() -> None:
    vae = chained_vae(("polyphonic", "drums"))
    params = small_params(kinds=vae.kinds)
    x = torch.zeros(2, *vae.shape, dtype=torch.uint8)
    struck = x.clone()
    struck[:, 0, 0, 2, 5] = 2  # one short note early in bar 0
    z = torch.zeros(2, vae.latent_dim)
    assert params.representation.n_bars == 2
    with torch.no_grad():
        a, b = vae.decode(z, x)[1], vae.decode(z, struck)[1]
    assert not torch.allclose(a[:, :, 0, 10, 20], b[:, :, 0, 10, 20])  # later in bar 0, another pitch
    assert torch.equal(a[:, :, 1], b[:, :, 1])  # bar 1 starts its own harmony


def harmony_model(seed: int = 0) -> tuple[MusicVAE, Params]:
    params = small_params(bars=2, kinds=("drums", "polyphonic", "monophonic"), bar_harmony=True)
    return make_vae(params, seed).eval(), params


def test_bar_pitch_sets_are_the_classes_sounding_in_each_bar_of_the_pitched_tracks() -> None:
    params = small_params(bars=2, pitches=24, kinds=("drums", "polyphonic", "monophonic"))
    x = torch.zeros(1, 3, 2, 16, 24, dtype=torch.uint8)
    x[0, 0, 0, 0, 5] = ONSET     # a drum: no pitch class
    x[0, 1, 0, 3, 14] = ONSET    # piano, bar 0: class 2
    x[0, 2, 1, 0, 7] = SUSTAIN   # bass, bar 1: class 7 (held in from before)
    sets = bar_pitch_sets(x, [1, 2])
    assert sets.shape == (1, 2, 12) and params.representation.n_bars == 2
    assert sets[0, 0].nonzero().flatten().tolist() == [2] and sets[0, 1].nonzero().flatten().tolist() == [7]


def test_with_bar_harmony_every_pitched_note_lies_in_its_bars_set() -> None:
    vae, params = harmony_model()
    with torch.no_grad():
        torch.nn.init.normal_(vae.bar_harmony.head[-1].weight, std=1.0)  # sets of a few classes
        vae.poly_head.bias.fill_(2.0)  # cells on wherever the set lets them
        out = vae.decode(torch.randn(16, vae.latent_dim, generator=torch.Generator().manual_seed(1)))
        drawn = vae.draw_codes(torch.randn(16, vae.latent_dim), 1.0, torch.Generator().manual_seed(2))
    sounding = bar_pitch_sets(vae.to_codes(out), vae.pitched).bool()
    chosen = out[3] > 0
    assert sounding.any() and not (sounding & ~chosen).any()
    assert (chosen.sum(-1) < 12).all()  # the sets exclude something: the check above bites
    assert bar_pitch_sets(drawn, vae.pitched).sum().item() > 0


def test_teacher_forced_bar_harmony_is_its_own_in_order_factorisation() -> None:
    vae, params = harmony_model()
    x = codes(3, params, density=0.1)
    z = torch.randn(3, vae.latent_dim, generator=torch.Generator().manual_seed(3))
    truth = bar_pitch_sets(x, vae.pitched).bool()
    with torch.no_grad():
        feats, _ = vae._features(z)
        forced = vae.decode(z, x)[3]
        order = iter([(b, c) for b in range(2) for c in range(12)])  # bar by bar, class by class upwards
        in_order, picked = vae._harmony_in_order(feats, lambda lg, bar: truth[:, bar, next(order)[1]])
    assert torch.equal(picked, truth) and forced.shape == (3, 2, 12)
    assert torch.allclose(forced, in_order, atol=1e-5)


def presence_model(seed: int = 0) -> tuple[MusicVAE, Params]:
    params = small_params(bars=2, kinds=("drums", "polyphonic", "monophonic"), track_presence=True)
    vae = make_vae(params, seed).eval()
    with torch.no_grad():
        vae.presence.with_before.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(seed))
    return vae, params


def test_tracks_playing_are_the_tracks_sounding_anywhere_in_the_phrase() -> None:
    x = torch.zeros(2, 3, 2, 16, 24, dtype=torch.uint8)
    x[0, 1, 1, 15, 3] = SUSTAIN  # one held cell in the last step is enough
    x[1, 0, 0, 0, 0] = ONSET
    assert tracks_playing(x).tolist() == [[False, True, False], [True, False, False]]


def test_a_track_decided_not_to_play_is_silent_in_every_bar_decoded_and_drawn() -> None:
    vae, params = presence_model()
    z = torch.randn(4, vae.latent_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        vae.poly_head.bias.fill_(2.0)  # every cell likely on ...
        vae.mono_head.bias[:3].copy_(torch.tensor([4.0, 0.0, -4.0]))  # ... and the bass busy ...
        vae.presence.head[-1].bias.copy_(torch.tensor([-40.0, 40.0, -40.0]))  # ... but drums and bass out
        for phrase in (vae.to_codes(vae.decode(z)), vae.draw_codes(z, 1.0, torch.Generator().manual_seed(0))):
            assert not phrase[:, 0].any() and not phrase[:, 2].any() and phrase[:, 1].any()


def test_arrangement_rates_are_each_set_of_tracks_share_of_the_phrases() -> None:
    vae, _ = presence_model()
    playing = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 1, 1], [1, 1, 0]], dtype=torch.bool)
    vae.presence.fit_rates(playing)
    assert vae.presence.fitted and vae.presence.rates.shape == (8,)
    assert vae.presence.rates[0b011].item() == 0.75 and vae.presence.rates[0b110].item() == 0.25


def test_generation_draws_arrangements_at_the_fitted_rates() -> None:
    vae, _ = presence_model()
    with torch.no_grad():
        vae.presence.with_before.zero_()
        vae.presence.head[-1].weight.zero_()
        vae.presence.head[-1].bias.fill_(1.0)  # the model alone: every track plays in ~73 % of phrases
        vae.silence.head.bias.fill_(-40.0)
        vae.poly_head.bias.fill_(2.0)  # a playing polyphonic track sounds
    unfitted = tracks_playing(vae.sample(64, seed=1))
    vae.presence.fit_rates(torch.tensor([[True, False, True], [True, True, True]]))  # the piano in half
    fitted = tracks_playing(vae.sample(64, seed=1))
    assert unfitted[:, 1].float().mean().item() > 0.6
    assert fitted[:, 0].all() and 0.3 < fitted[:, 1].float().mean().item() < 0.7


def test_which_tracks_play_is_drawn_at_the_models_own_rate_at_any_temperature() -> None:
    """A sampling temperature sharpens notes, not the arrangement: cooled, a track that plays
    with probability 0.7 would play in every phrase."""
    vae, params = presence_model()
    with torch.no_grad():
        vae.presence.with_before.zero_()
        vae.presence.head[-1].weight.zero_()
        vae.presence.head[-1].bias.copy_(torch.tensor([40.0, 0.8473, 40.0]))  # the piano plays with p = 0.7
        vae.silence.head.weight.zero_()
        vae.silence.head.bias.fill_(-40.0)  # and then in every bar,
        vae.poly_head.bias.fill_(2.0)  # with notes in it
        drawn = vae.draw_codes(torch.randn(400, vae.latent_dim), 0.1, torch.Generator().manual_seed(4))
    assert 0.63 < tracks_playing(drawn)[:, 1].float().mean().item() < 0.77


def test_teacher_forced_track_presence_is_its_own_in_order_factorisation() -> None:
    vae, params = presence_model()
    x = note_phrases(4, params)
    x[0, 0] = 0
    x[1, 2] = 0
    x[2, :2] = 0
    truth = tracks_playing(x)
    z = torch.randn(4, vae.latent_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        forced = vae.decode(z, x)[4]
        order = iter(range(3))  # track by track, in order
        in_order, absent = vae._presence_in_order(z, lambda lg, b: truth[:, next(order)])
    assert torch.equal(absent, ~truth) and forced.shape == (4, 3)
    assert torch.allclose(forced, in_order, atol=1e-5)


def test_a_tracks_presence_sees_the_tracks_before_it_and_none_after() -> None:
    vae, params = presence_model()
    x = note_phrases(1, params)
    without_bass, without_drums = x.clone(), x.clone()
    without_bass[:, 2], without_drums[:, 0] = 0, 0
    z = torch.zeros(1, vae.latent_dim)
    with torch.no_grad():
        full, no_bass, no_drums = (vae.decode(z, v)[4] for v in (x, without_bass, without_drums))
    assert torch.equal(full[:, :2], no_bass[:, :2])  # the bass comes last: no track before it sees it
    assert not torch.allclose(full[:, 1:], no_drums[:, 1:])  # piano and bass see the drums


def test_an_absent_track_costs_its_presence_term_alone() -> None:
    """Its silent bars and rests are given by the decision: the likelihood of a phrase without a
    track is the presence term plus the other tracks' terms, whatever the heads say about it."""
    vae, params = presence_model()
    x = note_phrases(2, params)
    x[:, 1] = 0  # no piano
    z = torch.randn(2, vae.latent_dim, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        before = vae.recon_nll(vae.decode(z, x), x)
        vae.silence.head.weight[1].normal_(0.0, 5.0)  # the piano's bar silence head
        vae.silence.before.data[1].normal_(0.0, 5.0)
        after = vae.recon_nll(vae.decode(z, x), x)
        x[:, 1, 0, 0, 5] = ONSET  # with a piano note, the same change has a say
        with_piano = vae.recon_nll(vae.decode(z, x), x)
        vae.silence.head.weight[1].normal_(0.0, 5.0)
    assert torch.allclose(before, after, atol=1e-3)
    assert not torch.allclose(with_piano, vae.recon_nll(vae.decode(z, x), x), atol=1e-3)


def test_reconstruction_decides_the_cells_in_order() -> None:
    """Each decided cell is the most likely given the cells decided before it: deciding again
    with those cells teacher-forced changes nothing; without the cell chain the decision differs."""
    vae = chained_vae(("polyphonic", "drums"))
    z = torch.randn(4, vae.latent_dim, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        vae.poly_head.bias.zero_()  # cells near even odds, so the cells before decide many of them
        decided = vae.to_codes(vae.decode(z))
        assert decided.any()
        assert torch.equal(vae.to_codes(vae.decode(z, decided)), decided)
        vae.cells = None
        assert not torch.equal(vae.to_codes(vae.decode(z)), decided)


def test_a_drawn_voice_depends_on_the_voices_above_it() -> None:
    vae = chained_vae(("monophonic",) * 3)
    x = note_phrases(2, small_params(kinds=vae.kinds))
    new = note_phrases(2, small_params(kinds=vae.kinds), seed=5)
    soprano, alto = x.clone(), x.clone()
    soprano[:, 0], alto[:, 1] = new[:, 0], new[:, 1]
    z = torch.zeros(2, vae.latent_dim)
    with torch.no_grad():
        a, b, c = (vae.decode(z, v)[0] for v in (x, soprano, alto))
    assert torch.equal(a[:, 0], c[:, 0])  # the top voice sees no other (only its own past)
    assert not torch.allclose(a[:, 1], b[:, 1]) and not torch.allclose(a[:, 2], c[:, 2])


def test_a_voice_sees_every_voice_one_step_back_and_nothing_later() -> None:
    vae = chained_vae(("monophonic",) * 3)
    a, b = teacher_forced_before_and_after_a_change(vae, 0)
    assert torch.equal(a[:, :, 0], b[:, :, 0]) and torch.equal(a[:, :, 1, :8], b[:, :, 1, :8])
    assert not torch.allclose(a[:, 0, 1, 9:], b[:, 0, 1, 9:])  # the top voice sees the step before


def test_voice_leading_terms_can_forbid_parallel_fifths_and_octaves() -> None:
    """The pair table indexed by (interval before, interval after, similar motion) is enough to
    rule out what `parallel_motion_rate` counts, in drawn phrases."""
    vae = chained_vae(("monophonic",) * 3)
    z = torch.randn(64, vae.latent_dim, generator=torch.Generator().manual_seed(6))
    names = ["s", "a", "b"]

    def parallel_rate() -> float:
        with torch.no_grad():
            x = vae.draw_codes(z, 1.0, torch.Generator().manual_seed(0)).numpy()
        stats = voice_per_phrase(x, names, np.array([[0, 23]] * 3))
        return float(np.nanmean([np.nanmean(v) for k, v in stats.items() if k.startswith("parallel")]))

    assert parallel_rate() > 0.05  # random voices move in parallel perfect intervals often
    perfect = torch.zeros(12, 12, 2, dtype=torch.bool)
    perfect[0, 0, 1] = perfect[7, 7, 1] = True  # upper - lower intervals, mod 12, both sides
    with torch.no_grad():
        vae.chain.parallel[:, :, perfect.flatten()] = -1e4
    assert parallel_rate() == 0.0


def test_each_bars_own_z_reaches_that_bar_only() -> None:
    params = small_params(bars=3, kinds=("monophonic",) * 2, bar_latent_dim=2)
    vae = make_vae(params).eval()
    assert vae.latent_dim == 4 + 3 * 2  # the phrase's z, then each bar's
    x = note_phrases(2, params)
    mu, _ = vae.encode(x)
    assert mu.shape == (2, 10)
    moved = mu.clone()
    moved[:, 4 + 2:4 + 4] += 1.0  # bar 1's z
    with torch.no_grad():
        a, b = vae.decode(mu, x)[0], vae.decode(moved, x)[0]  # teacher-forced: the same voices
    assert torch.equal(a[:, :, 0], b[:, :, 0]) and torch.equal(a[:, :, 2], b[:, :, 2])
    assert not torch.allclose(a[:, :, 1], b[:, :, 1])


def learned_bar_prior(seed: int = 0) -> MusicVAE:
    """A tiny model with 3 bars of 2-d latents under a learned bar prior moved off its N(0, I) start."""
    vae = make_vae(small_params(bars=3, kinds=("monophonic", "polyphonic"), bar_latent_dim=2,
                                bar_prior="learned"), seed).eval()
    with torch.no_grad():
        torch.nn.init.normal_(vae.bar_prior.out.weight, std=0.5)
        torch.nn.init.normal_(vae.bar_prior.out.bias, std=0.5)
    return vae


def test_a_learned_bar_prior_starts_as_the_standard_normal() -> None:
    params = small_params(bars=3, kinds=("monophonic",), bar_latent_dim=2, bar_prior="learned")
    vae, normal = make_vae(params), make_vae(small_params(bars=3, kinds=("monophonic",), bar_latent_dim=2))
    x, eps = note_phrases(2, params), torch.randn(2, vae.latent_dim)
    normal.load_state_dict({k: v for k, v in vae.state_dict().items() if not k.startswith(("bar_prior.", "prior."))},
                           strict=False)  # the mixtures differ in size: generation's, not training's
    with torch.no_grad():
        (_, mu, logvar, _), (_, mu0, logvar0, _) = vae(x, eps), normal(x, eps)
    assert torch.allclose(mu, mu0, atol=1e-6) and torch.allclose(logvar, logvar0, atol=1e-6)


def test_the_kl_under_a_learned_bar_prior_is_the_kl_against_its_gaussians() -> None:
    vae = learned_bar_prior()
    x = note_phrases(3, small_params(bars=3, kinds=("monophonic", "polyphonic"), bar_latent_dim=2))
    eps = torch.randn(3, vae.latent_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        mu, logvar = vae.encode(x)
        z = mu + torch.exp(0.5 * logvar) * eps
        p_mu, p_logvar = vae.bar_prior(z)
        _, rel_mu, rel_logvar, fit = vae(x, eps)
    d = vae.phrase_dim
    q_var, p_var = logvar[:, d:].exp(), p_logvar.exp()
    closed = 0.5 * (p_logvar - logvar[:, d:] + (q_var + (mu[:, d:] - p_mu) ** 2) / p_var - 1)
    got = vae_loss(vae, vae(x, eps)[0], x, rel_mu, rel_logvar, beta=1.0, free_nats=0.0)["kl_per_dim"]
    assert torch.allclose(got[d:], closed.mean(0), atol=1e-5)
    assert torch.allclose(fit, closed.sum(1), atol=1e-5)  # the fit: the same KL, q held fixed
    assert torch.allclose(rel_mu[:, :d], mu[:, :d]) and torch.allclose(rel_logvar[:, :d], logvar[:, :d])


def test_the_bar_prior_learns_where_the_free_nats_silence_the_kl_and_moves_no_posterior() -> None:
    vae = learned_bar_prior()
    x = note_phrases(3, small_params(bars=3, kinds=("monophonic", "polyphonic"), bar_latent_dim=2))
    out, mu, logvar, fit = vae(x, torch.randn(3, vae.latent_dim, generator=torch.Generator().manual_seed(1)))
    loss = vae_loss(vae, out, x, mu, logvar, beta=1.0, free_nats=1e6, prior_fit=fit)
    assert loss["prior_fit"] > 0
    prior_grad, = torch.autograd.grad(loss["loss"], [vae.bar_prior.out.weight], retain_graph=True)
    assert prior_grad.abs().sum() > 0
    encoder_grad = torch.autograd.grad(fit.sum(), [vae.to_bar_stats.weight], allow_unused=True)[0]
    assert encoder_grad is None


def test_the_bar_prior_of_a_bar_depends_on_the_bars_before_it_and_none_after() -> None:
    vae = learned_bar_prior()
    z = torch.randn(2, vae.latent_dim, generator=torch.Generator().manual_seed(2))
    moved = z.clone()
    moved[:, vae.phrase_dim + 2:vae.phrase_dim + 4] += 1.0  # bar 1's z
    with torch.no_grad():
        a, b = vae.bar_prior(z)[0].view(2, 3, 2), vae.bar_prior(moved)[0].view(2, 3, 2)
    assert torch.equal(a[:, :2], b[:, :2]) and not torch.allclose(a[:, 2], b[:, 2])


def test_generation_fits_the_mixture_to_the_phrase_z_and_draws_the_bars_from_the_bar_prior() -> None:
    vae = learned_bar_prior()
    assert vae.prior.dim == vae.phrase_dim
    z = vae.draw_z(64, torch.Generator().manual_seed(3))
    again = vae.draw_z(64, torch.Generator().manual_seed(3))
    assert z.shape == (64, vae.latent_dim) and torch.equal(z, again)
    with torch.no_grad():  # bar 0 given the phrase z: the prior's mean, its spread
        p_mu, p_logvar = vae.bar_prior(z)
    d = vae.phrase_dim
    standardised = (z[:, d:] - p_mu) * torch.exp(-0.5 * p_logvar)
    assert standardised.std().item() == pytest.approx(1.0, abs=0.15)
    assert torch.equal(vae.sample(4, seed=5), vae.sample(4, seed=5))


def test_a_lone_monophonic_track_is_chained_on_its_own_step_before() -> None:
    """LPD-5's bass: no voices above it, but its melodic interval and note length still follow
    the step before (drawn independently given z, notes break and pitches wander)."""
    vae = chained_vae(("drums", "polyphonic", "monophonic"))
    assert vae.chain is not None and vae.chain.voices == 1
    a, b = teacher_forced_before_and_after_a_change(vae, 0)
    assert torch.equal(a[:, :, 1, :8], b[:, :, 1, :8])
    assert not torch.allclose(a[:, :, 1, 9:], b[:, :, 1, 9:])


def test_an_independent_model_has_no_chain() -> None:
    params = load_params(REPO / "params.yaml", {"model.voice_chain": False})
    assert build_model(params).chain is None


def test_reconstruction_decides_the_voices_in_order() -> None:
    """Each decided voice is the most likely given the voices decided above it: deciding again
    with those voices teacher-forced changes nothing."""
    vae = chained_vae()
    z = torch.randn(4, vae.latent_dim, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        decided = vae.to_codes(vae.decode(z))
        assert torch.equal(vae.to_codes(vae.decode(z, decided)), decided)
        vae.chain = None  # the same network without the chain decides otherwise
        assert not torch.equal(vae.to_codes(vae.decode(z)), decided)


def test_interpolate_ends_at_the_two_phrases() -> None:
    params = small_params()
    vae = make_vae(params).eval()
    x = codes(2, params, seed=3)
    path = vae.interpolate(x[0], x[1], steps=5)
    assert path.shape == (5, 2, 2, 16, 24) and path.dtype == torch.uint8
    with torch.no_grad():
        ends = vae.to_codes(vae.decode(vae.encode(x)[0]))
    assert torch.equal(path[0], ends[0]) and torch.equal(path[-1], ends[1])
    assert torch.equal(vae.reconstruct(x), ends)
    with pytest.raises(ValueError):
        vae.interpolate(x[0], x[1], steps=1)


def test_save_and_load_round_trip(tmp_path) -> None:
    params = small_params(7, 13, kinds=("drums", "monophonic"))
    vae = make_vae(params)
    save_model(vae, tmp_path, params)
    assert {p.name for p in tmp_path.iterdir()} == {"model.pt", "model.json"}
    loaded = load_model(tmp_path)
    assert not loaded.training
    assert loaded.meta["format_version"] == FORMAT_VERSION == 16
    assert loaded.meta["params_digest"] == params.digest()
    assert [(t["name"], t["kind"]) for t in loaded.meta["tracks"]] == [("t0", "drums"), ("t1", "monophonic")]
    assert loaded.kinds == ("drums", "monophonic")
    assert loaded.meta["representation"]["n_pitches"] == 13
    assert loaded.meta["model"]["latent_dim"] == 4
    x = codes(2, params)
    vae.eval()
    for a, b in zip(loaded.decode(loaded.encode(x)[0]), vae.decode(vae.encode(x)[0]), strict=True):
        torch.testing.assert_close(a, b)
    assert torch.equal(loaded.sample(2, 9), vae.sample(2, 9))


def note_phrases(n: int, params: Params, seed: int = 1) -> torch.Tensor:
    """Four notes per track and bar at random pitches (some repeated: separate onsets): phrase-like
    codes, not white noise."""
    r = params.representation
    t, b, s, p = len(params.tracks), r.n_bars, r.steps_per_bar, r.n_pitches
    g = torch.Generator().manual_seed(seed)
    pitches = torch.randint(0, p, (n, t, b, 4), generator=g)
    x = torch.zeros(n, t, b, s, p, dtype=torch.uint8)
    for k in range(4):
        note = torch.nn.functional.one_hot(pitches[..., k], p).to(torch.uint8)
        x[..., k * s // 4:(k + 1) * s // 4, :] = note.unsqueeze(-2) * SUSTAIN
        x[..., k * s // 4, :] = note * ONSET
    return x


@pytest.mark.slow
def test_overfits_eight_phrases() -> None:
    params = small_params(step_embedding=64, encoder_hidden=64, conductor_hidden=64, decoder_hidden=64,
                          latent_dim=8)
    vae = make_vae(params)
    x = note_phrases(8, params)
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    first = None
    for _ in range(300):
        out, mu, logvar, _ = vae(x)
        loss = vae_loss(vae, out, x, mu, logvar, beta=0.01, free_nats=0.0)
        opt.zero_grad()
        loss["loss"].backward()
        opt.step()
        first = first if first is not None else loss["recon"].item()
    vae.eval()
    with torch.no_grad():
        out = vae.decode(vae.encode(x)[0])
    recon = vae.recon_nll(out, x).mean().item()
    assert recon < 0.02 * first, (recon, first)
    assert note_prf(vae.to_codes(out).numpy(), x.numpy())["f1"] > 0.98


def test_encoder_tells_sparse_phrases_apart_at_initialisation() -> None:
    """Piano rolls are ~1 % ones; the encoder must not map them all to one mu (posterior
    collapse before training starts). Default sizes, a 4-voice chorale-like density."""
    params = load_params(REPO / "params.yaml")
    vae = make_vae(params).eval()
    x = codes(32, params, density=0.01)
    with torch.no_grad():
        mu, _ = vae.encode(x)
    assert mu.std(0).mean().item() > 0.01


@pytest.mark.parametrize("kinds", [("monophonic",) * 4, ("polyphonic", "drums")])
def test_decoder_output_depends_on_z_at_initialisation(kinds: tuple[str, ...]) -> None:
    """Without norms in the bar decoder the logits moved by ~3e-4 across z ~ N(0, I) at init,
    so gradients into z were as small and training stalled on the data's marginal."""
    params = load_params(REPO / "params.yaml", {"tracks": tracks(*kinds)})
    vae = make_vae(params).eval()
    z = torch.randn(32, vae.latent_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = [t for t in vae.decode(z) if t.numel()]
    assert logits and all(t.std(0).mean().item() > 0.01 for t in logits)


def test_a_model_of_another_format_is_refused_with_the_reason(tmp_path) -> None:
    params = small_params()
    save_model(make_vae(params), tmp_path, params)
    meta = tmp_path / "model.json"
    meta.write_text(meta.read_text().replace(f'"format_version": {FORMAT_VERSION}', '"format_version": 4'))
    with pytest.raises(ValueError, match=r"model\.json: model format 4, .* retrain"):
        load_model(tmp_path)


def test_loading_a_missing_folder_names_it(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path / 'nowhere'}/model\.json: no model here"):
        load_model(tmp_path / "nowhere")


def test_loading_weights_that_do_not_match_model_json_names_the_folder(tmp_path) -> None:
    params = small_params()
    save_model(make_vae(params), tmp_path, params)
    meta_path = tmp_path / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["model"]["latent_dim"] = 8  # the weights were trained with 4
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=rf"{tmp_path}: model.json does not match model.pt"):
        load_model(tmp_path)


def test_loading_a_model_json_without_weights_says_so(tmp_path) -> None:
    params = small_params()
    save_model(make_vae(params), tmp_path, params)
    (tmp_path / "model.pt").unlink()
    with pytest.raises(FileNotFoundError, match=r"model\.pt: no weights beside model\.json"):
        load_model(tmp_path)


def test_an_unreadable_model_json_is_named(tmp_path) -> None:
    params = small_params()
    save_model(make_vae(params), tmp_path, params)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"model\.json: unreadable model meta"):
        load_model(tmp_path)


def test_residual_block_is_a_dilated_kernel_3_convolution() -> None:
    """ResidualConv's matmul over three taps computes what nn.Conv1d(dilation=d) would."""
    torch.manual_seed(0)
    block = ResidualConv(8, 2)
    conv = torch.nn.Conv1d(8, 8, 3, padding=2, dilation=2)
    with torch.no_grad():
        conv.weight.copy_(block.taps.weight.view(8, 3, 8).permute(0, 2, 1))
        conv.bias.copy_(block.taps.bias)
    x = torch.randn(5, 16, 8)
    expected = x + torch.nn.functional.gelu(conv(block.norm(x).transpose(1, 2))).transpose(1, 2)
    assert torch.allclose(block(x), expected, atol=1e-6)
