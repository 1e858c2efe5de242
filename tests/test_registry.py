"""Registry promotion through aliases on a real MLflow server (sqlite + S3 artifacts on moto)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lpdvae.errors import RegistryError
from lpdvae.registry.aliases import CHAMPION, alias_version, client, promote, rollback
from lpdvae.steps.register import register
from tests.conftest import REPO
from tests.evalkit import make_model, make_tensors, on_server, write_eval

pytestmark = pytest.mark.slow  # every test registers on the MLflow server (moto S3 behind it)


@pytest.fixture
def params(tiny_params, mlflow_server):
    """A fresh model name per test on the session's MLflow server."""
    return on_server(tiny_params, mlflow_server, "registry-tests")


def register_version(tmp_path, params, name: str, blessed: bool, recon_f1: float, lineage_tags=None):
    model = make_model(tmp_path / f"{name}-model", params)
    evaluation = write_eval(tmp_path / f"{name}-eval", blessed, recon_f1)
    tensors = tmp_path / "tensors"
    if not tensors.exists():
        make_tensors(tensors, params)
    return register(model, evaluation, tmp_path / f"{name}.json", params,
                    lineage=lineage_tags or {"lpdvae.dvc.tensors": "abc.dir", "lpdvae.git_revision": "deadbeef"},
                    tensor_dir=tensors, report_dir=tmp_path / f"{name}-report")


def champion(params):
    mv = alias_version(client(params), params.register.model_name, CHAMPION)
    return mv.version if mv else None


def test_first_blessed_version_becomes_champion_and_challenger(tmp_path, params):
    lineage = {"lpdvae.dvc.tensors": "abc.dir", "lpdvae.git_revision": "deadbeef",
               "lpdvae.pipeline_run_id": "kfp-run-42"}  # the run id travels in the lineage
    r = register_version(tmp_path, params, "v1", blessed=True, recon_f1=0.5, lineage_tags=lineage)
    assert r.version == "1" and r.aliases == ["challenger", "champion"]
    record = json.loads((tmp_path / "v1.json").read_text())
    assert record["version"] == "1" and record["aliases"] == ["challenger", "champion"]
    tags = client(params).get_model_version(params.register.model_name, "1").tags
    assert tags["lpdvae.pipeline_run_id"] == "kfp-run-42"
    assert tags["lpdvae.params_digest"] == params.digest()
    assert tags["lpdvae.blessed"] == "true" and tags["lpdvae.metric.recon_note_f1"] == "0.5"
    assert tags["lpdvae.metric.generated.empty_bar_rate"] == "0.1"
    assert tags["lpdvae.dvc.tensors"] == "abc.dir" and tags["lpdvae.git_revision"] == "deadbeef"
    assert tags["lpdvae.promotion.verdict"] == "promoted"  # the first run says why
    assert tags["lpdvae.promotion.summary"] == "promoted: first version: no champion to compare with"
    assert tags["lpdvae.eval_set.split"] == "val" and len(tags["lpdvae.eval_set.sha256"]) == 64
    assert json.loads((tmp_path / "v1-report" / "promotion.json").read_text())["promoted"] is True
    for alias in ("challenger", "champion"):  # every alias change: who, when, why, previous
        assert tags[f"lpdvae.alias.{alias}.by"] and tags[f"lpdvae.alias.{alias}.at"].endswith("+00:00")
        assert tags[f"lpdvae.alias.{alias}.reason"] and tags[f"lpdvae.alias.{alias}.previous"] == ""


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
    promote(params, "2")
    assert champion(params) == "2"
    assert client(params).get_model_version(params.register.model_name, "2").tags[
        "lpdvae.previous_champion"] == "1"
    assert rollback(params, reason="v2 sounds off") == ("2", "1")
    assert champion(params) == "1"
    tags = client(params).get_model_version(params.register.model_name, "1").tags
    assert tags["lpdvae.alias.champion.reason"] == "v2 sounds off"
    assert tags["lpdvae.alias.champion.previous"] == "2"
    with pytest.raises(RegistryError, match="no previous champion"):
        rollback(params)


def test_a_blessed_challenger_that_cannot_be_compared_with_the_champion_stays_challenger(tmp_path, params):
    register_version(tmp_path, params, "v1", blessed=True, recon_f1=0.6)
    r = register_version(tmp_path, params, "v2", blessed=True, recon_f1=0.9)  # measured on other phrases
    assert r.aliases == ["challenger"] and champion(params) == "1" and not r.promoted
    tags = client(params).get_model_version(params.register.model_name, "2").tags
    assert tags["lpdvae.promotion.verdict"] == "not promoted"
    assert "not compared with champion v1" in tags["lpdvae.promotion.summary"]
    assert "evaluate and register on the same tensors" in tags["lpdvae.promotion.reasons"]


def test_metric_tags_keep_full_precision(tmp_path, params):
    f1 = 0.123456789012345
    register_version(tmp_path, params, "v1", blessed=True, recon_f1=f1)
    tags = client(params).get_model_version(params.register.model_name, "1").tags
    assert float(tags["lpdvae.metric.recon_note_f1"]) == f1


def test_registry_cli_refuses_unblessed_promotion_with_one_line(tmp_path, params, mlflow_server):
    register_version(tmp_path, params, "v1", blessed=False, recon_f1=0.1)
    out = subprocess.run(
        [sys.executable, "-m", "lpdvae", "--set", f"mlflow.tracking_uri={mlflow_server}",
         "--set", f"register.model_name={params.register.model_name}", "registry", "promote", "1"],
        capture_output=True, text=True,
    )
    assert out.returncode == 1
    assert "is not blessed" in out.stderr and "Traceback" not in out.stderr


def test_registry_cli_lists_and_describes_versions(tmp_path, params, mlflow_server, capsys):
    from lpdvae.cli import main

    register_version(tmp_path, params, "v1", blessed=True, recon_f1=0.5)
    register_version(tmp_path, params, "v2", blessed=False, recon_f1=0.4)
    base = ["--params", str(REPO / "params.yaml"), "--set", f"mlflow.tracking_uri={mlflow_server}",
            "--set", f"register.model_name={params.register.model_name}", "registry"]
    capsys.readouterr()  # drop MLflow's "View run" lines printed while registering
    assert main([*base, "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["version"], r["blessed"], sorted(r["aliases"])) for r in rows] == [
        ("1", True, ["challenger", "champion"]), ("2", False, [])]
    assert main([*base, "describe", "2", "--json"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert described["tags"]["lpdvae.blessing_reasons"] == "recon_note_f1 too low"
    assert main([*base, "describe", "9"]) == 1
    assert "has no version 9" in capsys.readouterr().err
