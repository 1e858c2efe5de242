"""The local runner: `dvc repro` runs the six stages, a second run does nothing, data round-trips S3."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from lpdvae.lineage import dvc_hash
from tests.project import BIN, make_project, sh

STAGES = ["ingest", "validate", "tensorize", "train", "evaluate", "register"]


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    project = make_project(tmp_path_factory.mktemp("project"))
    first = sh([str(BIN / "dvc"), "repro"], project)
    return project, first


@pytest.mark.slow
def test_dvc_repro_runs_all_six_stages(reproduced):
    project, first = reproduced
    for stage in STAGES:
        assert f"Running stage '{stage}'" in first.stdout, first.stdout
    registered = json.loads((project / "reports" / "registered.json").read_text())
    assert registered["name"] == "lpdvae" and int(registered["version"]) >= 1


@pytest.mark.slow
def test_second_dvc_repro_is_a_no_op(reproduced):
    project, _ = reproduced
    second = sh([str(BIN / "dvc"), "repro"], project)
    assert "Running stage" not in second.stdout
    assert "up to date" in second.stdout.lower()


@pytest.mark.slow
def test_dvc_plots_show_the_training_curves(reproduced):
    project, _ = reproduced
    out = sh([str(BIN / "dvc"), "plots", "show", "--json"], project)
    plots = json.loads(out.stdout)["data"]
    assert {"training loss per step", "validation loss per epoch"} <= set(plots), plots.keys()
    data = plots["training loss per step"][0]["content"]["data"]["values"]
    assert data and {"step", "loss"} <= set(data[0])


@pytest.mark.slow
def test_dvc_lock_records_the_hashes_register_tags(reproduced):
    project, _ = reproduced
    lock = (project / "dvc.lock").read_text()
    assert dvc_hash(project / "data" / "tensors") in lock


@pytest.mark.slow
def test_dvc_push_then_pull_into_a_fresh_clone_restores_identical_tensors(
    reproduced, s3_bucket: str, s3_server: str, tmp_path: Path
):
    project, _ = reproduced
    dvc = str(BIN / "dvc")
    sh([dvc, "remote", "add", "-f", "-d", "s3", f"s3://{s3_bucket}/dvc"], project)
    sh([dvc, "remote", "modify", "s3", "endpointurl", s3_server], project)
    sh(["git", "add", "-A"], project)
    sh(["git", "commit", "-qm", "pipeline outputs"], project)
    sh([dvc, "push"], project)

    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    sh([dvc, "pull", "data/tensors"], clone)
    assert dvc_hash(clone / "data" / "tensors") == dvc_hash(project / "data" / "tensors")
    for shard in (project / "data" / "tensors" / "shards").iterdir():
        assert (clone / "data" / "tensors" / "shards" / shard.name).read_bytes() == shard.read_bytes()
