"""`lpdvae run` (the six steps in one process, no DVC) and `lpdvae status` on a tiny demo corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lpdvae.cli import main
from lpdvae.io import read_jsonl, sha256_file
from lpdvae.params import Params, load_params
from lpdvae.registry.lineage import dvc_hash
from tests.project import REPO, TINY, deep_merge


@pytest.fixture
def params_file(tmp_path: Path) -> Path:
    """params.yaml shrunk for a seconds-long run (tests/project.py's TINY), 6 demo songs, and no
    MLflow store named: the default (`<root>/mlflow.db`) is what these tests check."""
    raw = deep_merge(yaml.safe_load((REPO / "params.yaml").read_text()), TINY)
    raw["data"]["source"] = "demo://bach-chorales?songs=6"
    raw["mlflow"]["tracking_uri"] = None
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory that is not the root, and no MLflow store in the environment."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return cwd


@pytest.mark.slow
def test_run_writes_everything_under_root_and_tags_the_model_with_roots_data(
        params_file: Path, elsewhere: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mlflow import MlflowClient

    params: Params = load_params(params_file)
    root = tmp_path / "project"

    assert main(["--params", str(params_file), "run", "--root", str(root), "--run-id", "run-7"]) == 0

    assert len(read_jsonl(root / "data/raw/manifest.jsonl")) == 6
    assert json.loads((root / "data/validated/summary.json").read_text())["n_accepted"] > 0
    assert (root / "reports/data_docs/index.html").exists()
    assert json.loads((root / "data/tensors/index.json").read_text())["splits"]["train"]["n"] > 0
    assert {"model.pt", "model.json", "train_metrics.json"} <= {p.name for p in (root / "models/vae").iterdir()}
    metrics = json.loads((root / "reports/eval/metrics.json").read_text())
    assert {"recon_note_f1", "baseline.copy.recon_note_f1", "copy.nearest_train_note_f1"} <= set(metrics)
    # the MLflow store is the root's, and nothing landed in the working directory
    assert (root / "mlflow.db").exists() and (root / "mlartifacts").is_dir()
    assert list(elsewhere.iterdir()) == []
    registered = json.loads((root / "reports/registered.json").read_text())
    assert (registered["name"], str(registered["version"])) == (params.register.model_name, "1")
    # the lineage names the root's own data, this run and these params
    tags = registered["tags"]
    for stage in ("raw", "validated", "tensors"):
        assert tags[f"lpdvae.dvc.{stage}"] == dvc_hash(root / "data" / stage), stage
    assert tags["lpdvae.manifest_sha256"] == sha256_file(root / "data/raw/manifest.jsonl")
    assert tags["lpdvae.quarantined"] == str(len(read_jsonl(root / "data/validated/quarantine.jsonl")))
    assert tags["lpdvae.source"] == params.data.source
    assert tags["lpdvae.pipeline_run_id"] == "run-7" and tags["lpdvae.params_digest"] == params.digest()
    store = f"sqlite:///{root / 'mlflow.db'}"
    version = MlflowClient(tracking_uri=store, registry_uri=store).get_model_version(params.register.model_name, "1")
    assert {k: v for k, v in version.tags.items() if k in tags} == tags
    out = capsys.readouterr().out
    assert f"registered model: {params.register.model_name} version 1" in out
    assert f"--backend-store-uri {store} " in out
    # the run ends with one summary, promoted or not and why, beside the version's model card
    summary = (root / "reports/register/summary.md").read_text()
    assert out.rstrip().endswith(f"(summary: {root / 'reports/register/summary.md'})")
    assert summary.splitlines()[0] in out and registered["verdict"] in summary
    assert f"promotion: {registered['verdict']}" in out
    assert "## Data" in (root / "reports/register/model_card.md").read_text()
    sample = next(line for line in out.splitlines() if line.startswith("generated MIDI sample: "))
    assert Path(sample.removeprefix("generated MIDI sample: ")).read_bytes()[:4] == b"MThd"


def test_status_reads_the_store_and_outputs_under_root(
        params_file: Path, elsewhere: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "project"
    (root / "reports").mkdir(parents=True)
    (root / "reports/registered.json").write_text('{"name": "lpdvae", "version": "4", "aliases": ["challenger"]}')
    assert main(["--params", str(params_file), "status", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "registered model: lpdvae version 4 (aliases: challenger)" in out
    assert f"--backend-store-uri sqlite:///{root / 'mlflow.db'} " in out


def test_status_before_any_run_says_there_is_no_model_yet(
        params_file: Path, elsewhere: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--params", str(params_file), "status", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "registered model: none yet (run `make run`)" in out and "generated MIDI sample" not in out
