"""The compiled KFP IR: six step tasks, typed artifacts, GPU on train, secrets only by reference."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
STEPS = ["ingest", "validate", "tensorize", "train", "evaluate", "register"]


@pytest.fixture(scope="module")
def ir(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("ir") / "pipeline.yaml"
    env = {"PATH": str(Path(sys.executable).parent), "HOME": str(out.parent),
           "AWS_SECRET_ACCESS_KEY": "SUPER-SECRET-VALUE-123", "MLFLOW_TRACKING_PASSWORD": "hunter2-secret"}
    subprocess.run([sys.executable, "-m", "pipelines", "compile", "--out", str(out)],
                   cwd=REPO, env=env, check=True, capture_output=True)
    docs = list(yaml.safe_load_all(out.read_text()))
    return {"spec": docs[0], "platform": docs[1] if len(docs) > 1 else {}, "text": out.read_text()}


def tasks(spec: dict) -> dict:
    dag = dict(spec["root"]["dag"]["tasks"])
    for name, task in list(dag.items()):
        if task.get("componentRef", {}).get("name", "").startswith("comp-condition"):
            dag.update(spec["components"][task["componentRef"]["name"]]["dag"]["tasks"])
    return dag


def test_pipeline_has_the_six_step_tasks(ir):
    names = set(tasks(ir["spec"]))
    for step in STEPS:
        assert any(n.startswith(f"{step}-op") for n in names), names


def artifact_types(spec: dict, component: str, io: str) -> dict[str, str]:
    defs = spec["components"][f"comp-{component}-op"][io].get("artifacts", {})
    return {k: v["artifactType"]["schemaTitle"] for k, v in defs.items()}


def test_step_outputs_have_the_right_artifact_types(ir):
    spec = ir["spec"]
    assert artifact_types(spec, "ingest", "outputDefinitions") == {"raw": "system.Dataset"}
    assert artifact_types(spec, "validate", "outputDefinitions") == {"validated": "system.Dataset",
                                                                    "data_docs": "system.HTML"}
    assert artifact_types(spec, "train", "outputDefinitions") == {"model": "system.Model",
                                                                 "metrics": "system.Metrics"}
    assert artifact_types(spec, "evaluate", "outputDefinitions") == {
        "evaluation": "system.Dataset", "samples_page": "system.HTML", "metrics": "system.Metrics",
        "blessing": "system.Markdown"}
    assert artifact_types(spec, "train", "inputDefinitions") == {"tensors": "system.Dataset"}


def test_register_runs_only_when_evaluation_blesses(ir):
    spec = ir["spec"]
    cond = next(t for t in spec["root"]["dag"]["tasks"].values()
                if t.get("componentRef", {}).get("name", "").startswith("comp-condition"))
    assert "blessed" in cond["triggerPolicy"]["condition"]
    inner = spec["components"][cond["componentRef"]["name"]]["dag"]["tasks"]
    assert any(n.startswith("register-op") for n in inner)


def test_train_task_requests_a_gpu_with_toleration_and_node_selector(ir):
    train_exec = next(v for k, v in ir["spec"]["deploymentSpec"]["executors"].items() if "train-op" in k)
    assert train_exec["container"]["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    k8s = ir["platform"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    train_k8s = next(v for k, v in k8s.items() if "train-op" in k)
    assert train_k8s["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert train_k8s["nodeSelector"]["labels"]
    assert train_k8s["secretAsEnv"][0]["secretName"] == "lpdvae-s3"


def test_every_params_section_is_a_pipeline_parameter_with_its_default(ir):
    params = ir["spec"]["root"]["inputDefinitions"]["parameters"]
    for section in ["data", "tracks", "representation", "validate", "tensorize", "model", "train",
                    "evaluate", "register", "mlflow"]:
        assert "defaultValue" in params[section]
    assert '"epochs": 8' in params["train"]["defaultValue"]


def test_no_secret_value_reaches_the_compiled_yaml(ir):
    assert "SUPER-SECRET-VALUE-123" not in ir["text"]
    assert "hunter2-secret" not in ir["text"]
