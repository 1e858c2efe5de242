"""The gate: every number comes from params; a model that ignores z (collapsed) and one that
copies its training phrases are refused; the temperature is chosen against validation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from lpdvae.data.codes import ONSET, SUSTAIN
from lpdvae.evaluation.gate import allowed_gap, bless, closest_temperature, statistic_reasons
from lpdvae.evaluation.metrics import (aggregate_metrics, diversity, fit_cell_baseline, musegan_per_phrase,
                                       nearest_train_f1, note_prf)
from lpdvae.model.vae import build_model, save_model, vae_loss
from lpdvae.params import EvaluateParams, Params, load_params
from lpdvae.data.shards import ShardWriter, write_index
from lpdvae.steps.evaluate import evaluate
from tests.project import small_model_dotted

REPO = Path(__file__).resolve().parents[1]
EV = load_params(REPO / "params.yaml").evaluate


def ev(**changes: object) -> EvaluateParams:
    return dataclasses.replace(EV, **changes)


def good_metrics() -> dict[str, float]:
    """A candidate that passes the shipped gate with room to spare."""
    m = {"recon_note_f1": 0.6, "baseline.recon_note_f1": 0.1, "diversity.unique_fraction": 1.0,
         "copy.nearest_train_note_f1": 0.3}
    for i, key in enumerate(EV.statistics):
        m[f"generated.{key}"] = m[f"reference.{key}"] = 0.5 + i
    return m


def test_a_good_candidate_is_blessed_by_the_shipped_gate():
    assert bless(good_metrics(), EV) == []


def test_bless_names_each_failed_check():
    m = {**good_metrics(), "recon_note_f1": 0.1, "baseline.recon_note_f1": 0.08,
         "generated.empty_bar_rate": 0.9, "reference.empty_bar_rate": 0.3,
         "diversity.unique_fraction": 0.5, "copy.nearest_train_note_f1": 0.9}
    del m["generated.qualified_note_rate"]
    reasons = bless(m, ev(statistics=("empty_bar_rate", "qualified_note_rate")))
    assert reasons == [
        "recon_note_f1 0.100 < min_note_f1 0.15",
        "recon_note_f1 0.100 < 2.0 x the average-cell baseline's 0.080",
        "empty_bar_rate: generated 0.900 vs data 0.300 (allowed gap 0.030)",
        "qualified_note_rate: not measured on generated music (no notes)",
        "diversity: 50% of generated phrases are distinct (< 95%)",
        "copying: a generated phrase matches a training phrase with note F1 0.900 (> 0.5)",
    ]


def test_a_statistic_the_data_does_not_have_is_not_gated():
    m = good_metrics()
    del m["reference.tonal_distance"], m["generated.tonal_distance"]
    assert statistic_reasons(m, EV) == []


def test_the_relative_tolerance_comes_from_params():
    m = {**good_metrics(), "generated.n_pitch_classes_used": 3.45, "reference.n_pitch_classes_used": 3.0}
    assert bless(m, ev(stat_rel_tolerance=0.1)) == [
        "n_pitch_classes_used: generated 3.450 vs data 3.000 (allowed gap 0.300)"]
    assert bless(m, ev(stat_rel_tolerance=0.2)) == []


def test_the_absolute_floor_for_near_zero_statistics_comes_from_params():
    m = {**good_metrics(), "generated.polyphonic_rate": 0.015, "reference.polyphonic_rate": 0.0}
    assert allowed_gap(0.0, ev(stat_abs_floor=0.02)) == 0.02
    assert bless(m, ev(stat_abs_floor=0.02)) == []
    assert len(bless(m, ev(stat_abs_floor=0.01))) == 1


def test_the_baseline_factor_comes_from_params():
    m = {**good_metrics(), "recon_note_f1": 0.3, "baseline.recon_note_f1": 0.12}
    assert bless(m, ev(baseline_factor=2.0)) == []
    assert bless(m, ev(baseline_factor=3.0)) == ["recon_note_f1 0.300 < 3.0 x the average-cell baseline's 0.120"]


def test_min_note_f1_unique_fraction_and_copy_limit_come_from_params():
    m = {**good_metrics(), "recon_note_f1": 0.3, "diversity.unique_fraction": 0.9,
         "copy.nearest_train_note_f1": 0.6}
    assert len(bless(m, EV)) == 2  # diversity and copying fail the shipped limits
    assert bless(m, ev(min_unique_fraction=0.9, max_copy_note_f1=0.6)) == []
    assert bless(m, ev(min_unique_fraction=0.9, max_copy_note_f1=0.6, min_note_f1=0.4)) == [
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
        out, mu, logvar = vae(x)
        loss = vae_loss(vae, out, x, mu, logvar, beta=0.0, free_nats=0.0)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    save_model(vae, tmp_path / "model", params)
    tensors = write_tensors(tmp_path / "tensors", {"train": train, "val": val, "test": test}, params)

    result = evaluate(tmp_path / "model", tensors, tmp_path / "eval", params)

    m = result.metrics
    assert m["baseline.recon_note_f1"] > 0.2  # the baseline gets the favourite pitches right
    assert m["recon_note_f1"] < params.evaluate.baseline_factor * m["baseline.recon_note_f1"]
    assert not result.blessed
    assert any("average-cell baseline" in r for r in result.reasons), result.reasons
    recon = vae.reconstruct(torch.from_numpy(test)).numpy()
    assert (recon == recon[0]).all()  # one phrase for every input


def test_a_copying_model_is_refused_by_the_gate():
    """A model that plays back training phrases reconstructs perfectly, is diverse and matches
    the data's statistics; only the copy check catches it."""
    params = small_params()
    rep, names = params.representation, params.track_names
    train, val, test = (quarter_notes(n, params, seed, favourite=0.25)
                        for n, seed in ((64, 0), (16, 1), (16, 2)))
    generated = train[:16]  # what a memorising model samples
    baseline = fit_cell_baseline(train, val)
    metrics = {"recon_note_f1": note_prf(test, test)["f1"],  # a lookup table of phrases: perfect
               "baseline.recon_note_f1": note_prf(baseline.predict(len(test)), test)["f1"],
               **diversity(generated),
               "copy.nearest_train_note_f1": nearest_train_f1(generated, train)}
    for side, phrases in (("generated", generated), ("reference", train[16:32])):
        per = musegan_per_phrase(phrases, names, [False, False], rep)
        metrics.update({f"{side}.{k}": v for k, v in aggregate_metrics(per).items()})
    ev_loose = ev(stat_rel_tolerance=0.5)  # same distribution, 16 phrases each: sampling noise
    assert metrics["copy.nearest_train_note_f1"] == 1.0
    reasons = bless(metrics, ev_loose)
    assert reasons == ["copying: a generated phrase matches a training phrase with note F1 1.000 (> 0.5)"]
    fresh = quarter_notes(16, params, seed=7, favourite=0.25)
    metrics["copy.nearest_train_note_f1"] = nearest_train_f1(fresh, train)
    assert metrics["copy.nearest_train_note_f1"] < 1.0
    assert bless(metrics, ev(stat_rel_tolerance=0.5, max_copy_note_f1=0.99)) == []


def test_the_collapse_helper_really_cuts_z():
    params = small_params()
    vae = build_model(params)
    mono_before = vae.decode(torch.randn(2, 4))[0]
    assert not torch.equal(mono_before[0], mono_before[1])
    collapse(vae)
    mono = vae.decode(torch.randn(2, 4))[0]
    assert torch.equal(mono[0], mono[1])
