"""Registry promotion through aliases on a real MLflow server (sqlite + S3 artifacts on moto)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import uuid

import pytest

from lpdvae.audit import lineage, versions_for_dataset
from lpdvae.errors import RegistryError
from lpdvae.params import MlflowParams, RegisterParams
from lpdvae.registry import CHAMPION, alias_version, client, promote, rollback
from lpdvae.steps.register import register
from tests.evalkit import make_model, make_tensors, write_eval


@pytest.fixture
def params(tiny_params, mlflow_server):
    """A fresh model name per test on the session's MLflow server."""
    return dataclasses.replace(
        tiny_params,
        mlflow=MlflowParams(tracking_uri=mlflow_server, experiment="registry-tests"),
        register=RegisterParams(model_name=f"lpdvae-{uuid.uuid4().hex[:8]}", auto_promote=True),
    )


def register_version(tmp_path, params, name: str, blessed: bool, recon_f1: float, lineage_tags=None):
    model = make_model(tmp_path / f"{name}-model", params)
    evaluation = write_eval(tmp_path / f"{name}-eval", blessed, recon_f1)
    return register(model, evaluation, tmp_path / f"{name}.json", params,
                    lineage=lineage_tags or {"lpdvae.dvc.tensors": "abc.dir", "lpdvae.git_revision": "deadbeef"})


def champion(params):
    mv = alias_version(client(params), params.register.model_name, CHAMPION)
    return mv.version if mv else None


def test_first_blessed_version_becomes_champion_and_challenger(tmp_path, params):
    r = register_version(tmp_path, params, "v1", blessed=True, recon_f1=0.5)
    assert r.version == "1" and r.aliases == ["challenger", "champion"]
    assert json.loads((tmp_path / "v1.json").read_text())["version"] == "1"


def test_unblessed_version_gets_no_alias(tmp_path, params):
    register_version(tmp_path, params, "v1", blessed=True, recon_f1=0.5)
    r = register_version(tmp_path, params, "v2", blessed=False, recon_f1=0.9)
    assert r.aliases == [] and champion(params) == "1"


def test_promote_refuses_an_unblessed_version(tmp_path, params):
    register_version(tmp_path, params, "v1", blessed=True, recon_f1=0.5)
    register_version(tmp_path, params, "v2", blessed=False, recon_f1=0.9)
    with pytest.raises(RegistryError, match="version 2 is not blessed"):
        promote(params, "2")
    assert champion(params) == "1"


def test_forced_promotion_needs_and_records_a_reason(tmp_path, params):
    register_version(tmp_path, params, "v1", blessed=True, recon_f1=0.5)
    register_version(tmp_path, params, "v2", blessed=False, recon_f1=0.9)
    with pytest.raises(RegistryError, match="--reason"):
        promote(params, "2", force=True)
    promote(params, "2", force=True, reason="hotfix for the demo")
    tags = client(params).get_model_version(params.register.model_name, "2").tags
    assert champion(params) == "2"
    assert tags["lpdvae.promoted_reason"] == "hotfix for the demo"
    assert tags["lpdvae.promoted_forced"] == "true"
    assert tags["lpdvae.previous_champion"] == "1"


def test_rollback_restores_the_previous_champion(tmp_path, params):
    register_version(tmp_path, params, "v1", blessed=True, recon_f1=0.5)
    register_version(tmp_path, params, "v2", blessed=True, recon_f1=0.6)
    assert champion(params) == "2"
    assert rollback(params) == ("2", "1")
    assert champion(params) == "1"
    with pytest.raises(RegistryError, match="no previous champion"):
        rollback(params)


def test_blessed_challenger_that_does_not_beat_champion_stays_challenger(tmp_path, params):
    register_version(tmp_path, params, "v1", blessed=True, recon_f1=0.6)
    r = register_version(tmp_path, params, "v2", blessed=True, recon_f1=0.5)
    assert r.aliases == ["challenger"] and champion(params) == "1"


def test_audit_prints_lineage_and_restore_commands(tmp_path, params):
    register_version(tmp_path, params, "v1", blessed=True, recon_f1=0.5,
                     lineage_tags={"lpdvae.dvc.tensors": "f00d.dir", "lpdvae.git_revision": "cafe123",
                                   "lpdvae.source": "demo://bach-chorales?songs=6"})
    info = lineage(params, f"models:/{params.register.model_name}@champion")
    assert info["data"]["tensors"] == "f00d.dir"
    assert info["git_revision"] == "cafe123"
    assert info["params_digest"] == params.digest()
    assert "git checkout cafe123" in info["restore"]


def test_audit_by_dataset_lists_the_versions_trained_on_it(tmp_path, params):
    register_version(tmp_path, params, "v1", True, 0.5, {"lpdvae.dvc.tensors": "aaa.dir"})
    register_version(tmp_path, params, "v2", True, 0.6, {"lpdvae.dvc.tensors": "bbb.dir"})
    register_version(tmp_path, params, "v3", True, 0.7, {"lpdvae.dvc.tensors": "aaa.dir"})
    assert [r["version"] for r in versions_for_dataset(params, "aaa.dir")] == ["1", "3"]


def test_registry_cli_refuses_unblessed_promotion_with_one_line(tmp_path, params, mlflow_server):
    register_version(tmp_path, params, "v1", blessed=False, recon_f1=0.1)
    out = subprocess.run(
        [sys.executable, "-m", "lpdvae", "--set", f"mlflow.tracking_uri={mlflow_server}",
         "--set", f"register.model_name={params.register.model_name}", "registry", "promote", "1"],
        capture_output=True, text=True,
    )
    assert out.returncode == 1
    assert "is not blessed" in out.stderr and "Traceback" not in out.stderr
