"""Audit on a real MLflow server and a real git + DVC repository: the printed restore commands
bring back the exact training tensors (hash-equal)."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest
import yaml

from lpdvae.cli import main
from lpdvae.errors import RegistryError
from lpdvae.params import params_from_dict
from lpdvae.registry.aliases import client
from lpdvae.registry.audit import lineage, versions_for_dataset
from lpdvae.registry.lineage import dvc_hash, git_revision
from lpdvae.registry.lineage import lineage as lineage_tags
from lpdvae.steps.register import register
from tests.conftest import BIN, REPO
from tests.evalkit import make_model, make_tensors, write_eval
from tests.project import TINY, deep_merge

pytestmark = pytest.mark.slow  # every test registers on the MLflow server (moto S3 behind it)


@pytest.fixture
def params(mlflow_server):
    """tests/project.py's tiny params on the session's MLflow server, under a fresh model name."""
    raw = deep_merge(yaml.safe_load((REPO / "params.yaml").read_text()), TINY)
    raw["mlflow"] = {"tracking_uri": mlflow_server, "experiment": "audit-tests"}
    raw["register"]["model_name"] = f"lpdvae-{uuid.uuid4().hex[:8]}"
    return params_from_dict(raw, "tiny params")


def sh(cmd: str, cwd) -> str:
    env_path = f"{BIN}:/usr/bin:/bin"
    proc = subprocess.run(["bash", "-c", cmd], cwd=cwd, capture_output=True, text=True,
                          env={"PATH": env_path, "HOME": str(cwd), "GIT_CONFIG_NOSYSTEM": "1"})
    assert proc.returncode == 0, f"{cmd}: {proc.stdout}\n{proc.stderr}"
    return proc.stdout


def data_repo(root, params):
    """git + DVC repo with raw/validated stand-ins and tensors tracked by `dvc add`, committed."""
    root.mkdir()
    sh("git init -q -b main && git config user.email a@lpdvae.invalid && git config user.name audit"
       " && dvc init -q && dvc config core.analytics false", root)
    (root / "data" / "raw").mkdir(parents=True)
    (root / "data" / "raw" / "manifest.jsonl").write_text(
        json.dumps({"path": "files/a.mid", "source": params.data.source}) + "\n")
    (root / "data" / "validated").mkdir()
    (root / "data" / "validated" / "quarantine.jsonl").write_text('{"path": "files/b.mid"}\n' * 2)
    make_tensors(root / "data" / "tensors", params, seed=0)
    sh("dvc add -q data/raw data/validated data/tensors && git add -A && git commit -qm data-v1", root)
    return root


def register_with(tmp_path, params, name: str, lineage_tags: dict[str, str]):
    model = make_model(tmp_path / f"{name}-model", params)
    evaluation = write_eval(tmp_path / f"{name}-eval", True, 0.5)
    return register(model, evaluation, tmp_path / f"{name}.json", params, lineage=lineage_tags,
                    tensor_dir=tmp_path / "repo" / "data" / "tensors", report_dir=tmp_path / f"{name}-report")


def test_audit_restore_commands_bring_back_the_exact_tensors(tmp_path, params, capsys):
    repo = data_repo(tmp_path / "repo", params)
    data = repo / "data"
    tags = lineage_tags(data / "raw", data / "validated", data / "tensors", git_revision=git_revision(repo),
                        params_digest=params.digest(), run_id="audit-run-1")
    trained_on = tags["lpdvae.dvc.tensors"]
    assert trained_on == dvc_hash(repo / "data" / "tensors") and trained_on.endswith(".dir")
    assert tags["lpdvae.quarantined"] == "2" and len(tags["lpdvae.manifest_sha256"]) == 64
    register_with(tmp_path, params, "v1", tags)

    make_tensors(repo / "data" / "tensors", params, seed=1)  # the data moves on
    sh("dvc add -q data/tensors && git add -A && git commit -qm data-v2", repo)
    assert dvc_hash(repo / "data" / "tensors") != trained_on

    info = lineage(params, f"models:/{params.register.model_name}@champion")
    assert info["data"]["tensors"] == trained_on
    assert info["git_revision"] == tags["lpdvae.git_revision"] and not info["git_dirty"]
    assert info["params_digest"] == params.digest() and info["quarantined"] == "2"
    assert info["source"] == params.data.source
    assert info["manifest_sha256"] == tags["lpdvae.manifest_sha256"] and info["pipeline_run_id"] == "audit-run-1"
    restore = info["restore"][0]
    assert restore == f"git checkout {tags['lpdvae.git_revision']} && dvc checkout data/tensors"
    sh(restore, repo)
    assert dvc_hash(repo / "data" / "tensors") == trained_on

    args = ["--params", str(REPO / "params.yaml"), "--set", f"mlflow.tracking_uri={params.mlflow.tracking_uri}"]
    capsys.readouterr()
    assert main([*args, "audit", f"models:/{params.register.model_name}/1"]) == 0
    text = capsys.readouterr().out
    for needle in (trained_on, tags["lpdvae.git_revision"], params.digest(), restore, "2 songs quarantined"):
        assert needle in text
    assert main([*args, "audit", f"models:/{params.register.model_name}@champion", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["data"]["tensors"] == trained_on


def test_audit_by_dataset_lists_the_versions_trained_on_it(tmp_path, params, capsys):
    run_id = json.loads((make_model(tmp_path / "m", params) / "mlflow_run.json").read_text())["run_id"]
    c = client(params)  # versions with lineage tags only: register() itself is covered above
    c.create_registered_model(params.register.model_name)
    for h in ("aaa.dir", "bbb.dir", "aaa.dir"):
        c.create_model_version(params.register.model_name, f"runs:/{run_id}/none", run_id=run_id,
                               tags={"lpdvae.dvc.tensors": h, "lpdvae.git_revision": "cafe"})
    assert [r["version"] for r in versions_for_dataset(params, "aaa.dir")] == ["1", "3"]
    assert [r["version"] for r in versions_for_dataset(params, "aaa")] == ["1", "3"]  # .dir optional
    args = ["--params", str(REPO / "params.yaml"), "--set", f"mlflow.tracking_uri={params.mlflow.tracking_uri}",
            "--set", f"register.model_name={params.register.model_name}"]
    capsys.readouterr()  # drop MLflow's "View run" lines printed while registering
    assert main([*args, "audit", "--dataset", "bbb.dir", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["version"], r["stage"], r["git_revision"]) for r in rows] == [("2", "tensors", "cafe")]
    assert main([*args, "audit", "--dataset", "nope.dir"]) == 0
    assert "no model version was trained on that dataset" in capsys.readouterr().out


def test_audit_of_an_unknown_model_is_a_registry_error(params):
    with pytest.raises(RegistryError, match="not in the registry"):
        lineage(params, f"models:/{params.register.model_name}/7")
    with pytest.raises(RegistryError, match="expected models:/NAME/VERSION"):
        lineage(params, "runs:/abc/model")
