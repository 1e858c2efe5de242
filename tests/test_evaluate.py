"""Evaluate on a tiny untrained model: outputs, the baseline on the same split, the temperature
chosen on validation, determinism and MLflow logging. The gate's rules: tests/test_gate.py."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest

from lpdvae.data.shards import load_split
from lpdvae.errors import DataError, LpdvaeError
from lpdvae.evaluation.baselines import BASELINES
from lpdvae.evaluation.gate import bless
from lpdvae.evaluation.metrics import fit_cell_baseline, note_prf
from lpdvae.registry.aliases import client
from lpdvae.steps.evaluate import COPY_PHRASES, METRIC_PHRASES, evaluate
from tests.evalkit import REPO, make_model, make_tensors, random_codes, tiny_params, write_splits

pytestmark = pytest.mark.slow  # every test evaluates on the MLflow server (moto S3 behind it)


def have_audio() -> bool:
    from lpdvae.params import load_params

    return shutil.which("fluidsynth") is not None and Path(load_params(REPO / "params.yaml").evaluate.soundfont).exists()


HAVE_AUDIO = have_audio()


@pytest.fixture(scope="module")
def params(mlflow_server):
    return tiny_params(mlflow_server, "evaluate-tests", **{"evaluate.render_audio": HAVE_AUDIO})


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, params):
    """One evaluation shared by the module: (model dir, tensor dir, result, out dir)."""
    tmp = tmp_path_factory.mktemp("evaluate")
    model = make_model(tmp / "model", params)
    tensors = make_tensors(tmp / "tensors", params)
    return model, tensors, evaluate(model, tensors, tmp / "eval", params), tmp / "eval"


def offline_copy(model: Path, dest: Path) -> Path:
    """The model without its mlflow_run.json: evaluating it logs nothing to the shared run."""
    shutil.copytree(model, dest, ignore=shutil.ignore_patterns("mlflow_run.json"))
    return dest


def test_evaluate_writes_metrics_blessing_samples_and_page(params, evaluated):
    _, _, result, out = evaluated
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == pytest.approx(result.metrics)
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    baselines = [f"baseline.{b}.recon_note_f1{end}" for b in BASELINES for end in ("", ".lo", ".hi")]
    for key in ("recon_note_precision", "recon_note_recall", "recon_note_f1", "recon_note_f1.lo", "recon_note_f1.hi",
                "recon_note_f1/soprano", "recon_note_f1/soprano.lo", "recon_frame_f1", *baselines,
                "margin.copy.lo", "baseline.copy.bits", "train.recon_note_f1",
                "baseline.average_cell.train.recon_note_f1", "neg_elbo", "kl_nats", "kl_bits", "active_units",
                "temperature", "diversity.unique_fraction", "diversity.mean_pairwise_note_f1",
                "copy.nearest_train_note_f1", "copy.p_value", "copy.val_floor", "gap.empty_bar_rate.lo",
                "reference.empty_bar_rate", "reference.n_pitch_classes_used",
                "reference.empty_bar_rate/soprano", "reference.tonal_distance/soprano-bass",
                "generated.empty_bar_rate"):
        assert key in metrics, key
    assert metrics["neg_elbo"] > 0 and metrics["kl_nats"] >= 0
    assert 0 <= metrics["active_units"] <= params.model.latent_dim

    blessing = json.loads((out / "blessing.json").read_text())
    assert blessing["blessed"] is result.blessed and blessing["reasons"] == result.reasons
    assert blessing["blessed"] == (not blessing["reasons"])
    assert blessing["evaluated_on"] == "test" and blessing["temperature"] == metrics["temperature"]
    assert blessing["reasons"] == bless(metrics, params.evaluate)  # the verdict is the gate's

    names = [f"generated-{i:02d}" for i in range(params.evaluate.n_samples)]
    names += ["reconstruction-00", "reconstruction-01", "interpolation"]
    page = (out / "index.html").read_text()
    for name in names:
        for ext in ("mid", "png") + (("wav",) if HAVE_AUDIO else ()):
            assert (out / "samples" / f"{name}.{ext}").stat().st_size > 0
            assert f'"samples/{name}.{ext}"' in page
    assert ("<audio" in page) == HAVE_AUDIO
    assert "repeat_bar baseline" in page and "Generated music vs the data" in page
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".eval")]  # atomic: no temp dirs


def test_evaluate_writes_the_per_phrase_record_its_metrics_aggregate(params, evaluated):
    from lpdvae.evaluation.evalset import read_per_phrase, tensor_set_id
    from lpdvae.evaluation.metrics import aggregate_metrics, f1_from_counts

    _, tensors, result, out = evaluated
    record = read_per_phrase(out)  # on validation: register compares champions there, never on test
    assert record.set_id == tensor_set_id(tensors) and record.info["split"] == "val"
    assert record.info["n_phrases"] == len(record.note_counts) == result.metrics["n_val_phrases"]
    assert record.info["temperature"] == result.metrics["temperature"]
    assert f1_from_counts(record.note_counts) == pytest.approx(result.metrics["val.recon_note_f1"])
    assert all(len(v) == params.evaluate.n_generated for v in record.generated.values())
    assert all(len(v) == len(record.note_counts) for v in record.reference.values())
    for key, value in aggregate_metrics(record.generated).items():
        assert result.metrics[f"generated.{key}"] == pytest.approx(value), key


def test_an_untrained_model_is_not_blessed(evaluated):
    result = evaluated[2]
    assert not result.blessed
    assert any(r.startswith("recon_note_f1") for r in result.reasons)


def test_the_baseline_is_fitted_on_train_and_val_and_scored_on_the_same_test_split(evaluated):
    _, tensors, result, _ = evaluated
    test, val, train = (load_split(tensors, s, limit=METRIC_PHRASES) for s in ("test", "val", "train"))
    baseline = fit_cell_baseline(load_split(tensors, "train", limit=COPY_PHRASES), val)
    m = result.metrics
    assert m["baseline.average_cell.threshold"] == pytest.approx(baseline.threshold)
    assert m["baseline.average_cell.recon_note_f1"] == pytest.approx(
        note_prf(baseline.predict(len(test)), test)["f1"])
    assert m["baseline.average_cell.train.recon_note_f1"] == pytest.approx(
        note_prf(baseline.predict(len(train)), train)["f1"])
    assert m["n_test_phrases"] == len(test) and m["n_val_phrases"] == len(val)


def test_the_temperature_is_one_of_the_params_and_chosen_without_the_test_split(tmp_path, params, evaluated):
    model, _, result, _ = evaluated
    assert result.metrics["temperature"] in params.evaluate.temperatures
    # the same train and val splits (seeds 0, 1 as in make_tensors) with other test phrases
    other = write_splits(tmp_path / "other", params, {"train": random_codes(12, params, 0),
                                                      "val": random_codes(12, params, 1),
                                                      "test": random_codes(12, params, 99, density=0.1)})
    again = evaluate(offline_copy(model, tmp_path / "model"), other, tmp_path / "again", params)
    assert again.metrics["reference.polyphonic_rate"] != result.metrics["reference.polyphonic_rate"]
    assert again.metrics["temperature"] == result.metrics["temperature"]


def test_evaluate_logs_metrics_and_artifacts_to_the_train_run(params, evaluated):
    model, _, result, _ = evaluated
    run_id = json.loads((model / "mlflow_run.json").read_text())["run_id"]
    run = client(params).get_run(run_id)
    assert run.data.metrics["eval.recon_note_f1"] == pytest.approx(result.metrics["recon_note_f1"])
    assert run.data.metrics["eval.baseline.copy.recon_note_f1"] == pytest.approx(
        result.metrics["baseline.copy.recon_note_f1"])
    assert run.data.tags["lpdvae.blessed"] == str(result.blessed).lower()
    logged = {a.path for a in client(params).list_artifacts(run_id, "evaluation")}
    assert {"evaluation/metrics.json", "evaluation/blessing.json", "evaluation/index.html"} <= logged


def test_evaluate_is_deterministic(tmp_path, params, evaluated):
    model, tensors, result, out = evaluated
    again = evaluate(model, tensors, tmp_path / "again", params)
    assert again.metrics == result.metrics and again.reasons == result.reasons
    assert (tmp_path / "again" / "samples" / "generated-00.mid").read_bytes() == \
        (out / "samples" / "generated-00.mid").read_bytes()


def test_the_verdict_follows_the_gate_params(tmp_path, params, evaluated):
    """The same model, a gate with every limit open: blessed (the numbers come from params)."""
    model, tensors, result, _ = evaluated
    lenient = dataclasses.replace(params, evaluate=dataclasses.replace(
        params.evaluate, min_note_f1=0.0, min_margin=-1.0, stat_rel_tolerance=1e9, stat_abs_floor=1e9,
        min_unique_fraction=0.0, copy_alpha=0.0, fidelity_quantile=0.0))
    assert not result.blessed
    assert evaluate(offline_copy(model, tmp_path / "model"), tensors, tmp_path / "lenient", lenient).blessed


def test_evaluate_refuses_tensors_of_another_shape(tmp_path, params, evaluated):
    model = evaluated[0]
    three_tracks = dataclasses.replace(params, tracks=params.tracks + params.tracks[:1])
    with pytest.raises(DataError, match="trained on"):
        evaluate(model, make_tensors(tmp_path / "t3", three_tracks), tmp_path / "x", params)
    assert not (tmp_path / "x").exists()


def test_evaluate_names_a_missing_model_folder(tmp_path, params, evaluated):
    with pytest.raises(LpdvaeError, match=r"nowhere/model\.json: no model here"):
        evaluate(tmp_path / "nowhere", evaluated[1], tmp_path / "x", params)
