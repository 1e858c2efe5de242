"""`lpdvae run` (the six steps in one process, no DVC) and `lpdvae status` on a tiny demo corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lpdvae.cli import main
from lpdvae.io import read_jsonl
from lpdvae.params import Params


def write_params(params: Params, path: Path, tracking_uri: str) -> Path:
    raw = params.to_dict()
    raw["mlflow"]["tracking_uri"] = tracking_uri
    path.write_text(yaml.safe_dump(raw))
    return path


def test_run_writes_every_step_output_and_registers_a_version(
        tiny_params: Params, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params_file = write_params(tiny_params, tmp_path / "params.yaml", f"sqlite:///{tmp_path / 'mlflow.db'}")
    root = tmp_path / "project"

    assert main(["--params", str(params_file), "run", "--root", str(root)]) == 0

    assert len(read_jsonl(root / "data/raw/manifest.jsonl")) == 6
    assert json.loads((root / "data/validated/summary.json").read_text())["n_accepted"] > 0
    assert (root / "reports/data_docs/index.html").exists()
    index = json.loads((root / "data/tensors/index.json").read_text())
    assert index["shape"][0] == 2 and index["splits"]["train"]["n"] > 0
    assert {"model.pt", "model.json", "train_metrics.json"} <= {p.name for p in (root / "models/vae").iterdir()}
    metrics = json.loads((root / "reports/eval/metrics.json").read_text())
    assert {"recon_note_f1", "baseline.recon_note_f1", "copy.nearest_train_note_f1"} <= set(metrics)
    registered = json.loads((root / "reports/registered.json").read_text())
    assert (registered["name"], str(registered["version"])) == (tiny_params.register.model_name, "1")
    out = capsys.readouterr().out
    assert f"registered model: {tiny_params.register.model_name} version 1" in out
    sample = next(line for line in out.splitlines() if line.startswith("generated MIDI sample: "))
    assert Path(sample.removeprefix("generated MIDI sample: ")).read_bytes()[:4] == b"MThd"


def test_status_before_any_run_says_there_is_no_model_yet(
        tiny_params: Params, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params_file = write_params(tiny_params, tmp_path / "params.yaml", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert main(["--params", str(params_file), "status", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "registered model: none yet (run `make run`)" in out and "generated MIDI sample" not in out
