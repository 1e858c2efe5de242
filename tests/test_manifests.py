"""Every kustomize overlay renders (`kubectl kustomize`, offline) and every object validates
against the Kubernetes 1.32 schemas (kubernetes-validate, strict); plus the security rules the
manifests promise. CRDs (the Training Operator's PyTorchJob) have no schema there and are only
checked for shape."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "infra" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").exists())
K8S_VERSION = "1.32.0"
CRD_GROUPS = ("kubeflow.org/",)
POD_KINDS = {"Deployment": ("spec", "template"), "StatefulSet": ("spec", "template"), "Job": ("spec", "template"),
             "CronJob": ("spec", "jobTemplate", "spec", "template")}
KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed (kubectl kustomize renders)")


@pytest.fixture(scope="module")
def k8s_tree(tmp_path_factory) -> Path:
    """A copy of infra/ with every secret env file made from its .env.example template (and an
    empty stand-in for infra/k8s/training while that change is not here)."""
    dest = tmp_path_factory.mktemp("infra") / "infra"
    shutil.copytree(REPO / "infra", dest, ignore=shutil.ignore_patterns("*.env"))
    for example in dest.rglob("*.env.example"):
        example.with_suffix("").write_text(example.read_text())
    training = dest / "k8s" / "training" / "kustomization.yaml"
    if not training.exists():
        training.parent.mkdir(parents=True, exist_ok=True)
        training.write_text("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: []\n")
    return dest / "k8s"


def render(tree: Path, overlay: str) -> list[dict[str, Any]]:
    proc = subprocess.run([KUBECTL, "kustomize", str(tree / "overlays" / overlay)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod specs inside a workload (a PyTorchJob has one per replica type)."""
    if doc["kind"] in POD_KINDS:
        node = doc
        for key in POD_KINDS[doc["kind"]]:
            node = node[key]
        return [node["spec"]]
    replicas = doc.get("spec", {}).get("pytorchReplicaSpecs", {})
    return [r["template"]["spec"] for r in replicas.values()]


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates_against_kubernetes_schemas(k8s_tree, overlay):
    docs = render(k8s_tree, overlay)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "StatefulSet", "Service", "ServiceAccount", "Role", "RoleBinding", "CronJob"} <= kinds
    for doc in docs:
        if doc["apiVersion"].startswith(CRD_GROUPS):
            assert doc["metadata"].get("namespace"), f"{doc['kind']} {doc['metadata']['name']} has no namespace"
            continue  # no schema for CRDs in kubernetes-validate: shape checked in the other tests
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_non_root_restricted_and_bounded(k8s_tree, overlay):
    for doc in render(k8s_tree, overlay):
        for pod in pod_specs(doc):
            name = f"{doc['kind']}/{doc['metadata']['name']}"
            assert pod["securityContext"]["runAsNonRoot"] is True, name
            # namespace lpdvae enforces the "restricted" Pod Security Standard, CRD pods included
            assert pod["securityContext"].get("seccompProfile", {}).get("type") == "RuntimeDefault", name
            for c in pod["containers"]:
                assert c["resources"]["requests"] and c["resources"]["limits"], (name, c["name"])
                assert c["securityContext"]["allowPrivilegeEscalation"] is False, (name, c["name"])
                assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], (name, c["name"])
                if doc["kind"] != "PyTorchJob":
                    assert c["securityContext"].get("readOnlyRootFilesystem") is True, (name, c["name"])


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rbac_is_namespaced_and_least_privilege(k8s_tree, overlay):
    docs = render(k8s_tree, overlay)
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Role"}
    for role in roles.values():
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], role["metadata"]["name"]
            if "secrets" in rule["resources"] or "configmaps" in rule["resources"]:
                assert rule.get("resourceNames"), "secret/configmap reads are limited to named objects"
            assert not {"delete", "deletecollection", "escalate", "bind", "impersonate"} & set(rule["verbs"])
    sa = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}
    for name in ("mlflow", "postgres", "lpdvae-scheduler"):
        assert sa[name].get("automountServiceAccountToken") is False, name
    runner_ns = sa["lpdvae-pipeline"]["metadata"]["namespace"]
    binding = next(d for d in docs if d["kind"] == "RoleBinding" and d["metadata"]["name"] == "lpdvae-pipeline")
    assert binding["subjects"][0]["namespace"] == runner_ns == binding["metadata"]["namespace"]


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_pipeline_config_and_secrets_exist_where_runs_execute(k8s_tree, overlay):
    docs = render(k8s_tree, overlay)
    runner_ns = next(d for d in docs if d["kind"] == "ServiceAccount"
                     and d["metadata"]["name"] == "lpdvae-pipeline")["metadata"]["namespace"]
    here = {(d["kind"], d["metadata"]["name"]) for d in docs if d["metadata"].get("namespace") == runner_ns}
    # the names pipelines/training.py ClusterConfig refers to
    for obj in [("ConfigMap", "lpdvae-config"), ("Secret", "lpdvae-s3"), ("Secret", "lpdvae-mlflow-client"),
                ("CronJob", "lpdvae-retrain")]:
        assert obj in here, (obj, runner_ns)
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "lpdvae-config")
    assert config["data"]["MLFLOW_TRACKING_URI"].startswith("http://mlflow.lpdvae.svc")
    cron = next(d for d in docs if d["kind"] == "CronJob")
    assert cron["spec"]["suspend"] is True, "KFP recurring runs are the default scheduler"


@needs_kubectl
def test_mlflow_uses_postgres_s3_and_basic_auth(k8s_tree):
    docs = render(k8s_tree, "local")
    mlflow = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "mlflow")
    script = mlflow["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert "--app-name basic-auth" in script and "postgresql://" in script and "--artifacts-destination" in script
    env = {e["name"]: e for e in mlflow["spec"]["template"]["spec"]["containers"][0]["env"]}
    for name in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "AWS_SECRET_ACCESS_KEY"):
        assert "secretKeyRef" in env[name]["valueFrom"], name
    assert any(d["kind"] == "Deployment" and d["metadata"]["name"] == "minio" for d in docs)


def test_secret_templates_hold_no_real_values_and_real_ones_are_ignored():
    examples = list(K8S.rglob("*.env.example"))
    assert len(examples) >= 4
    for example in examples:
        for line in example.read_text().splitlines():
            key = line.split("=", 1)[0]
            if not line.startswith("#") and any(w in key for w in ("PASSWORD", "SECRET", "ACCESS_KEY")):
                assert line.endswith("=CHANGE_ME"), (example, line)
        ignore = example.parent / ".gitignore"
        assert ignore.exists() and "*.env" in ignore.read_text().split(), example.parent
    tracked = subprocess.run(["git", "ls-files", "infra"], cwd=REPO, capture_output=True, text=True).stdout.split()
    assert not [f for f in tracked if f.endswith(".env")], "real secret env files must never be committed"


@needs_kubectl
def test_gpu_overlay_trains_on_gpus_with_the_cuda_image(k8s_tree):
    docs = render(k8s_tree, "gpu-cluster")
    jobs = [d for d in docs if d["kind"] == "PyTorchJob"]
    if not (K8S / "training" / "kustomization.yaml").exists():
        pytest.skip("infra/k8s/training (the PyTorchJob, written in another change) is not here yet")
    assert jobs, "the gpu-cluster overlay includes infra/k8s/training"
    for pod in pod_specs(jobs[0]):
        for c in pod["containers"]:
            assert "nvidia.com/gpu" in c["resources"]["limits"]
            assert c["image"].endswith("-cuda")
            assert not [e for e in c.get("env", []) if "value" in e and "SECRET" in e["name"]]


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_retraining_cronjob_runs_the_small_cpu_image_in_every_overlay(k8s_tree, overlay):
    cron = next(d for d in render(k8s_tree, overlay) if d["kind"] == "CronJob")
    images = {c["image"] for pod in pod_specs(cron) for c in containers(pod)}
    assert len(images) == 1, images
    image = images.pop()
    assert image.startswith("ghcr.io/lpdvae/lpdvae:") and not image.endswith("-cuda"), (overlay, image)


def rules(role: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    """(apiGroup, resource, verb, resourceName or '*') of every permission a Role grants."""
    return {(g, r, v, n) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"] for n in rule.get("resourceNames", ["*"])}


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_pipeline_role_grants_only_what_the_argo_executor_and_kfp_launcher_use(k8s_tree, overlay):
    role = next(d for d in render(k8s_tree, overlay) if d["kind"] == "Role"
                and d["metadata"]["name"] == "lpdvae-pipeline")
    granted = rules(role)
    assert not {r for r in granted if r[1] in ("pods", "pods/log")}, "the emissary executor needs no pod access"
    assert granted == PIPELINE_RULES


PIPELINE_RULES = {
    ("argoproj.io", "workflowtaskresults", "create", "*"),  # Argo >= 3.4 executor: step outputs
    ("argoproj.io", "workflowtaskresults", "patch", "*"),
    ("", "configmaps", "get", "kfp-launcher"),  # KFP launcher: pipeline root, object store
    ("", "configmaps", "get", "metadata-grpc-configmap"),
    ("", "secrets", "get", "mlpipeline-minio-artifact"),
}
