"""The local runner: `dvc repro` runs the six stages, a second run does nothing, data round-trips S3."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from lpdvae.registry.lineage import dvc_hash, dvc_lock_hashes
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
def test_register_tags_the_data_hashes_dvc_lock_records(reproduced):
    """The model version's lineage names the same data as dvc.lock: each data folder's tag equals
    its dvc.lock md5 (and its `lpdvae.dvclock.*` copy), and dvc.lock's model hash is tagged too."""
    project, _ = reproduced
    tags = json.loads((project / "reports" / "registered.json").read_text())["tags"]
    locked = {path: md5 for outs in dvc_lock_hashes(project / "dvc.lock").values() for path, md5 in outs.items()}
    for stage in ("raw", "validated", "tensors"):
        path = f"data/{stage}"
        assert tags[f"lpdvae.dvc.{stage}"] == locked[path] == tags[f"lpdvae.dvclock.{path}"], stage
        assert locked[path] == dvc_hash(project / path)
    assert tags["lpdvae.dvclock.models/vae"] == locked["models/vae"]
    assert tags["lpdvae.pipeline_run_id"] == "local" and tags["lpdvae.git_revision"]


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
