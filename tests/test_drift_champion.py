"""The drift check against a registered champion on a real MLflow server (sqlite + S3 on moto)
and in a real git+DVC project: demo chorales vs the same chorales transposed by a fifth."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import mido
import pytest

from lpdvae.commands.run import run_all
from lpdvae.data.demo import render_demo_corpus
from lpdvae.errors import DataError
from lpdvae.layout import Layout
from lpdvae.params import load_params
from lpdvae.registry.lineage import dvc_hash
from lpdvae.steps.ingest import ingest
from lpdvae.steps.register import register
from lpdvae.steps.validate import validate
from lpdvae.validation.drift_reference import Reference, champion_reference
from tests.conftest import BIN
from tests.evalkit import REPO, TINY, make_model, make_tensors, on_server, write_eval

pytestmark = pytest.mark.slow  # every test reads a champion from the MLflow server (moto S3 behind it)

SONGS = 16
SHIFT = 7  # semitones: every pitch statistic moves, nothing else does


def transposed(src: Path, dest: Path, shift: int) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for path in sorted(src.glob("*.mid")):
        mid = mido.MidiFile(path)
        for track in mid.tracks:
            for i, msg in enumerate(track):
                if msg.type in ("note_on", "note_off"):
                    track[i] = msg.copy(note=msg.note + shift)
        mid.save(dest / path.name)
    return dest


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("corpora")
    render_demo_corpus(root / "chorales", SONGS)
    return {"chorales": root / "chorales", "transposed": transposed(root / "chorales", root / "transposed", SHIFT)}


@pytest.fixture
def params(tiny_params, mlflow_server):
    return on_server(tiny_params, mlflow_server, "drift-tests")


@pytest.fixture(scope="module")
def champion_data(corpora, tmp_path_factory) -> Path:
    """The validated folder of the chorales (what the champion is trained on)."""
    root = tmp_path_factory.mktemp("champion-data")
    params = load_params(REPO / "params.yaml", TINY)
    ingest(str(corpora["chorales"]), root / "raw", params)
    validate(root / "raw", root / "validated", params, root / "docs")
    return root / "validated"


def tensors_for(tmp_path: Path, params) -> Path:
    """The test split register measures a champion on."""
    make_tensors(tmp_path / "tensors", params)
    return tmp_path / "tensors"


def with_champion(tmp_path: Path, params, validated: Path, log_data: bool = True) -> str:
    """Register a blessed version (the champion) whose lineage names `validated`."""
    r = register(make_model(tmp_path / "model", params), write_eval(tmp_path / "eval", True, 0.5),
                 tmp_path / "registered.json", params,
                 lineage={"lpdvae.dvc.validated": dvc_hash(validated), "lpdvae.git_revision": "deadbeef"},
                 tensor_dir=tensors_for(tmp_path, params), report_dir=tmp_path / "report",
                 validated=validated if log_data else None)
    assert "champion" in r.aliases
    return r.version


def validate_against_champion(corpus: Path, tmp_path: Path, params):
    ingest(str(corpus), tmp_path / "raw", params)
    result = validate(tmp_path / "raw", tmp_path / "validated", params, tmp_path / "docs",
                      champion_reference(params, tmp_path))
    return result, json.loads((tmp_path / "docs" / "drift.json").read_text())


def test_transposed_chorales_drift_from_the_champions_data(tmp_path, params, corpora, champion_data):
    version = with_champion(tmp_path, params, champion_data)
    result, report = validate_against_champion(corpora["transposed"], tmp_path, params)
    assert result.drift_verdict == report["verdict"] == "drift"
    assert {"pitch_min", "pitch_max"} <= set(report["drifted"])
    assert report["reference"]["version"] == version and report["reference"]["found_in"] == "mlflow artifact"
    assert report["reference"]["dvc_validated"] == dvc_hash(champion_data)
    index = (tmp_path / "docs" / "index.html").read_text()
    assert '<section id="drift">' in index and "pitch_min" in (tmp_path / "docs" / "drift.html").read_text()


def test_the_champions_own_corpus_does_not_drift(tmp_path, params, corpora, champion_data):
    with_champion(tmp_path, params, champion_data)
    result, report = validate_against_champion(corpora["chorales"], tmp_path, params)
    assert result.drift_verdict == "ok" and report["drifted"] == []
    assert all(s["distance"] in (0.0, None) for s in report["statistics"])


def test_first_run_without_a_champion_passes_with_no_reference(tmp_path, params, corpora, caplog):
    caplog.set_level("INFO")
    result, report = validate_against_champion(corpora["transposed"], tmp_path, params)
    assert result.drift_verdict == "no_reference" and "has no champion yet (first run)" in report["reason"]
    assert "drift no_reference" in caplog.text


def test_stop_on_drift_stops_the_run_before_training(tmp_path, params, corpora, champion_data):
    with_champion(tmp_path / "champion", params, champion_data)
    stopping = dataclasses.replace(params, drift=dataclasses.replace(params.drift, stop_on_drift=True))
    layout = Layout(tmp_path / "project")
    with pytest.raises(DataError, match=r"data drift against champion version 1's training data: \d+ of \d+ "
                                        r"statistics drifted.*pitch_min.*training stopped \(drift.stop_on_drift\)"):
        run_all(stopping, layout, source=str(corpora["transposed"]))
    assert (layout.data_docs / "drift.json").exists() and (layout.validated / "stats.csv").exists()
    assert not layout.tensors.exists() and not layout.model.exists()


def test_register_logs_the_drift_verdict_and_the_data_into_the_run(tmp_path, params, corpora, champion_data):
    from lpdvae.registry.aliases import client

    with_champion(tmp_path / "champion", params, champion_data)
    validate_against_champion(corpora["transposed"], tmp_path, params)
    r = register(make_model(tmp_path / "model", params), write_eval(tmp_path / "eval", True, 0.4),
                 tmp_path / "registered.json", params, lineage={"lpdvae.dvc.validated": "x.dir"},
                 tensor_dir=tensors_for(tmp_path, params), report_dir=tmp_path / "report",
                 validated=tmp_path / "validated", data_docs=tmp_path / "docs")
    c = client(params)
    assert c.get_run(r.run_id).data.tags["lpdvae.drift.verdict"] == "drift"
    assert c.get_model_version(params.register.model_name, r.version).tags["lpdvae.drift.verdict"] == "drift"
    names = {f.path for f in c.list_artifacts(r.run_id, "drift")} | {f.path for f in c.list_artifacts(r.run_id, "validated")}
    assert {"drift/drift.json", "drift/drift.html", "validated/stats.csv", "validated/quarantine.jsonl"} <= names


def dvc(project: Path, *args: str) -> None:
    subprocess.run([str(BIN / "dvc"), *args], cwd=project, check=True, capture_output=True)


@pytest.fixture
def dvc_project(tmp_path, champion_data) -> Path:
    """A git+DVC project whose cache holds the champion's validated folder (`dvc add`)."""
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    dvc(project, "init", "-q")
    shutil.copytree(champion_data, project / "data" / "validated")
    dvc(project, "add", "data/validated")
    return project


def test_the_champions_data_is_read_from_the_dvc_cache(tmp_path, params, champion_data, dvc_project):
    with_champion(tmp_path / "champion", params, champion_data, log_data=False)
    ref = champion_reference(params, dvc_project)
    assert isinstance(ref, Reference) and ref.info["found_in"] == "dvc cache" and len(ref.table) > 0


def test_the_champions_data_is_read_from_the_dvc_remote_on_s3(tmp_path, params, champion_data, dvc_project,
                                                              s3_server, s3_bucket):
    with_champion(tmp_path / "champion", params, champion_data, log_data=False)
    dvc(dvc_project, "remote", "add", "-d", "s3", f"s3://{s3_bucket}/dvc")
    dvc(dvc_project, "remote", "modify", "s3", "endpointurl", s3_server)
    dvc(dvc_project, "push")
    shutil.rmtree(dvc_project / ".dvc" / "cache")
    ref = champion_reference(params, dvc_project)
    assert isinstance(ref, Reference) and ref.info["found_in"] == "dvc remote" and len(ref.table) > 0
