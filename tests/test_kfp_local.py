"""The KFP pipeline runs end to end with kfp.local and registers a model version."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.project import env, make_project


@pytest.mark.slow
def test_kfp_local_run_registers_a_model_version(tmp_path):
    # a one-epoch model is far from the data: open the blessing gates so register runs
    lenient = {"stat_rel_tolerance": 1e9, "stat_abs_floor": 1e9, "min_note_f1": 0.0, "min_margin": -1.0,
               "min_unique_fraction": 0.0, "copy_alpha": 0.0, "fidelity_quantile": 0.0}
    project = make_project(tmp_path / "project", {"register": {"model_name": "lpdvae-kfp"},
                                                  "evaluate": lenient})
    repo = Path(__file__).resolve().parents[1]
    run_env = {**env(), "PYTHONPATH": os.pathsep.join([str(repo / "src"), str(repo)])}  # this checkout's lpdvae
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines", "--params", "params.yaml", "run", "--local",
         "--pipeline-root", str(tmp_path / "kfp-root")],
        cwd=project, env=run_env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    db = project / "mlflow.db"
    assert db.exists(), "the local MLflow store was not created"
    with sqlite3.connect(db) as conn:
        versions = conn.execute(
            "select version from model_versions where name = 'lpdvae-kfp'").fetchall()
        tags = dict(conn.execute(
            "select key, value from model_version_tags where name = 'lpdvae-kfp'").fetchall())
    root = tmp_path / "kfp-root"
    if not versions:  # register only registers when blessed: then evaluate must have said why not
        blessing = next(root.rglob("blessing.json"))
        reasons = json.loads(blessing.read_text())["reasons"]
        pytest.fail(f"evaluation did not bless the tiny model, so nothing was registered: {reasons}")
    assert list(root.rglob("register-op/registration")), "a version was registered outside the register task"
    # lineage from the pipeline's own artifacts and parameters
    assert tags["lpdvae.blessed"] == "true"
    assert tags["lpdvae.git_revision"] and tags["lpdvae.dvc.tensors"].endswith(".dir")
    assert tags["lpdvae.pipeline_run_id"] not in ("", "local", "kfp")
    # what the KFP UI shows: GX data docs and the samples page as single HTML files
    for page in ("validate-op/data_docs", "evaluate-op/samples_page", "register-op/model_card_page"):
        found = list(root.rglob(page))
        assert found and "<html" in found[0].read_text().lower(), page
    # the run ends with one summary: promoted or not, and why (the first version: no champion)
    summary = next(root.rglob("register-op/summary")).read_text()
    assert summary.startswith("# lpdvae-kfp version 1: promoted") and "no champion to compare with" in summary
    assert "## Data" in next(root.rglob("register-op/model_card")).read_text()
    assert tags["lpdvae.promotion.verdict"] == "promoted"
    assert os.path.getsize(db) > 0
