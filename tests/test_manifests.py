"""Every kustomize overlay renders and every object validates against the Kubernetes schemas."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
OVERLAYS = sorted(p.name for p in (REPO / "infra" / "k8s" / "overlays").iterdir())
K8S_VERSION = "1.32.0"
CRD_GROUPS = ("kubeflow.org/",)  # PyTorchJob: no schema ships with kubernetes-validate


@pytest.fixture(scope="module")
def k8s_tree(tmp_path_factory) -> Path:
    """A copy of infra/k8s with the secret env files made from their .example templates."""
    dest = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(REPO / "infra" / "k8s", dest)
    for example in dest.rglob("*.env.example"):
        example.with_suffix("").write_text(example.read_text())
    return dest


def render(tree: Path, overlay: str) -> list[dict]:
    out = subprocess.run(["kubectl", "kustomize", str(tree / "overlays" / overlay)],
                         capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates_against_kubernetes_schemas(k8s_tree, overlay):
    docs = render(k8s_tree, overlay)
    assert docs
    for doc in docs:
        if doc["apiVersion"].startswith(CRD_GROUPS):
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_runs_as_non_root_with_resource_limits(k8s_tree, overlay):
    for doc in render(k8s_tree, overlay):
        spec = doc.get("spec", {})
        templates = [spec.get("template")] if "template" in spec else [
            r["template"] for r in spec.get("pytorchReplicaSpecs", {}).values()]
        for template in filter(None, templates):
            pod = template["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True, doc["metadata"]["name"]
            for c in pod["containers"]:
                assert c["resources"]["limits"], (doc["metadata"]["name"], c["name"])
                assert c["securityContext"]["allowPrivilegeEscalation"] is False


def test_secret_templates_hold_no_real_values():
    for example in (REPO / "infra" / "k8s").rglob("*.env.example"):
        for line in example.read_text().splitlines():
            if "PASSWORD" in line or "SECRET" in line:
                assert line.endswith("=CHANGE_ME"), (example, line)
    tracked = subprocess.run(["git", "ls-files", "infra/k8s"], cwd=REPO, capture_output=True, text=True).stdout
    assert not [f for f in tracked.split() if f.endswith(".env")], "real secret env files must not be committed"


def test_gpu_overlay_requests_gpus_for_training(k8s_tree):
    job = next(d for d in render(k8s_tree, "gpu-cluster") if d["kind"] == "PyTorchJob")
    container = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    env = {e["name"]: e for e in container["env"]}
    assert "secretKeyRef" in env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]
