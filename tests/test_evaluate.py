"""Evaluate on a tiny untrained model: outputs, determinism, MLflow logging and the blessing rules."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import uuid
from pathlib import Path

import pytest

from lpdvae.errors import DataError
from lpdvae.params import EvaluateParams, RegisterParams
from lpdvae.registry import CHAMPION, client
from lpdvae.steps.evaluate import bless, evaluate
from tests.evalkit import make_model, make_tensors, tiny_params

HAVE_AUDIO = shutil.which("fluidsynth") is not None and Path(EvaluateParams().soundfont).exists()


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


def test_evaluate_writes_metrics_blessing_samples_and_page(params, evaluated):
    _, _, result, out = evaluated
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == pytest.approx(result.metrics)
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    for key in ("recon_precision", "recon_recall", "recon_f1", "recon_frame_f1", "neg_elbo",
                "reference.empty_bar_rate", "test.empty_bar_rate", "reference.n_pitch_classes_used",
                "reference.empty_bar_rate/soprano", "reference.tonal_distance/soprano-bass",
                "generated.empty_bar_rate", "gap.empty_bar_rate"):
        assert key in metrics, key
    assert metrics["neg_elbo"] > 0

    blessing = json.loads((out / "blessing.json").read_text())
    assert blessing["blessed"] is result.blessed and blessing["reasons"] == result.reasons
    assert blessing["blessed"] == (not blessing["reasons"])

    names = [f"generated-{i:02d}" for i in range(params.evaluate.n_samples)]
    names += ["reconstruction-00", "reconstruction-01", "original-00", "original-01"]
    page = (out / "index.html").read_text()
    for name in names:
        for ext in ("mid", "png") + (("wav",) if HAVE_AUDIO else ()):
            assert (out / "samples" / f"{name}.{ext}").stat().st_size > 0
            assert f'"samples/{name}.{ext}"' in page
    assert ("<audio" in page) == HAVE_AUDIO
    assert "training data (reference)" in page
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".eval")]  # atomic: no temp dirs


def test_evaluate_logs_metrics_and_artifacts_to_the_train_run(params, evaluated):
    model, _, result, _ = evaluated
    run_id = json.loads((model / "mlflow_run.json").read_text())["run_id"]
    run = client(params).get_run(run_id)
    assert run.data.metrics["eval.recon_f1"] == pytest.approx(result.metrics["recon_f1"])
    assert run.data.tags["lpdvae.blessed"] == str(result.blessed).lower()
    logged = {a.path for a in client(params).list_artifacts(run_id, "evaluation")}
    assert {"evaluation/metrics.json", "evaluation/blessing.json", "evaluation/index.html"} <= logged


def test_evaluate_is_deterministic_and_reads_the_champion_metric_tags(tmp_path, params, evaluated):
    model, tensors, result, out = evaluated
    params = dataclasses.replace(params, register=RegisterParams(model_name=f"lpdvae-{uuid.uuid4().hex[:8]}"))
    c, name = client(params), params.register.model_name
    run_id = json.loads((model / "mlflow_run.json").read_text())["run_id"]
    c.create_registered_model(name)
    mv = c.create_model_version(name, f"runs:/{run_id}/none", run_id=run_id,
                                tags={"lpdvae.metric.recon_f1": "0.99", "lpdvae.metric.gap.empty_bar_rate": "0"})
    c.set_registered_model_alias(name, CHAMPION, mv.version)
    again = evaluate(model, tensors, tmp_path / "again", params)
    assert again.metrics == result.metrics
    assert (tmp_path / "again" / "samples" / "generated-00.mid").read_bytes() == \
        (out / "samples" / "generated-00.mid").read_bytes()
    blessing = json.loads((tmp_path / "again" / "blessing.json").read_text())
    assert blessing["champion"]["recon_f1"] == 0.99 and blessing["champion"]["version"] == mv.version
    assert any(r.startswith("recon_f1") and "worse than champion v1" in r for r in again.reasons)
    assert not again.blessed


def test_evaluate_refuses_tensors_of_another_shape(tmp_path, params, evaluated):
    model = evaluated[0]
    three_tracks = dataclasses.replace(params, tracks=params.tracks + params.tracks[:1])
    with pytest.raises(DataError, match="trained on"):
        evaluate(model, make_tensors(tmp_path / "t3", three_tracks), tmp_path / "x", params)
    assert not (tmp_path / "x").exists()


GOOD = {"generated.empty_bar_rate": 0.2, "reference.empty_bar_rate": 0.3, "gap.empty_bar_rate": 0.1,
        "generated.qualified_note_rate": 0.9, "reference.qualified_note_rate": 0.8,
        "gap.qualified_note_rate": 0.1, "recon_f1": 0.5}


def rules(**tolerances: float) -> object:
    from lpdvae.params import Params

    ev = EvaluateParams(tolerances=tolerances, min_recon_f1=0.2, champion_margin=0.05)
    return dataclasses.replace(Params(), evaluate=ev)


def test_bless_passes_within_tolerances():
    assert bless(GOOD, rules(empty_bar_rate=0.35, qualified_note_rate=0.5), None) == []


def test_bless_names_each_failed_check():
    metrics = {**GOOD, "generated.empty_bar_rate": 0.9, "recon_f1": 0.1}
    del metrics["generated.qualified_note_rate"]
    reasons = bless(metrics, rules(empty_bar_rate=0.35, qualified_note_rate=0.5), None)
    assert reasons == [
        "empty_bar_rate: generated 0.900 vs data 0.300 (tolerance 0.35)",
        "qualified_note_rate: not measured (generated music has no notes)",
        "recon_f1 0.100 < min_recon_f1 0.2",
    ]


def test_bless_against_the_champion_allows_the_margin_only():
    p = rules(empty_bar_rate=0.35)
    assert bless(GOOD, p, {"version": "3", "recon_f1": 0.54, "gap.empty_bar_rate": 0.09}) == []
    reasons = bless(GOOD, p, {"version": "3", "recon_f1": 0.56, "gap.empty_bar_rate": 0.05})
    assert reasons[0].startswith("recon_f1 0.500 worse than champion v3 0.560")
    assert reasons[1].startswith("empty_bar_rate: gap to the data 0.100 worse than champion v3 0.050")
