"""The registered generator served by the real `mlflow models serve` process on loopback."""

from __future__ import annotations

import base64
import io
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pretty_midi
import pypianoroll
import pytest
import requests

from lpdvae.cli import main
from lpdvae.model.files import load_model
from lpdvae.params import Params
from lpdvae.registry.serving import MusicGenerator
from lpdvae.steps.register import register
from tests.conftest import BIN, REPO, free_port, stop, wait_for_port
from tests.evalkit import make_model, make_tensors, tiny_params, write_eval

pytestmark = pytest.mark.slow  # the MLflow server, and `mlflow models serve`

EVALUATED_TEMPERATURE = 0.85  # what evaluation chose on validation; served by default


@pytest.fixture(scope="module")
def champion(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Params, Path]:
    """A blessed tiny model registered as champion of a fresh model name."""
    tmp = tmp_path_factory.mktemp("serving")
    params = tiny_params(mlflow_server, "serving-tests")
    model = make_model(tmp / "model", params, seed=3)
    evaluation = write_eval(tmp / "eval", True, 0.5, temperature=EVALUATED_TEMPERATURE)
    result = register(model, evaluation, tmp / "registered.json", params,
                      lineage={"lpdvae.dvc.tensors": "abc.dir"}, tensor_dir=make_tensors(tmp / "tensors", params), report_dir=tmp / "report")
    assert "champion" in result.aliases
    return params, model


@pytest.fixture(scope="module")
def served(champion, tmp_path_factory) -> Iterator[str]:
    params, _ = champion
    port = free_port()
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "MLFLOW_TRACKING_URI": params.mlflow.tracking_uri, "MLFLOW_DISABLE_TELEMETRY": "true",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # it execs the venv's uvicorn
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{params.register.model_name}@champion",
             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        try:
            wait_for_port(port, proc, f"mlflow models serve (log: {log_path})", timeout=420)
            yield f"http://127.0.0.1:{port}"
        finally:
            stop(proc)


def invoke(url: str, records: list[dict]) -> requests.Response:
    return requests.post(f"{url}/invocations", json={"dataframe_records": records}, timeout=120)


def test_served_champion_returns_the_note_codes_the_saved_model_samples(champion, served):
    params, model = champion
    reply = invoke(served, [{"n": 2, "seed": 11, "temperature": 1.0}, {"n": 1, "seed": 12, "temperature": 0.5}])
    assert reply.status_code == 200, reply.text
    rows = reply.json()["predictions"]
    assert [(r["seed"], r["index"]) for r in rows] == [(11, 0), (11, 1), (12, 0)]
    rep = params.representation
    codes = np.array([r["pianoroll"] for r in rows])
    assert codes.shape == (3, 2, rep.n_bars, rep.steps_per_bar, rep.n_pitches)
    assert set(np.unique(codes)) <= {0, 1, 2}
    vae = load_model(model)
    np.testing.assert_array_equal(codes[:2], vae.sample(2, 11, 1.0).numpy())
    np.testing.assert_array_equal(codes[2:], vae.sample(1, 12, 0.5).numpy())
    midi = base64.b64decode(rows[0]["midi_base64"])
    assert midi[:4] == b"MThd"
    mt = pypianoroll.from_pretty_midi(pretty_midi.PrettyMIDI(io.BytesIO(midi)))
    assert [t.name for t in mt.tracks] == ["soprano", "bass"]
    assert [t.program for t in mt.tracks] == [52, 33]


def test_served_default_temperature_is_the_evaluated_one(champion, served):
    _, model = champion
    reply = invoke(served, [{"n": 1, "seed": 8}])  # no temperature in the request
    assert reply.status_code == 200, reply.text
    codes = np.array(reply.json()["predictions"][0]["pianoroll"])[None]
    np.testing.assert_array_equal(codes, load_model(model).sample(1, 8, EVALUATED_TEMPERATURE).numpy())


def test_served_bad_requests_are_400_with_the_reason(served):
    for record in ({"n": 0, "seed": 1}, {"n": 65, "seed": 1}, {"n": 1, "seed": 1, "temperature": 0}):
        bad = invoke(served, [record])
        assert bad.status_code == 400 and "n must be in 1.." in bad.text


def test_generator_accepts_a_plain_dict(champion):
    gen = MusicGenerator(temperature=EVALUATED_TEMPERATURE)
    gen.vae = load_model(champion[1])
    out = gen.predict({"n": 2, "seed": 1})  # a plain object now, not a PythonModel: no context
    assert list(out.columns) == ["seed", "index", "pianoroll", "midi_base64"] and len(out) == 2
    np.testing.assert_array_equal(np.array(out["pianoroll"].tolist()),
                                  gen.vae.sample(2, 1, EVALUATED_TEMPERATURE).numpy())


def test_generate_cli_samples_from_the_registry_champion(champion, tmp_path):
    params, _ = champion
    args = ["--params", str(REPO / "params.yaml"), "--set", f"mlflow.tracking_uri={params.mlflow.tracking_uri}",
            "generate", "--model", f"models:/{params.register.model_name}@champion",
            "--n", "2", "--seed", "4", "--out", str(tmp_path / "samples")]
    assert main(args) == 0
    names = sorted(p.name for p in (tmp_path / "samples").iterdir())
    assert names == ["sample-4-00.mid", "sample-4-00.png", "sample-4-01.mid", "sample-4-01.png"]


def test_served_phrases_are_capped_per_request_not_per_row(served):
    bad = invoke(served, [{"n": 40, "seed": 1}, {"n": 40, "seed": 2}])
    assert bad.status_code == 400 and "80 phrases asked for in 2 rows" in bad.text


def test_the_registered_generator_holds_no_pickle(champion, tmp_path):
    """A loader-module pyfunc: weights, model.json and generator.json; nothing unpickled to load it."""
    import yaml
    from mlflow.artifacts import download_artifacts

    params, _ = champion
    local = Path(download_artifacts(artifact_uri=f"models:/{params.register.model_name}@champion",
                                    dst_path=str(tmp_path)))
    flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
    assert flavor["loader_module"] == "lpdvae.registry.serving" and "python_model" not in flavor
    assert sorted(p.name for p in (local / flavor["data"]).iterdir()) == ["generator.json", "model.json", "model.pt"]
    assert not [p for p in local.rglob("*") if p.suffix in (".pkl", ".pickle")]


def test_serve_app_serves_the_registry_champion_within_bounds(champion, tmp_path):
    params, model = champion
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": params.mlflow.tracking_uri, "MLFLOW_DISABLE_TELEMETRY": "true",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    with open(tmp_path / "serve.log", "wb") as log:
        proc = subprocess.Popen([str(BIN / "python"), "-m", "lpdvae.registry.serve_app", "--model",
                                 f"models:/{params.register.model_name}@champion", "--port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
        try:
            wait_for_port(port, proc, f"serve_app (log: {tmp_path / 'serve.log'})", timeout=120)
            url = f"http://127.0.0.1:{port}"
            reply = invoke(url, [{"n": 2, "seed": 11}])
            assert reply.status_code == 200, reply.text
            codes = np.array([r["pianoroll"] for r in reply.json()["predictions"]])
            np.testing.assert_array_equal(codes, load_model(model).sample(2, 11, EVALUATED_TEMPERATURE).numpy())
            assert invoke(url, [{"n": 1, "seed": 1, "pad": "x" * 70_000}]).status_code == 413
        finally:
            stop(proc)
