"""Every kustomize overlay renders (`kubectl kustomize`, offline; CI installs kubectl) and every
object validates against the Kubernetes 1.32 schemas (kubernetes-validate, strict); plus the
security rules the manifests promise: every pod spec, CRD-templated ones included, passes the
`restricted` Pod Security Standard. The Trainer v2 ClusterTrainingRuntime has no schema there:
its pod templates are validated as batch/v1 Jobs."""

from __future__ import annotations

import json
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
CRD_GROUPS = ("trainer.kubeflow.org/",)
CLUSTER_SCOPED_CRDS = {"ClusterTrainingRuntime"}
POD_KINDS = {"Deployment": ("spec", "template"), "StatefulSet": ("spec", "template"), "Job": ("spec", "template"),
             "CronJob": ("spec", "jobTemplate", "spec", "template")}
FAILURE_POLICY_SCHEMA = REPO / "tests" / "contracts" / "trainer" / "clustertrainingruntime-failurepolicy-v1alpha1.schema.json"
KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed here (CI installs it): "
                                   "`kubectl kustomize` renders the overlays these tests check")


@pytest.fixture(scope="module")
def k8s_tree(tmp_path_factory) -> Path:
    """A copy of infra/ with every secret env file made from its .env.example template."""
    dest = tmp_path_factory.mktemp("infra") / "infra"
    shutil.copytree(REPO / "infra", dest, ignore=shutil.ignore_patterns("*.env"))
    for example in dest.rglob("*.env.example"):
        example.with_suffix("").write_text(example.read_text())
    return dest / "k8s"


def render(tree: Path, overlay: str) -> list[dict[str, Any]]:
    proc = subprocess.run([KUBECTL, "kustomize", str(tree / "overlays" / overlay)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod specs inside a workload (a training runtime has one per replicated job)."""
    if doc["kind"] in POD_KINDS:
        node = doc
        for key in POD_KINDS[doc["kind"]]:
            node = node[key]
        return [node["spec"]]
    if doc["kind"] in ("ClusterTrainingRuntime", "TrainingRuntime"):
        return [j["template"]["spec"]["template"]["spec"] for j in doc["spec"]["template"]["spec"]["replicatedJobs"]]
    return []


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def rules(role: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    """(apiGroup, resource, verb, resourceName or '*') of every permission a Role grants."""
    return {(g, r, v, n) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"] for n in rule.get("resourceNames", ["*"])}


PIPELINE_RULES = {
    ("argoproj.io", "workflowtaskresults", "create", "*"),  # Argo >= 3.4 executor: step outputs
    ("argoproj.io", "workflowtaskresults", "patch", "*"),
    ("trainer.kubeflow.org", "trainjobs", "create", "*"),  # multi-node train: one job per attempt
    ("trainer.kubeflow.org", "trainjobs", "get", "*"),  # poll it
    ("trainer.kubeflow.org", "trainjobs", "list", "*"),  # a retry finds the run's jobs
    ("trainer.kubeflow.org", "trainjobs", "delete", "*"),  # timeout, and the exit handler of a failed run
    ("argoproj.io", "workflows", "get", "*"),  # the run's Workflow owns its TrainJobs
    ("", "configmaps", "get", "kfp-launcher"),  # KFP launcher: pipeline root, object store
    ("", "configmaps", "get", "metadata-grpc-configmap"),
    ("", "secrets", "get", "mlpipeline-minio-artifact"),
}


RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What keeps a pod spec out of a namespace enforcing the `restricted` Pod Security Standard
    (Kubernetes 1.32 policy: baseline + restricted rules), for every container and initContainer."""
    out = [f"spec.{k}" for k in ("hostNetwork", "hostPID", "hostIPC") if pod.get(k)]
    psc = pod.get("securityContext", {})
    out += [f"volume {v['name']}: {kind}" for v in pod.get("volumes", [])
            for kind in set(v) - {"name"} if kind not in RESTRICTED_VOLUMES]
    out += [f"sysctl {s['name']}" for s in psc.get("sysctls", [])]
    if psc.get("runAsUser") == 0:
        out.append("pod runAsUser 0")
    for c in [*pod.get("initContainers", []), *pod["containers"], *pod.get("ephemeralContainers", [])]:
        sc, name = c.get("securityContext", {}), c["name"]
        if sc.get("privileged"):
            out.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name}: allowPrivilegeEscalation is not false")
        if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
            out.append(f"{name}: runAsNonRoot is not true")
        if sc.get("runAsUser") == 0:
            out.append(f"{name}: runAsUser 0")
        seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{name}: seccompProfile {seccomp}")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            out.append(f"{name}: capabilities not dropped (ALL)")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            out.append(f"{name}: adds capabilities {caps['add']}")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            out.append(f"{name}: hostPort")
        if sc.get("procMount", "Default") != "Default":
            out.append(f"{name}: procMount")
    return out


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates_against_kubernetes_schemas(k8s_tree, overlay):
    docs = render(k8s_tree, overlay)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "StatefulSet", "Service", "ServiceAccount", "Role", "RoleBinding", "CronJob"} <= kinds
    for doc in docs:
        if doc["apiVersion"].startswith(CRD_GROUPS):
            scoped = doc["kind"] in CLUSTER_SCOPED_CRDS
            assert bool(doc["metadata"].get("namespace")) != scoped, f"{doc['kind']} {doc['metadata']['name']}"
            for job in doc["spec"]["template"]["spec"]["replicatedJobs"]:  # its pods, as Kubernetes Jobs
                kubernetes_validate.validate({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": job["name"]},
                                              "spec": job["template"]["spec"]}, K8S_VERSION, strict=True)
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_spec_passes_the_restricted_pod_security_standard(k8s_tree, overlay):
    docs = render(k8s_tree, overlay)
    checked = 0
    for doc in docs:
        for pod in pod_specs(doc):
            checked += 1
            assert not restricted_violations(pod), (f"{doc['kind']}/{doc['metadata']['name']}",
                                                    restricted_violations(pod))
    assert checked == sum(d["kind"] in (*POD_KINDS, "ClusterTrainingRuntime") for d in docs)
    assert {d["kind"] for d in docs} & {"Pod", "ReplicaSet", "DaemonSet"} == set(), "a pod kind not checked"


def test_the_restricted_check_catches_each_kind_of_violation():
    ok = {"securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
          "containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": False,
                                                           "capabilities": {"drop": ["ALL"]}}}]}
    assert restricted_violations(ok) == []
    c = ok["containers"][0]
    bad = [{**ok, "hostNetwork": True}, {**ok, "volumes": [{"name": "h", "hostPath": {"path": "/"}}]},
           {**ok, "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}},
           {**ok, "securityContext": {"runAsNonRoot": True}},
           {**ok, "initContainers": [{"name": "init"}]},  # an init container is checked too
           {**ok, "containers": [{**c, "securityContext": {**c["securityContext"], "privileged": True}}]},
           {**ok, "containers": [{**c, "securityContext": {"allowPrivilegeEscalation": False}}]},
           {**ok, "containers": [{**c, "ports": [{"containerPort": 80, "hostPort": 80}]}]}]
    for pod in bad:
        assert restricted_violations(pod), pod


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_bounded_and_read_only(k8s_tree, overlay):
    for doc in render(k8s_tree, overlay):
        for pod in pod_specs(doc):
            for c in containers(pod):
                name = (f"{doc['kind']}/{doc['metadata']['name']}", c["name"])
                assert c["resources"]["requests"] and c["resources"]["limits"], name
                assert c["securityContext"].get("readOnlyRootFilesystem") is True, name


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
            assert not {"deletecollection", "escalate", "bind", "impersonate"} & set(rule["verbs"])
            if "delete" in rule["verbs"]:  # only the pipeline's own TrainJobs (a cancelled run's GPUs)
                assert rule["resources"] == ["trainjobs"], role["metadata"]["name"]
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
    from pipelines.training import ClusterConfig

    cfg = ClusterConfig()  # the names the compiled pipeline refers to
    for obj in [("ConfigMap", cfg.config_map), ("Secret", cfg.data_secret), ("Secret", cfg.artifacts_secret),
                ("Secret", cfg.mlflow_secret), ("CronJob", "lpdvae-retrain")]:
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
def test_gpu_overlay_ships_the_trainer_v2_torch_runtime_on_gpu_nodes_with_the_cuda_image(k8s_tree):
    docs = render(k8s_tree, "gpu-cluster")
    runtime = next(d for d in docs if d["kind"] == "ClusterTrainingRuntime")
    from components.trainjob import RUNTIME

    assert runtime["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and runtime["metadata"]["name"] == RUNTIME
    assert runtime["metadata"]["labels"]["trainer.kubeflow.org/framework"] == "torch"
    assert "torch" in runtime["spec"]["mlPolicy"]
    [job] = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    assert job["template"]["metadata"]["labels"]["trainer.kubeflow.org/trainjob-ancestor-step"] == "trainer"
    [pod] = pod_specs(runtime)
    [node] = pod["containers"]
    assert node["name"] == "node", "the container the Trainer fills from TrainJob.spec.trainer"
    assert node["image"].endswith("-cuda")
    assert {"/work", "/tmp", "/dev/shm"} <= {m["mountPath"] for m in node["volumeMounts"]}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert not [e for e in node.get("env", []) if "SECRET" in e["name"] or "PASSWORD" in e["name"]]


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_retraining_cronjob_runs_the_small_cpu_image_in_every_overlay(k8s_tree, overlay):
    cron = next(d for d in render(k8s_tree, overlay) if d["kind"] == "CronJob")
    images = {c["image"] for pod in pod_specs(cron) for c in containers(pod)}
    assert len(images) == 1, images
    image = images.pop()
    assert image.startswith("ghcr.io/lpdvae/lpdvae:") and not image.endswith("-cuda"), (overlay, image)


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_pipeline_role_grants_only_what_the_argo_executor_and_kfp_launcher_use(k8s_tree, overlay):
    role = next(d for d in render(k8s_tree, overlay) if d["kind"] == "Role"
                and d["metadata"]["name"] == "lpdvae-pipeline")
    granted = rules(role)
    assert not {r for r in granted if r[1] in ("pods", "pods/log")}, "the emissary executor needs no pod access"
    assert granted == PIPELINE_RULES


@needs_kubectl
def test_the_training_runtime_gang_schedules_its_nodes(k8s_tree):
    runtime = next(d for d in render(k8s_tree, "gpu-cluster") if d["kind"] == "ClusterTrainingRuntime")
    policy = runtime["spec"]["podGroupPolicy"]
    assert list(policy) == ["coscheduling"] and policy["coscheduling"]["scheduleTimeoutSeconds"] > 0


@needs_kubectl
def test_the_training_runtime_restarts_every_node_of_a_failed_job_so_they_resume(k8s_tree):
    import jsonschema

    runtime = next(d for d in render(k8s_tree, "gpu-cluster") if d["kind"] == "ClusterTrainingRuntime")
    jobset = runtime["spec"]["template"]["spec"]
    policy = jobset["failurePolicy"]
    jsonschema.validate(policy, json.loads(FAILURE_POLICY_SCHEMA.read_text()))
    assert policy["maxRestarts"] >= 1 and policy["restartStrategy"] == "Recreate", "all ranks restart together"
    [job] = jobset["replicatedJobs"]
    assert job["template"]["spec"]["backoffLimit"] == 0, "a failed pod fails its Job; JobSet restarts them all"


def test_the_vendored_failure_policy_schema_rejects_what_the_api_server_would():
    import jsonschema

    schema = json.loads(FAILURE_POLICY_SCHEMA.read_text())
    jsonschema.validate({"maxRestarts": 3, "restartStrategy": "Recreate"}, schema)
    for bad in ({"maxRestart": 3}, {"maxRestarts": "3"}, {"restartStrategy": "Always"},
                {"maxRestarts": 2**31}, {"rules": [{"action": "Retry", "name": "r"}]}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def secret_refs(pod: dict[str, Any]) -> set[str]:
    """Names of the Secrets a pod's containers read (env and envFrom)."""
    out = set()
    for c in containers(pod):
        out |= {e["valueFrom"]["secretKeyRef"]["name"] for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
        out |= {e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e}
    return out


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_mlflows_artifact_store_key_stays_in_the_mlflow_namespace(k8s_tree, overlay):
    docs = render(k8s_tree, overlay)
    where = {d["metadata"]["name"]: d["metadata"].get("namespace") for d in docs if d["kind"] == "Secret"}
    assert where["lpdvae-mlflow-s3"] == "lpdvae"
    assert where["lpdvae-data-s3"] == where["lpdvae-artifacts-s3"] != "lpdvae", "the pipeline's keys: runner only"
    mlflow = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "mlflow")
    assert secret_refs(pod_specs(mlflow)[0]) == {"lpdvae-postgres", "lpdvae-mlflow-admin", "lpdvae-mlflow-s3"}


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_mlflow_admits_only_lpdvae_pods_of_the_runner_namespace_and_its_own(k8s_tree, overlay):
    docs = render(k8s_tree, overlay)
    runner_ns = next(d for d in docs if d["kind"] == "ServiceAccount"
                     and d["metadata"]["name"] == "lpdvae-pipeline")["metadata"]["namespace"]
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "mlflow-from-pipeline")
    assert policy["spec"]["podSelector"] == {"matchLabels": {"app": "mlflow"}}
    [rule] = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 5000}]
    lpdvae = {"matchLabels": {"app.kubernetes.io/part-of": "lpdvae"}}
    assert rule["from"] == [{"podSelector": lpdvae},
                            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": runner_ns}},
                             "podSelector": lpdvae}]
    user_job = next(d for d in docs if d["kind"] == "Job" and d["metadata"]["name"] == "mlflow-pipeline-user")
    assert user_job["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/part-of"] == "lpdvae"


@needs_kubectl
def test_mlflow_refuses_to_start_with_a_placeholder_secret(k8s_tree, tmp_path):
    mlflow = next(d for d in render(k8s_tree, "gpu-cluster")
                  if d["kind"] == "Deployment" and d["metadata"]["name"] == "mlflow")
    script = pod_specs(mlflow)[0]["containers"][0]["args"][0]
    for tool in ("env", "sed", "tr"):  # PATH: the image's tools, but no mlflow to start past the check
        (tmp_path / tool).symlink_to(shutil.which(tool))
    env = {"PATH": str(tmp_path), "POSTGRES_PASSWORD": "CHANGE_ME", "POSTGRES_USER": "u", "POSTGRES_DB": "d",
           "MLFLOW_ARTIFACTS_DESTINATION": "s3://b/a"}
    refused = subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True)
    assert refused.returncode == 1 and "CHANGE_ME" in refused.stderr and "POSTGRES_PASSWORD" in refused.stderr
    started = subprocess.run(["/bin/sh", "-c", script], env={**env, "POSTGRES_PASSWORD": "a-real-one"},
                             capture_output=True, text=True)
    assert started.returncode == 127, "past the check: it tried to exec mlflow"
