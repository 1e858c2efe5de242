"""The container image: how it is built (static checks) and, when podman and the image are here,
that it runs the CLI and a component exactly as a KFP pod would: non-root, read-only root
filesystem, no network.

Build the image first with `infra/docker/build.sh cpu` (tag lpdvae:cpu), or set
LPDVAE_TEST_IMAGE to another tag; LPDVAE_BUILD_IMAGE=1 makes the tests build it (minutes).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "infra" / "docker" / "Dockerfile"
IMAGE = os.environ.get("LPDVAE_TEST_IMAGE", "localhost/lpdvae:cpu")


def stages(text: str) -> dict[str, str]:
    """Dockerfile text of each `FROM ... AS name` stage."""
    parts = re.split(r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_dockerfile_is_multi_stage_with_a_lean_non_root_final_stage():
    text = DOCKERFILE.read_text()
    st = stages(text)
    assert {"builder", "runtime-base", "runtime", "mlflow-server"} <= set(st)
    assert list(st)[-1] == "runtime", "the default target is the last stage"
    assert "-c requirements.lock" in st["builder"], "dependencies install under the lock"
    assert "ARG TORCH_VARIANT" in st["builder"] and "+cpu" in st["builder"] and "cuda)" in st["builder"]
    final = st["runtime-base"] + st["runtime"]
    assert "COPY --from=builder /opt/venv /opt/venv" in st["runtime"]
    assert re.search(r"^USER 10001$", st["runtime"], flags=re.M)
    for tool in ("gcc", "build-essential", "g++", "make ", "python3-dev"):
        assert tool not in final, f"{tool} in the final stage"


def test_docker_context_leaves_out_secrets_and_local_state():
    ignored = (REPO / ".dockerignore").read_text().split()
    for pattern in ("**/*.env", ".git", ".venv", "mlflow.db", "data"):
        assert pattern in ignored, pattern


# --- the built image ------------------------------------------------------------------------

def podman(*args: str, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode:
        raise AssertionError(f"podman {' '.join(args[:3])}… failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def image() -> str:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (see shared/tools/podman-here.sh); image tests need it")
    if podman("image", "exists", IMAGE, check=False).returncode != 0:
        if os.environ.get("LPDVAE_BUILD_IMAGE") != "1":
            pytest.skip(f"image {IMAGE} is not built: run infra/docker/build.sh cpu (or LPDVAE_BUILD_IMAGE=1)")
        subprocess.run([str(REPO / "infra" / "docker" / "build.sh"), "cpu", IMAGE], check=True, timeout=3600)
    return IMAGE


def run_in_pod(image: str, *cmd: str, mounts: dict[Path, str] | None = None) -> subprocess.CompletedProcess:
    """Like a KFP pod: image user, read-only root, writable /tmp, no network."""
    vols = [f"-v={host}:{inside}" for host, inside in (mounts or {}).items()]
    return podman("run", "--rm", "--network=none", "--read-only", "--tmpfs=/tmp:rw,mode=1777", *vols, image, *cmd)


def test_image_runs_the_cli_as_non_root_offline(image):
    out = run_in_pod(image, "sh", "-c", "id -u && lpdvae --help && python -m pipelines --help && "
                     "python -c 'import torch, mlflow.server, uvicorn, kfp, great_expectations' && "
                     "! command -v uv && ! command -v gcc && ! command -v cc").stdout
    assert out.splitlines()[0] == "10001"
    for command in ("ingest", "validate", "tensorize", "train", "evaluate", "register"):
        assert command in out
    assert "schedule" in out


def kfp_command(component: str, executor_input: dict[str, Any], out_dir: Path, *compile_args: str) -> list[str]:
    """The exact command + args of `component` in the compiled pipeline, with its executor input."""
    ir = out_dir / "pipeline.yaml"
    subprocess.run([sys.executable, "-m", "pipelines", "compile", "--out", str(ir), *compile_args], cwd=REPO, check=True,
                   env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True)
    container = next(yaml.safe_load_all(ir.read_text()))["deploymentSpec"]["executors"][f"exec-{component}"]["container"]
    args = [json.dumps(executor_input) if a == "{{$}}" else a for a in container["args"]]
    return [*container["command"], *args]


@pytest.mark.slow
def test_make_params_component_runs_in_the_image_as_kfp_runs_it(image, tmp_path):
    from components.knobs import knob_values
    from lpdvae.params import load_params

    params = load_params(REPO / "params.yaml", {"train.epochs": 2})
    tmp_path.chmod(0o777)
    executor_input = {
        "inputs": {"parameterValues": knob_values(params)},
        "outputs": {"parameters": {"Output": {"outputFile": "/out/Output"}}, "outputFile": "/out/executor_output.json"},
    }
    run_in_pod(image, *kfp_command("make-params", executor_input, tmp_path), mounts={tmp_path: "/out"})
    written = json.loads((tmp_path / "executor_output.json").read_text())["parameterValues"]["Output"]
    assert json.loads(written) == params.to_dict()


@pytest.mark.slow
def test_validate_component_runs_in_the_image_on_a_tiny_corpus(image, tmp_path):
    from kfp.dsl import Dataset

    from components import ingest_op
    from lpdvae.params import load_params
    from tests.test_components import write_song

    for i in range(4):
        write_song(tmp_path / "songs" / f"song{i}.mid", seed=i)
    params = load_params(REPO / "params.yaml", {"data.source": str(tmp_path / "songs"), "tensorize.workers": 1})
    ingest_op.python_func(params_json=json.dumps(params.to_dict()), refresh_key="", raw=Dataset(uri=str(tmp_path / "raw")))
    for path in [tmp_path, *tmp_path.rglob("*")]:  # readable by the image's uid 10001
        path.chmod(0o755 if path.is_dir() else 0o644)
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)

    def artifact(uri: str, kind: str) -> dict[str, Any]:
        return {"artifacts": [{"uri": uri, "type": {"schemaTitle": kind}, "metadata": {}}]}

    executor_input = {
        "inputs": {"parameterValues": {"params_json": json.dumps(params.to_dict())},
                   "artifacts": {"raw": artifact("/in/raw", "system.Dataset")}},
        "outputs": {"artifacts": {"validated": artifact("/out/validated", "system.Dataset"),
                                  "data_docs": artifact("/out/data_docs.html", "system.HTML"),
                                  "metrics": artifact("/out/metrics", "system.Metrics")},
                    "outputFile": "/out/executor_output.json"},
    }
    # the one-task validate (--no-fanout: what kfp.local runs; the cluster's chunks run the same step code)
    run_in_pod(image, *kfp_command("validate-op", executor_input, out, "--no-fanout"),
               mounts={tmp_path: "/in", out: "/out"})
    assert (out / "validated" / "accepted.jsonl").read_text().count("\n") == 4
    assert "<html" in (out / "data_docs.html").read_text().lower()
    assert json.loads((out / "executor_output.json").read_text())["artifacts"]["metrics"]
