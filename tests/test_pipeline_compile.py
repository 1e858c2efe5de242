"""The compiled KFP IR: the six steps with typed artifacts, every knob a parameter, register after
every evaluation, tensorize fanned out, GPU on train, config and secrets only by reference."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.knobs import knobs
from lpdvae.params import load_params

REPO = Path(__file__).resolve().parents[1]
SECRETS = {"AWS_SECRET_ACCESS_KEY": "SUPER-SECRET-VALUE-123", "MLFLOW_TRACKING_PASSWORD": "hunter2-secret",
           "AWS_ACCESS_KEY_ID": "AKIAEXAMPLESECRET42", "KFP_TOKEN": "kfp-bearer-secret-token"}
KFP_TYPES = {bool: "BOOLEAN", int: "NUMBER_INTEGER", float: "NUMBER_DOUBLE", str: "STRING", list: "LIST",
             dict: "STRUCT"}


def compile_ir(tmp: Path, *args: str) -> dict[str, Any]:
    """`python -m pipelines compile` (in this process) while the environment holds secret values."""
    from pipelines.__main__ import main

    out = tmp / f"pipeline-{abs(hash(args))}.yaml"
    with pytest.MonkeyPatch.context() as mp:
        for key, value in SECRETS.items():
            mp.setenv(key, value)
        assert main(["--params", str(REPO / "params.yaml"), "compile", "--out", str(out), *args]) == 0
    return parse(out.read_text())


def parse(text: str) -> dict[str, Any]:
    docs = list(yaml.safe_load_all(text))
    return {"spec": docs[0], "platform": docs[1]["platforms"]["kubernetes"] if len(docs) > 1 else {}, "text": text}


@pytest.fixture(scope="module")
def ir(tmp_path_factory) -> dict[str, Any]:
    return compile_ir(tmp_path_factory.mktemp("ir"))


def all_tasks(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every task of the DAG, nested ones (condition, loop) included, by task name."""
    out: dict[str, dict[str, Any]] = {}

    def walk(dag: dict[str, Any]) -> None:
        for name, task in dag["tasks"].items():
            out[name] = task
            inner = spec["components"][task["componentRef"]["name"]]
            if "dag" in inner:
                walk(inner["dag"])

    walk(spec["root"]["dag"])
    return out


def by_display_name(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["taskInfo"]["name"]: t for t in all_tasks(spec).values()}


def artifacts(spec: dict[str, Any], component: str, side: str) -> dict[str, str]:
    defs = spec["components"][f"comp-{component}"][side].get("artifacts", {})
    return {k: v["artifactType"]["schemaTitle"] + ("[]" if v.get("isArtifactList") else "") for k, v in defs.items()}


def executor(spec: dict[str, Any], component: str) -> dict[str, Any]:
    return spec["deploymentSpec"]["executors"][f"exec-{component}"]["container"]


def loops(spec: dict[str, Any]) -> dict[str, list[str]]:
    """{the plan output a ParallelFor iterates over: the components of its body}."""
    return {t["parameterIterator"]["items"]["inputParameter"]:
            [i["componentRef"]["name"] for i in spec["components"][t["componentRef"]["name"]]["dag"]["tasks"].values()]
            for t in all_tasks(spec).values() if "parameterIterator" in t}


def test_the_six_steps_are_tasks_and_validate_and_tensorize_fan_out(ir):
    names = by_display_name(ir["spec"])
    for step in ("params", "ingest", "validate", "tensorize", "train", "evaluate", "register"):
        assert step in names, sorted(names)
    assert names["validate"]["componentRef"]["name"] == "comp-merge-validate-op"
    assert names["tensorize"]["componentRef"]["name"] == "comp-merge-tensors-op"
    assert {k.split("pipelinechannel--")[-1]: v for k, v in loops(ir["spec"]).items()} == {
        "plan-chunks-op-chunks": ["comp-validate-chunk-op"], "plan-chunks-op-2-chunks": ["comp-tensorize-chunk-op"]}


def test_no_chunk_task_takes_a_whole_data_artifact_which_kfp_would_download(ir):
    spec = ir["spec"]
    for name, task in all_tasks(spec).items():
        taken = task.get("inputs", {}).get("artifacts", {}).values()
        assert not [a for a in taken if a.get("taskOutputArtifact", {}).get("outputArtifactKey") == "raw"], name
    for component in ("validate-chunk-op", "tensorize-chunk-op", "register-op"):
        params = spec["components"][f"comp-{component}"]["inputDefinitions"]["parameters"]
        assert params["raw_uri"]["parameterType"] == "STRING", component
    assert not artifacts(spec, "tensorize-chunk-op", "inputDefinitions"), "accepted.jsonl by validated_uri"
    assert spec["components"]["comp-merge-validate-op"]["outputDefinitions"]["parameters"] == {
        "validated_uri": {"parameterType": "STRING"}, "n_accepted": {"parameterType": "NUMBER_INTEGER"}}
    assert spec["components"]["comp-ingest-op"]["outputDefinitions"]["parameters"] == {
        "raw_uri": {"parameterType": "STRING"}, "n_songs": {"parameterType": "NUMBER_INTEGER"}}


def test_steps_read_and_write_typed_artifacts(ir):
    spec = ir["spec"]
    assert artifacts(spec, "ingest-op", "outputDefinitions") == {"raw": "system.Dataset"}
    assert artifacts(spec, "validate-chunk-op", "outputDefinitions") == {"part": "system.Dataset"}
    assert artifacts(spec, "merge-validate-op", "inputDefinitions") == {"parts": "system.Dataset[]"}
    assert artifacts(spec, "merge-validate-op", "outputDefinitions") == {
        "validated": "system.Dataset", "data_docs": "system.HTML", "metrics": "system.Metrics"}
    assert artifacts(spec, "tensorize-chunk-op", "outputDefinitions") == {"tensors": "system.Dataset"}
    assert artifacts(spec, "merge-tensors-op", "inputDefinitions") == {"chunks": "system.Dataset[]"}
    assert artifacts(spec, "train-op", "inputDefinitions") == {"tensors": "system.Dataset"}
    assert artifacts(spec, "train-op", "outputDefinitions") == {"model": "system.Model", "metrics": "system.Metrics"}
    assert artifacts(spec, "evaluate-op", "outputDefinitions") == {
        "evaluation": "system.Dataset", "samples_page": "system.HTML", "metrics": "system.Metrics",
        "blessing": "system.Markdown"}
    assert spec["components"]["comp-evaluate-op"]["outputDefinitions"]["parameters"]["blessed"]["parameterType"] \
        == "BOOLEAN"
    assert artifacts(spec, "register-op", "inputDefinitions") == {
        "model": "system.Model", "evaluation": "system.Dataset",
        "validated": "system.Dataset", "tensors": "system.Dataset"}
    assert artifacts(spec, "register-op", "outputDefinitions") == {
        "registration": "system.Artifact", "model_card": "system.Markdown", "model_card_page": "system.HTML",
        "summary": "system.Markdown"}


def test_register_runs_after_every_evaluation_with_no_blessing_condition(ir):
    """Every evaluated model becomes a version (an unblessed one without aliases), as under the
    other runners: no task condition mentions the blessing, and register takes no `blessed`."""
    tasks = all_tasks(ir["spec"])
    assert not [t for t in tasks.values() if "blessed" in t.get("triggerPolicy", {}).get("condition", "")]
    register = tasks["register-op"]
    assert "blessed" not in register["inputs"].get("parameters", {})
    assert "evaluate-op" in register["dependentTasks"] and "triggerPolicy" not in register


def test_the_kfp_local_variant_has_one_validate_and_one_tensorize_task_and_no_conditions():
    from pipelines.training import build_pipeline

    spec = build_pipeline(load_params(REPO / "params.yaml"), fanout=False).pipeline_spec
    root = spec.root.dag.tasks
    assert {"validate-op", "tensorize-op", "register-op"} <= set(root)
    assert not any(t.trigger_policy.condition for t in root.values())
    assert "plan-chunks-op" not in root and "plan-validate-op" not in root


def test_every_params_knob_is_a_typed_pipeline_parameter_with_the_file_default(ir):
    params = ir["spec"]["root"]["inputDefinitions"]["parameters"]
    expected = knobs(load_params(REPO / "params.yaml"))
    assert len(expected) > 50
    for k in expected:
        assert params[k.name]["parameterType"] == KFP_TYPES[k.type], k.name
        assert params[k.name]["defaultValue"] == k.default, k.name
    assert params["train__epochs"]["defaultValue"] == load_params(REPO / "params.yaml").train.epochs
    assert params["data__sha256"]["defaultValue"] == ""  # null in params.yaml
    assert {"git_revision", "ingest_refresh_key", "fanout_songs_per_chunk", "fanout_max_chunks"} <= set(params)


def images(spec: dict[str, Any]) -> dict[str, str]:
    return {name.removeprefix("exec-"): e["container"]["image"] for name, e in spec["deploymentSpec"]["executors"].items()}


@pytest.mark.slow
def test_set_changes_a_default_and_image_replaces_every_tasks_image(tmp_path):
    ir = compile_ir(tmp_path, "--set", "train.epochs=3", "--image", "registry.example.com/lpdvae:abc",
                    "--train-image", "registry.example.com/lpdvae:abc-gpu")
    assert ir["spec"]["root"]["inputDefinitions"]["parameters"]["train__epochs"]["defaultValue"] == 3
    found = images(ir["spec"])
    assert found.pop("train-op") == "registry.example.com/lpdvae:abc-gpu"
    assert set(found.values()) == {"registry.example.com/lpdvae:abc"}


def test_components_run_in_the_project_image_without_installing_anything(ir, tmp_path):
    found = images(ir["spec"])
    assert found.pop("train-op") == "ghcr.io/lpdvae/lpdvae:0.1.0-cuda", "GPU training gets the CUDA build"
    assert set(found.values()) == {"ghcr.io/lpdvae/lpdvae:0.1.0"}
    for name, e in ir["spec"]["deploymentSpec"]["executors"].items():
        assert "pip install" not in " ".join(e["container"]["command"]), name
    out = tmp_path / "env.yaml"  # a fresh process: the image default is read at import
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "src")]),
           "LPDVAE_IMAGE": "localhost/lpdvae:cpu", **SECRETS}
    subprocess.run([sys.executable, "-m", "pipelines", "compile", "--no-gpu", "--out", str(out)], cwd=REPO,
                   env=env, check=True, capture_output=True)
    env_ir = parse(out.read_text())
    assert set(images(env_ir["spec"]).values()) == {"localhost/lpdvae:cpu"}
    assert not any(v in env_ir["text"] for v in SECRETS.values())


def test_data_steps_are_cached_and_steps_with_side_effects_or_registry_reads_are_not(ir):
    tasks = by_display_name(ir["spec"])
    for step in ("params", "ingest", "plan validate chunks", "validate chunk", "plan tensorize chunks",
                 "tensorize chunk", "tensorize"):
        assert tasks[step]["cachingOptions"].get("enableCache") is True, step
    for step in ("validate", "train", "evaluate", "register"):  # validate: drift against today's champion
        assert not tasks[step]["cachingOptions"].get("enableCache"), step


def test_train_requests_train_nproc_gpus_tolerates_the_taint_and_selects_gpu_nodes(ir):
    res = executor(ir["spec"], "train-op")["resources"]
    assert res["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert "train__nproc" in res["accelerator"]["resourceCount"]
    k8s = ir["platform"]["deploymentSpec"]["executors"]["exec-train-op"]
    assert k8s["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert k8s["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
    assert k8s["emptyDirMounts"][0]["mountPath"] == "/dev/shm"
    for step in ("ingest-op", "validate-chunk-op", "merge-validate-op"):
        assert "accelerator" not in executor(ir["spec"], step).get("resources", {}), step


@pytest.mark.slow
def test_gpu_count_can_be_fixed_or_left_out(tmp_path):
    fixed = compile_ir(tmp_path, "--gpus", "2")
    assert executor(fixed["spec"], "train-op")["resources"]["accelerator"]["resourceCount"] == "2"
    cpu = compile_ir(tmp_path, "--no-gpu", "--no-fanout")
    assert "accelerator" not in executor(cpu["spec"], "train-op")["resources"]
    assert "tolerations" not in cpu["platform"]["deploymentSpec"]["executors"]["exec-train-op"]
    assert by_display_name(cpu["spec"])["tensorize"]["componentRef"]["name"] == "comp-tensorize-op"


def test_each_task_gets_only_the_config_and_secrets_it_needs_by_name(ir):
    k8s = ir["platform"]["deploymentSpec"]["executors"]

    def secrets(exe: str) -> set[str]:
        return {s["secretName"] for s in k8s.get(exe, {}).get("secretAsEnv", [])}

    assert secrets("exec-ingest-op") == {"lpdvae-data-s3"}
    for exe in ("exec-merge-validate-op", "exec-train-op", "exec-evaluate-op", "exec-register-op"):
        assert secrets(exe) - {"lpdvae-artifacts-s3"} == {"lpdvae-mlflow-client"}, exe
        maps = {e["configMapKey"] for c in k8s[exe]["configMapAsEnv"] for e in c["keyToEnv"]}
        assert "MLFLOW_TRACKING_URI" in maps
    # register and the chunks read ingest's output from the pipeline root (raw_uri)
    for exe in ("exec-register-op", "exec-tensorize-chunk-op", "exec-validate-chunk-op"):
        assert "lpdvae-artifacts-s3" in secrets(exe), exe
    assert secrets("exec-validate-chunk-op") == {"lpdvae-artifacts-s3"}
    for exe in ("exec-merge-tensors-op", "exec-make-params"):
        assert not secrets(exe), exe


def test_validate_gets_the_mlflow_configuration_so_drift_finds_the_champion(ir):
    k8s = ir["platform"]["deploymentSpec"]["executors"]["exec-merge-validate-op"]
    env = {e["envVar"]: (c.get("configMapName") or c.get("secretName"))
           for c in [*k8s["configMapAsEnv"], *k8s["secretAsEnv"]] for e in c["keyToEnv"]}
    assert env == {"MLFLOW_TRACKING_URI": "lpdvae-config", "MLFLOW_TRACKING_USERNAME": "lpdvae-mlflow-client",
                   "MLFLOW_TRACKING_PASSWORD": "lpdvae-mlflow-client"}


# which Secret serves which purpose (infra/k8s: runner/secrets, shared-secrets)
PURPOSE_SECRETS = {"data": "lpdvae-data-s3", "artifacts": "lpdvae-artifacts-s3", "mlflow": "lpdvae-mlflow-client"}
PURPOSE_TASKS = {"data": {"exec-ingest-op"},
                 "artifacts": {"exec-train-trainjob-op", "exec-tensorize-chunk-op", "exec-validate-chunk-op",
                               "exec-register-op"},
                 "mlflow": {"exec-merge-validate-op", "exec-train-op", "exec-evaluate-op", "exec-register-op",
                            "exec-record-status-op"}}


def pod_env(executor_config: dict[str, Any], secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """The env a task's pod gets from its secretAsEnv, the Secrets holding `secrets`."""
    return {e["envVar"]: secrets[ref["secretName"]][e["secretKey"]]
            for ref in executor_config.get("secretAsEnv", []) for e in ref["keyToEnv"]}


def test_a_planted_key_of_one_purpose_reaches_only_that_purposes_pods(ir):
    from lpdvae.host.s3auth import PREFIXES

    keys = [*(p + k for p in PREFIXES.values() for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")),
            "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"]
    planted = {secret: {k: f"PLANTED-{purpose}-{k}" for k in keys} for purpose, secret in PURPOSE_SECRETS.items()}
    for exe, config in ir["platform"]["deploymentSpec"]["executors"].items():
        env = pod_env(config, planted)
        for purpose in PURPOSE_SECRETS:
            seen = [k for k, v in env.items() if v.startswith(f"PLANTED-{purpose}-")]
            assert bool(seen) == (exe in PURPOSE_TASKS[purpose]), (exe, purpose, seen)
            assert all(k.startswith(PREFIXES[purpose]) for k in seen if purpose in PREFIXES), (exe, seen)


def test_the_trainjobs_pods_get_the_pipeline_roots_key_and_no_other(ir):
    from components.trainjob import TrainJobRequest, trainjob_manifest

    env = trainjob_manifest(TrainJobRequest("j", "ns", "img", 2, 1, "s3://b/t", "s3://b/m", "{}", 60))
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in env["spec"]["trainer"]["env"]
            if "secretKeyRef" in e.get("valueFrom", {})}
    assert refs == {PURPOSE_SECRETS["artifacts"], PURPOSE_SECRETS["mlflow"]}


def test_every_task_runs_as_the_images_non_root_user(ir):
    for exe, config in ir["platform"]["deploymentSpec"]["executors"].items():
        assert config["securityContext"] == {"runAsUser": "10001", "runAsGroup": "0", "runAsNonRoot": True}, exe
    assert len(ir["platform"]["deploymentSpec"]["executors"]) == len(ir["spec"]["deploymentSpec"]["executors"])


def test_no_secret_value_reaches_the_compiled_yaml(ir):
    for value in SECRETS.values():
        assert value not in ir["text"]


# --- immutable images ---------------------------------------------------------------------------

DIGEST = "registry.example.com/lpdvae/lpdvae@sha256:" + "a" * 64
CUDA_DIGEST = "registry.example.com/lpdvae/lpdvae@sha256:" + "b" * 64


@pytest.mark.slow
def test_compiled_ir_runs_every_task_in_the_digest_it_was_compiled_against(tmp_path):
    ir = compile_ir(tmp_path, "--image", DIGEST, "--train-image", CUDA_DIGEST)
    found = images(ir["spec"])
    assert found.pop("train-op") == CUDA_DIGEST
    assert set(found.values()) == {DIGEST}


def test_the_tag_make_image_writes_is_immutable_and_its_cuda_build_follows_it():
    from components.image import cuda_image, is_immutable

    tag = subprocess.run([str(REPO / "infra/docker/image-tag.sh")], capture_output=True, text=True,
                         check=True).stdout.strip()
    rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert re.fullmatch(rf"git-{rev}-[0-9a-f]{{12}}", tag), tag
    image = f"registry.example.com/lpdvae/lpdvae:{tag}"
    assert is_immutable(image) and is_immutable(DIGEST) and is_immutable(cuda_image(image))
    assert not is_immutable("ghcr.io/lpdvae/lpdvae:0.1.0") and not is_immutable("lpdvae:latest")
    assert cuda_image(image) == f"{image}-cuda"


@pytest.mark.slow
def test_compiled_ir_uses_the_immutable_tag_for_every_task_and_the_cuda_tag_for_train(tmp_path):
    image = "registry.example.com/lpdvae/lpdvae:git-0123456789ab-cdef01234567"
    found = images(compile_ir(tmp_path, "--image", image)["spec"])
    assert found.pop("train-op") == f"{image}-cuda"
    assert set(found.values()) == {image}


@pytest.mark.slow
def test_a_digest_image_on_a_gpu_cluster_needs_the_cuda_build_named(tmp_path, capsys):
    from pipelines.__main__ import main

    rc = main(["--params", str(REPO / "params.yaml"), "compile", "--out", str(tmp_path / "p.yaml"), "--image", DIGEST])
    assert rc == 1 and "--train-image" in capsys.readouterr().err
    cpu = compile_ir(tmp_path, "--image", DIGEST, "--no-gpu")
    assert set(images(cpu["spec"]).values()) == {DIGEST}


@pytest.mark.slow
def test_a_mutable_image_compiles_with_a_warning(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="pipelines"):
        compile_ir(tmp_path, "--image", "registry.example.com/lpdvae/lpdvae:latest")
    assert "mutable tag" in caplog.text


# --- parameter descriptions ------------------------------------------------------------------------

def test_every_pipeline_parameter_has_a_description(ir):
    params = ir["spec"]["root"]["inputDefinitions"]["parameters"]
    missing = [name for name, p in params.items() if not p.get("description", "").strip()]
    assert not missing, f"pipeline parameters without a description: {missing}"


def test_knob_descriptions_are_params_yaml_comments(ir):
    params = ir["spec"]["root"]["inputDefinitions"]["parameters"]
    assert params["train__nproc"]["description"] == ">1 runs under torchrun (DDP)"
    assert params["data__source"]["description"].startswith("Where songs come from: demo://")
    assert params["evaluate__temperatures"]["description"].endswith("(never chosen on test)"), "continued comment"
    assert params["tracks"]["description"].startswith("The track set, in tensor channel order.")


# --- multi-node training (Trainer v2) and timeouts ---------------------------------------------------

def test_more_than_one_train_node_trains_in_a_trainjob_and_evaluate_takes_either_model(ir):
    spec, k8s = ir["spec"], ir["platform"]["deploymentSpec"]["executors"]
    assert spec["root"]["inputDefinitions"]["parameters"]["train_nodes"]["defaultValue"] == 1
    tasks = all_tasks(spec)
    conditions = {name: t["triggerPolicy"].get("condition") for name, t in tasks.items() if "triggerPolicy" in t}
    assert "int(inputs.parameter_values['pipelinechannel--train_nodes']) > 1" in conditions.values()
    launcher = tasks["train-trainjob-op"]
    assert launcher["inputs"]["parameters"]["runtime"]["runtimeValue"]["constant"] == "lpdvae-torch-distributed"
    assert launcher["inputs"]["parameters"]["image"]["runtimeValue"]["constant"] == "ghcr.io/lpdvae/lpdvae:0.1.0-cuda"
    assert launcher["inputs"]["artifacts"]["tensors"]["componentInputArtifact"].endswith("merge-tensors-op-tensors")
    model = tasks["evaluate-op"]["inputs"]["artifacts"]["model"]["taskOutputArtifact"]
    assert model["outputArtifactKey"].endswith("-oneof-1"), "dsl.OneOf(TrainJob model, single-pod model)"
    assert executor(spec, "train-trainjob-op")["image"] == "ghcr.io/lpdvae/lpdvae:0.1.0", "a small CPU pod"
    assert "accelerator" not in executor(spec, "train-trainjob-op").get("resources", {})
    assert k8s["exec-train-trainjob-op"]["fieldPathAsEnv"] == [
        {"name": "POD_NAMESPACE", "fieldPath": "metadata.namespace"},
        {"name": "ARGO_WORKFLOW", "fieldPath": "metadata.labels['workflows.argoproj.io/workflow']"}]
    assert {s["secretName"] for s in k8s["exec-train-trainjob-op"]["secretAsEnv"]} == {"lpdvae-artifacts-s3"}


def test_the_train_queue_parameter_reaches_the_trainjob_step(ir):
    assert ir["spec"]["root"]["inputDefinitions"]["parameters"]["train_queue"]["defaultValue"] == ""
    queue = all_tasks(ir["spec"])["train-trainjob-op"]["inputs"]["parameters"]["queue"]
    assert queue["componentInputParameter"].endswith("train_queue")


def test_the_exit_handler_deletes_the_runs_trainjobs_in_its_own_namespace(ir):
    params = ir["spec"]["root"]["dag"]["tasks"]["record-status-op"]["inputs"]["parameters"]
    assert params["delete_trainjobs"]["runtimeValue"]["constant"] is True
    assert params["pipeline_run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
    env = ir["platform"]["deploymentSpec"]["executors"]["exec-record-status-op"]["fieldPathAsEnv"]
    assert {"name": "POD_NAMESPACE", "fieldPath": "metadata.namespace"} in env


def test_train_has_a_timeout_and_the_trainjob_step_outlives_the_jobs_deadline(ir):
    k8s = ir["platform"]["deploymentSpec"]["executors"]
    train = int(k8s["exec-train-op"]["activeDeadlineSeconds"])
    assert train == 48 * 3600
    assert int(k8s["exec-train-trainjob-op"]["activeDeadlineSeconds"]) > train
    launcher = all_tasks(ir["spec"])["train-trainjob-op"]
    assert launcher["inputs"]["parameters"]["timeout_s"]["runtimeValue"]["constant"] == train


# --- IR polish: fan-out limit, retries with backoff, exit handler ----------------------------------------

def test_each_fan_out_runs_at_most_eight_chunks_at_once(ir):
    found = [t for t in all_tasks(ir["spec"]).values() if "parameterIterator" in t]
    assert len(found) == 2 and all(t["iteratorPolicy"] == {"parallelismLimit": 8} for t in found)


def test_steps_that_talk_to_the_network_retry_with_backoff_and_train_does_not(ir):
    tasks = all_tasks(ir["spec"])
    for name, retries in {"ingest-op": 3, "train-trainjob-op": 2, "evaluate-op": 2, "register-op": 3,
                          "record-status-op": 3}.items():
        policy = tasks[name]["retryPolicy"]
        assert policy["maxRetryCount"] == retries and policy["backoffDuration"] == "60s", name
        assert policy["backoffFactor"] == 2.0 and policy["backoffMaxDuration"] == "1800s", name
    assert "retryPolicy" not in tasks["train-op"], "a rerun of single-pod train retrains from scratch"


def test_an_exit_handler_records_how_every_run_ended(ir):
    root = ir["spec"]["root"]["dag"]["tasks"]
    assert set(root) == {"exit-handler-1", "record-status-op"}, "every step runs inside the exit handler"
    status = root["record-status-op"]
    assert status["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert status["dependentTasks"] == ["exit-handler-1"]
    params = status["inputs"]["parameters"]
    assert params["experiment"]["componentInputParameter"] == "mlflow__experiment"
    assert "status" in params, "the run's final status (PipelineTaskFinalStatus)"
    k8s = ir["platform"]["deploymentSpec"]["executors"]["exec-record-status-op"]
    assert {s["secretName"] for s in k8s["secretAsEnv"]} == {"lpdvae-mlflow-client"}
