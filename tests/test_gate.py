"""The gate: every number comes from params; a model that ignores z (collapsed) and one that
copies its training phrases are refused; the temperature is chosen against validation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from lpdvae.data.codes import ONSET, SUSTAIN
from lpdvae.data.shards import ShardWriter, write_index
from lpdvae.evaluation.baselines import BASELINES
from lpdvae.evaluation.copy_check import copy_check
from lpdvae.evaluation.gate import allowed_gap, bless, closest_temperature, statistic_reasons
from lpdvae.model.files import build_model, save_model
from lpdvae.model.loss import vae_loss
from lpdvae.params import EvaluateParams, Params, load_params
from lpdvae.steps.evaluate import evaluate
from tests.project import small_model_dotted

REPO = Path(__file__).resolve().parents[1]
EV = load_params(REPO / "params.yaml").evaluate


def ev(**changes: object) -> EvaluateParams:
    return dataclasses.replace(EV, **changes)


def good_metrics() -> dict[str, float]:
    """A candidate that passes the shipped gate with room to spare."""
    m = {"recon_note_f1": 0.6, "diversity.unique_fraction": 1.0,
         "copy.share_at_match": 0.0, "copy.val_share_at_match": 0.0, "copy.p_value": 1.0,
         "copy.median_best_match": 0.3, "copy.val_floor": 0.2}
    for name in BASELINES:
        m.update({f"baseline.{name}.recon_note_f1": 0.3, f"margin.{name}": 0.3, f"margin.{name}.lo": 0.2,
                  f"margin.{name}.hi": 0.4})
    for i, key in enumerate(EV.statistics):
        m[f"generated.{key}"] = m[f"reference.{key}"] = 0.5 + i
        m[f"gap.{key}"], m[f"gap.{key}.lo"], m[f"gap.{key}.hi"] = 0.0, -0.01, 0.01
    return m


def test_a_good_candidate_is_blessed_by_the_shipped_gate():
    assert bless(good_metrics(), EV) == []


def test_bless_names_each_failed_check():
    m = {**good_metrics(), "recon_note_f1": 0.1, "margin.copy.lo": 0.01,
         "generated.empty_bar_rate": 0.9, "reference.empty_bar_rate": 0.3, "gap.empty_bar_rate.lo": 0.5,
         "gap.empty_bar_rate.hi": 0.7, "diversity.unique_fraction": 0.5, "copy.share_at_match": 0.5,
         "copy.p_value": 0.001, "copy.median_best_match": 0.1}
    del m["generated.qualified_note_rate"]
    reasons = bless(m, ev(statistics=("empty_bar_rate", "qualified_note_rate")))
    assert reasons == [
        "recon_note_f1 0.100 < min_note_f1 0.15",
        "recon_note_f1 0.100 vs the copy baseline's 0.300: lower bound of the difference +0.010 not above "
        "min_margin 0.02",
        "empty_bar_rate: generated 0.900 vs data 0.300, difference interval [+0.500, +0.700] not within +-0.030",
        "qualified_note_rate: not measured on generated music (no notes)",
        "diversity: 50% of generated phrases are distinct (< 95%)",
        "copying: 50.0% of samples match a training phrase with note F1 >= 0.9, validation phrases 0.0% "
        "(binomial p = 0.001 < 0.01)",
        "fidelity: the samples' median best match with a training phrase 0.100 is below the validation "
        "phrases' 5% quantile 0.200",
    ]


def test_a_statistic_the_data_does_not_have_is_not_gated():
    m = good_metrics()
    del m["reference.tonal_distance"], m["generated.tonal_distance"]
    assert statistic_reasons(m, EV) == []


def test_a_statistic_constant_on_both_sides_is_reported_but_not_gated():
    m = {**good_metrics(), "generated.polyphonic_rate": 0.0, "reference.polyphonic_rate": 0.0,
         "gap.polyphonic_rate.lo": 0.0, "gap.polyphonic_rate.hi": 0.0, "constant.polyphonic_rate": 1.0}
    strict = ev(statistics=("polyphonic_rate",), stat_abs_floor=0.0, stat_rel_tolerance=0.0)
    assert statistic_reasons(m, strict) == []
    varying = {**m, "generated.polyphonic_rate": 0.01, "gap.polyphonic_rate.hi": 0.02, "constant.polyphonic_rate": 0.0}
    assert len(statistic_reasons(varying, strict)) == 1


def test_real_held_out_music_passes_however_far_its_split_sits_from_the_test_split():
    """The validation phrases posing as generated music: their gap to the test split is exactly
    the splits' own distance, which the allowed gap includes; 10 % beyond it still fails."""
    strict = ev(statistics=("n_pitch_classes_used",), stat_rel_tolerance=0.1, stat_abs_floor=0.0)
    base = {"reference.n_pitch_classes_used": 3.47, "split_gap.n_pitch_classes_used": 3.15 - 3.47,
            "constant.n_pitch_classes_used": 0.0}

    def posing(value: float, spread: float = 0.1) -> dict[str, float]:
        return {**base, "generated.n_pitch_classes_used": value,
                "gap.n_pitch_classes_used.lo": value - 3.47 - spread, "gap.n_pitch_classes_used.hi": value - 3.47 + spread}

    assert statistic_reasons(posing(3.15), strict) == []
    assert statistic_reasons({k: v for k, v in posing(3.15).items() if not k.startswith("split_gap")}, strict)
    assert statistic_reasons(posing(3.15 - 0.347), strict)  # 10 % of the data beyond the splits' distance


def test_the_relative_tolerance_applies_to_the_whole_interval():
    m = {**good_metrics(), "generated.n_pitch_classes_used": 3.2, "reference.n_pitch_classes_used": 3.0,
         "gap.n_pitch_classes_used.lo": 0.05, "gap.n_pitch_classes_used.hi": 0.35}
    assert bless(m, ev(stat_rel_tolerance=0.1)) == [
        "n_pitch_classes_used: generated 3.200 vs data 3.000, difference interval [+0.050, +0.350] not within +-0.300"]
    assert bless(m, ev(stat_rel_tolerance=0.2)) == []


def test_the_absolute_floor_for_near_zero_statistics_comes_from_params():
    m = {**good_metrics(), "generated.polyphonic_rate": 0.015, "reference.polyphonic_rate": 0.0,
         "gap.polyphonic_rate.lo": 0.01, "gap.polyphonic_rate.hi": 0.018}
    assert allowed_gap(0.0, ev(stat_abs_floor=0.02)) == 0.02
    assert bless(m, ev(stat_abs_floor=0.02)) == []
    assert len(bless(m, ev(stat_abs_floor=0.01))) == 1


def test_the_margin_over_every_baseline_comes_from_params():
    m = {**good_metrics(), "margin.repeat_bar.lo": 0.03}
    assert bless(m, ev(min_margin=0.02)) == []
    assert bless(m, ev(min_margin=0.05)) == [
        "recon_note_f1 0.600 vs the repeat_bar baseline's 0.300: lower bound of the difference +0.030 not "
        "above min_margin 0.05"]


def test_min_note_f1_unique_fraction_and_copy_limits_come_from_params():
    m = {**good_metrics(), "recon_note_f1": 0.3, "diversity.unique_fraction": 0.9, "copy.p_value": 0.005,
         "copy.share_at_match": 0.1}
    assert len(bless(m, EV)) == 2  # diversity and copying fail the shipped limits
    assert bless(m, ev(min_unique_fraction=0.9, copy_alpha=0.001)) == []
    assert bless(m, ev(min_unique_fraction=0.9, copy_alpha=0.001, min_note_f1=0.4)) == [
        "recon_note_f1 0.300 < min_note_f1 0.4"]


def test_the_temperature_is_the_one_closest_to_validation():
    val = {"empty_bar_rate": 0.2, "n_pitch_classes_used": 3.0}
    tries = {0.7: {"empty_bar_rate": 0.4, "n_pitch_classes_used": 3.0},
             0.85: {"empty_bar_rate": 0.21, "n_pitch_classes_used": 3.2},
             1.0: {"empty_bar_rate": 0.2}}  # no notes: a statistic missing is the worst
    assert closest_temperature(tries, val, EV) == 0.85
    assert closest_temperature({1.0: val, 0.5: val}, val, EV) == 1.0  # ties: the first listed


# -- real models

def small_params() -> Params:
    tracks = [{"name": n, "kind": "monophonic", "program": 52, "is_drum": False, "names": [n],
               "programs": []} for n in ("soprano", "bass")]
    return load_params(REPO / "params.yaml", {
        "tracks": tracks,
        "representation.n_bars": 2, "representation.n_pitches": 24, "representation.lowest_pitch": 48,
        **small_model_dotted(),
        "evaluate.n_samples": 1, "evaluate.n_generated": 16, "evaluate.temperatures": [1.0],
        "evaluate.render_audio": False,
    })


def quarter_notes(n: int, params: Params, seed: int, favourite: float = 0.5) -> np.ndarray:
    """Chorale-like codes: quarter notes, pitches drawn from a seventh chord, one of them
    the favourite, so the average-cell baseline gets some notes right and only a model that reads
    its input gets more."""
    r = params.representation
    rng = np.random.default_rng(seed)
    x = np.zeros((n, len(params.tracks), r.n_bars * r.steps_per_bar, r.n_pitches), dtype=np.uint8)
    q = r.beat_resolution
    for start in range(0, x.shape[2], q):
        for t in range(x.shape[1]):
            rest = (1 - favourite) / 3
            pitch = rng.choice([12 - 12 * t, 16 - 12 * t, 19 - 12 * t, 23 - 12 * t], size=n,
                               p=[favourite, rest, rest, rest])
            x[np.arange(n), t, start : start + q, :] = 0
            x[np.arange(n), t, start, pitch] = ONSET
            for s in range(1, q):
                x[np.arange(n), t, start + s, pitch] = SUSTAIN
    return x.reshape(n, len(params.tracks), r.n_bars, r.steps_per_bar, r.n_pitches)


def write_tensors(root: Path, splits: dict[str, np.ndarray], params: Params) -> Path:
    shape = splits["train"].shape[1:]
    writer = ShardWriter(root, shape, 64)
    for split, arr in splits.items():
        writer.add(split, arr)
    shards = writer.close()
    index = {k: {"shards": v, "n": sum(e["n"] for e in v)} for k, v in shards.items()}
    write_index(root, {"shape": list(shape), "tracks": params.track_names, "packed": True, "splits": index})
    return root


def collapse(vae: torch.nn.Module) -> None:
    """Cut z out of the decoder: zero (and freeze) every weight z passes through."""
    weights = [vae.z_to_conductor[0].weight, vae.conductor.weight_ih_l0]
    if hasattr(vae, "z_skip"):  # a skip connection from z into the step decoder
        weights.append(vae.z_skip.weight)
    for weight in weights:
        with torch.no_grad():
            weight.zero_()
        weight.requires_grad_(False)


@pytest.mark.slow
def test_a_collapsed_model_is_refused_by_the_gate(tmp_path):
    """A decoder that ignores z can only learn the data's average phrase, so even trained it
    reconstructs no better than the average-cell baseline and is refused for it."""
    torch.manual_seed(0)
    params = small_params()
    train, val, test = (quarter_notes(n, params, seed) for n, seed in ((64, 0), (16, 1), (16, 2)))
    vae = build_model(params)
    collapse(vae)
    z = torch.randn(2, 4)
    assert all(torch.equal(a[0], a[1]) for a in vae.decode(z))  # z changes nothing
    opt = torch.optim.Adam([p for p in vae.parameters() if p.requires_grad], lr=5e-3)
    x = torch.from_numpy(train)
    for _ in range(60):
        out, mu, logvar, _ = vae(x)
        loss = vae_loss(vae, out, x, mu, logvar, beta=0.0, free_nats=0.0)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    save_model(vae, tmp_path / "model", params)
    tensors = write_tensors(tmp_path / "tensors", {"train": train, "val": val, "test": test}, params)

    result = evaluate(tmp_path / "model", tensors, tmp_path / "eval", params)

    m = result.metrics
    assert m["baseline.average_cell.recon_note_f1"] > 0.2  # the baseline gets the favourite pitches right
    assert m["margin.average_cell.lo"] <= params.evaluate.min_margin
    assert not result.blessed
    assert any("average_cell baseline" in r for r in result.reasons), result.reasons
    recon = vae.reconstruct(torch.from_numpy(test)).numpy()
    assert (recon == recon[0]).all()  # one phrase for every input


def test_a_copying_model_is_refused_by_the_calibrated_copy_check():
    """A model that plays back training phrases matches the data's statistics; the copy check
    catches it, and fresh phrases from the same distribution pass."""
    params = small_params()
    train, val = (quarter_notes(n, params, seed, favourite=0.25) for n, seed in ((64, 0), (32, 1)))
    copied = copy_check(train[:32], val, train, 2, EV)
    assert copied["copy.share_at_match"] == 1.0
    assert any(r.startswith("copying:") for r in bless({**good_metrics(), **copied}, EV))
    fresh = copy_check(quarter_notes(32, params, seed=7, favourite=0.25), val, train, 2, EV)
    assert bless({**good_metrics(), **fresh}, EV) == []


def test_the_collapse_helper_really_cuts_z():
    params = small_params()
    vae = build_model(params)
    mono_before = vae.decode(torch.randn(2, 4))[0]
    assert not torch.equal(mono_before[0], mono_before[1])
    collapse(vae)
    mono = vae.decode(torch.randn(2, 4))[0]
    assert torch.equal(mono[0], mono[1])
