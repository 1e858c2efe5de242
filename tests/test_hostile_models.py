"""The hostile-input suite (issue 24): inputs an attacker or a careless user would try, one case
per input with its expected verdict. Each area has its own section below."""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
import requests
import torch
import yaml

from lpdvae.cli import main
from lpdvae.errors import ModelFileError
from lpdvae.model.files import build_model, load_model, save_model
from lpdvae.params import Params, load_params
from lpdvae.registry import serve_app
from lpdvae.registry.serving import (
    LOADER_MODULE,
    BadRequest,
    code_paths,
    load_generator,
    parse_requests,
    pip_requirements,
    save_generator,
    signature,
)
from tests.conftest import REPO, free_port
from tests.evalkit import TINY

# --- model files and serving ---
# Nothing a model file holds is run (model.pt goes through torch's weights-only loader, a logged
# generator is read as data), a bad file is one line naming it, and served requests are bounded.


class Planted:
    """A pickle whose loading would run `touch MARKER`: the marker proves whether it ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def torch_saved(obj: object) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def with_meta(folder: Path, **changes: object) -> None:
    meta = json.loads((folder / "model.json").read_text())
    meta["model"].update(changes)
    (folder / "model.json").write_text(json.dumps(meta))


# case -> (how the model folder is spoiled, given it and the marker path; the stderr line's tail)
MODEL_FILE_CASES: dict[str, tuple[Callable[[Path, Path], object], str]] = {
    "pickle_reduce_as_model_pt": (
        lambda d, m: (d / "model.pt").write_bytes(pickle.dumps(Planted(m), protocol=2)),
        "model.pt: not model weights, refused by torch's weights-only loader before anything in it ran "
        "(Trying to load unsupported GLOBAL posix.system whose module posix is blocked.)"),
    "torch_save_of_an_object_as_model_pt": (
        lambda d, m: (d / "model.pt").write_bytes(torch_saved({"weight": Planted(m)})),
        "model.pt: not model weights, refused by torch's weights-only loader before anything in it ran "
        "(Trying to load unsupported GLOBAL posix.system whose module posix is blocked.)"),
    "random_bytes_as_model_pt": (
        lambda d, m: (d / "model.pt").write_bytes(random.Random(0).randbytes(4096)),
        "model.pt: not model weights, refused by torch's weights-only loader before anything in it ran "
        "(Unsupported operand 205)"),
    "empty_model_pt": (lambda d, m: (d / "model.pt").write_bytes(b""), "model.pt: empty file, not model weights"),
    "a_folder_as_model_pt": (lambda d, m: ((d / "model.pt").unlink(), (d / "model.pt").mkdir()),
                             "model.pt: not a regular file"),
    "a_tensor_not_a_state_dict": (lambda d, m: (d / "model.pt").write_bytes(torch_saved(torch.zeros(2))),
                                  "model.pt: not a state dict (names to tensors) but a Tensor"),
    "model_json_an_array": (lambda d, m: (d / "model.json").write_text("[1, 2]"),
                            "model.json: not a model meta: a JSON array, not an object"),
    "model_json_a_string": (lambda d, m: (d / "model.json").write_text('"model"'),
                            "model.json: not a model meta: a JSON string, not an object"),
    "model_json_over_1_MiB": (lambda d, m: (d / "model.json").write_text(" " * (2 << 20)),
                              "model.json: 2097152 bytes, more than the 1048576 a model meta can be"),
    "model_json_asking_for_a_huge_network": (  # shapes checked on the meta device: nothing allocated
        lambda d, m: with_meta(d, decoder_hidden=1 << 20),
        "model.json does not match model.pt: size mismatch for "),
}


@pytest.fixture(scope="module")
def tiny_params_() -> Params:
    return load_params(REPO / "params.yaml", TINY)


@pytest.fixture(scope="module")
def model_dir(tiny_params_: Params, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return save_model(build_model(tiny_params_), tmp_path_factory.mktemp("hostile") / "model", tiny_params_)


def cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, list[str]]:
    """`lpdvae ARGV` in this process: (exit code, stderr lines)."""
    capsys.readouterr()
    try:
        code = main(["--params", str(REPO / "params.yaml"), *argv])
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    return code, capsys.readouterr().err.strip().splitlines()


def test_the_planted_pickle_runs_when_unpickled(tmp_path):
    """What the cases below prove is only worth something if the planted file does run when loaded."""
    pickle.loads(pickle.dumps(Planted(tmp_path / "MARKER")))
    assert (tmp_path / "MARKER").exists()


@pytest.mark.parametrize("command", ["evaluate", "generate"])
@pytest.mark.parametrize("case", list(MODEL_FILE_CASES))
def test_a_hostile_model_file_runs_nothing_and_is_one_line(case, command, model_dir, tmp_path, capsys):
    spoil, tail = MODEL_FILE_CASES[case]
    folder, marker = tmp_path / "model", tmp_path / "MARKER"
    shutil.copytree(model_dir, folder)
    spoil(folder, marker)
    outs = {"evaluate": ["--tensors", str(tmp_path / "t"), "--out", str(tmp_path / "out")],
            "generate": ["--out", str(tmp_path / "out")]}[command]
    code, err = cli(capsys, command, "--model", str(folder), *outs)
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith(f"lpdvae {command}: {folder}") and tail in err[0], err[0]
    assert not marker.exists() and not (tmp_path / "out").exists()


GENERATE_ARGS = {  # generate's numeric options: each out-of-range value is argparse's one-line error
    "n_zero": (["--n", "0"], "argument --n: '0' is out of range: an integer in 1..1024"),
    "n_over_1024": (["--n", "1025"], "argument --n: '1025' is out of range: an integer in 1..1024"),
    "n_not_a_number": (["--n", "many"], "argument --n: 'many' is not an integer in 1..1024"),
    "temperature_nan": (["--temperature", "nan"], "argument --temperature: 'nan' is out of range: a finite number > 0"),
    "temperature_inf": (["--temperature", "inf"], "argument --temperature: 'inf' is out of range: a finite number > 0"),
    "temperature_zero": (["--temperature", "0"], "argument --temperature: '0' is out of range: a finite number > 0"),
    "temperature_negative": (["--temperature", "-1"],
                             "argument --temperature: '-1' is out of range: a finite number > 0"),
    "seed_negative": (["--seed", "-1"], "argument --seed: '-1' is out of range: an integer in 0..2**63-1"),
    "seed_over_int64": (["--seed", str(2**63)],
                        f"argument --seed: '{2**63}' is out of range: an integer in 0..2**63-1"),
}


@pytest.mark.parametrize("case", list(GENERATE_ARGS))
def test_generate_refuses_an_out_of_range_number(case, model_dir, tmp_path, capsys):
    args, message = GENERATE_ARGS[case]
    code, err = cli(capsys, "generate", "--model", str(model_dir), "--out", str(tmp_path / "s"), *args)
    assert code == 2 and err[-1] == f"lpdvae generate: error: {message}", err
    assert not (tmp_path / "s").exists()


# --- the logged generator (a loader-module pyfunc): planted files are never run


@pytest.fixture(scope="module")
def logged(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generator as register logs it, saved to a folder (what a download of the version gives)."""
    import mlflow.pyfunc

    tmp = tmp_path_factory.mktemp("logged")
    example, sig = signature(0.85)
    mlflow.pyfunc.save_model(str(tmp / "generator"), loader_module=LOADER_MODULE,
                             data_path=str(save_generator(model_dir, 0.85, tmp / "data")), signature=sig,
                             input_example=example, pip_requirements=pip_requirements(), code_paths=code_paths())
    return tmp / "generator"


def as_pickled_flavor(d: Path, marker: Path) -> None:
    """MLmodel rewritten to the pickled shape (`python_model.pkl`, as versions before the loader
    module had it) with the planted pickle there: MLflow's loader would run it, ours never reads it."""
    (d / "python_model.pkl").write_bytes(pickle.dumps(Planted(marker)))
    mlmodel = yaml.safe_load((d / "MLmodel").read_text())
    flavor = mlmodel["flavors"]["python_function"]
    flavor.update(python_model="python_model.pkl", cloudpickle_version="3.0.0",
                  artifacts={"vae": {"path": flavor.pop("data"), "uri": "vae"}})
    del flavor["loader_module"]
    (d / "MLmodel").write_text(yaml.safe_dump(mlmodel))


# case -> (spoil the logged model folder, the one-line error's tail or None when it still loads)
PYFUNC_CASES: dict[str, tuple[Callable[[Path, Path], object], str | None]] = {
    "pickle_planted_as_python_model_pkl": (
        lambda d, m: (d / "python_model.pkl").write_bytes(pickle.dumps(Planted(m))), None),
    "mlmodel_pointing_at_a_planted_pickle": (as_pickled_flavor, None),
    "code_paths_copy_of_lpdvae_planted": (
        lambda d, m: (d / "code" / "lpdvae" / "__init__.py").write_text(f"import os\nos.system('touch {m}')\n"),
        None),
    "pickle_planted_as_the_data_model_pt": (
        lambda d, m: (d / "data" / "vae" / "model.pt").write_bytes(pickle.dumps(Planted(m), protocol=2)),
        "data/vae/model.pt: not model weights, refused by torch's weights-only loader before anything in it ran"),
    "generator_json_an_array": (
        lambda d, m: (d / "data" / "vae" / "generator.json").write_text("[0.85]"),
        'data/vae/generator.json: not a generator config: needs {"temperature": a finite number > 0}'),
    "mlmodel_data_path_leaving_the_folder": (
        lambda d, m: (d / "MLmodel").write_text((d / "MLmodel").read_text().replace("data: data/vae",
                                                                                   "data: ../../etc")),
        "MLmodel: its data path '../../etc' leaves the model folder"),
    "mlmodel_not_yaml_mapping": (lambda d, m: (d / "MLmodel").write_text("- a list\n"),
                                 "MLmodel: not an lpdvae generator's MLmodel (TypeError: list indices must be"),
}


def spoiled(logged: Path, tmp_path: Path, case: str) -> tuple[Path, Path, str | None]:
    spoil, tail = PYFUNC_CASES[case]
    folder, marker = tmp_path / "generator", tmp_path / "MARKER"
    shutil.copytree(logged, folder)
    spoil(folder, marker)
    return folder, marker, tail


@pytest.mark.parametrize("case", list(PYFUNC_CASES))
def test_the_serving_loader_never_runs_a_planted_file(case, logged, tmp_path):
    folder, marker, tail = spoiled(logged, tmp_path, case)
    if tail is None:
        gen = load_generator(str(folder), tmp_path / "dl")
        assert gen.temperature == 0.85 and len(gen.generate(1, 0, 1.0)) == 1
    else:
        with pytest.raises(ModelFileError) as err:
            load_generator(str(folder), tmp_path / "dl")
        assert str(err.value).startswith(str(folder)) and tail in str(err.value), err.value
        assert "\n" not in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("case", ["pickle_planted_as_python_model_pkl", "mlmodel_pointing_at_a_planted_pickle",
                                  "code_paths_copy_of_lpdvae_planted", "pickle_planted_as_the_data_model_pt"])
def test_generate_from_a_logged_model_never_runs_a_planted_file(case, logged, tmp_path, capsys):
    folder, marker, tail = spoiled(logged, tmp_path, case)
    code, err = cli(capsys, "generate", "--model", str(folder), "--n", "1", "--out", str(tmp_path / "s"))
    if tail is None:
        assert code == 0 and sorted(p.name for p in (tmp_path / "s").iterdir()) == ["sample-0-00.mid",
                                                                                     "sample-0-00.png"]
    else:
        assert code == 1 and len(err) == 1 and err[0].startswith(f"lpdvae generate: {folder}") and tail in err[0]
    assert not marker.exists()


def test_mlflows_own_loader_reads_the_data_through_the_weights_only_loader(logged, tmp_path):
    import mlflow.pyfunc

    folder, marker, _ = spoiled(logged, tmp_path, "pickle_planted_as_the_data_model_pt")
    with pytest.raises(ModelFileError, match=r"data/vae/model\.pt: not model weights, refused"):
        mlflow.pyfunc.load_model(str(folder))
    assert not marker.exists()


def test_serve_app_refuses_a_planted_model_in_one_line(logged, tmp_path, capsys):
    folder, marker, _ = spoiled(logged, tmp_path, "pickle_planted_as_the_data_model_pt")
    assert serve_app.main(["--model", str(folder), "--port", str(free_port())]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"lpdvae serve: {folder}/data/vae/model.pt: not model weights, refused by torch's "
                   "weights-only loader before anything in it ran (Trying to load unsupported GLOBAL "
                   "posix.system whose module posix is blocked.)"]
    assert not marker.exists()


# --- served requests: the bounds of lpdvae.registry.serve_app and of the pyfunc's predict


@pytest.fixture(scope="module")
def served(logged: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, object]]:
    """serve_app on a free loopback port (uvicorn in a thread); yields (URL, the generator)."""
    import uvicorn

    gen = load_generator(str(logged), tmp_path_factory.mktemp("dl"))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(serve_app.create_app(gen), host="127.0.0.1", port=port,
                                           log_level="warning", limit_concurrency=8))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}", gen
    server.should_exit = True
    thread.join(10)


def records(*rows: dict) -> bytes:
    return json.dumps({"dataframe_records": list(rows)}).encode()


CANARY = b"CANARY-0123456789"
# case -> (body, content type, expected status, a part of the message)
SERVE_CASES: dict[str, tuple[object, str, int, str]] = {
    "body_over_64_KiB_with_its_length": (records({"n": 1, "pad": "x" * 70_000}), "application/json", 413,
                                         "the body must be at most 65536 bytes"),
    "body_over_64_KiB_chunked": (lambda: iter([b'{"dataframe_records": ['] + [b" " * 8192] * 9),
                                 "application/json", 413, "the body must be at most 65536 bytes"),
    "malformed_body_is_not_echoed": (b'{"dataframe_records": [' + CANARY * 2000, "application/json", 400,
                                     "the body is not valid JSON: Expecting value at line 1 column 24"),
    "nested_60000_deep": (b"[" * 60_000, "application/json", 400, "the body is not valid JSON (RecursionError)"),
    "not_json": (b"n,seed\n1,2\n", "text/csv", 415, "Content-Type must be application/json"),
    "no_records_key": (b"[1, 2]", "application/json", 400, 'expected {"dataframe_records": ['),
    "65_rows_of_one_phrase": (records(*[{"n": 1}] * 65), "application/json", 400,
                              "65 request rows: a request has 1..64 rows"),
    "rows_summing_past_64_phrases": (records({"n": 40}, {"n": 40}), "application/json", 400,
                                     "80 phrases asked for in 2 rows: n must be in 1..64 phrases per request"),
    "n_zero": (records({"n": 0}), "application/json", 400, "bad request row 0 (n=0, seed=0"),
    "seed_negative": (records({"n": 1, "seed": -1}), "application/json", 400, "seed in 0..2**63-1"),
    "temperature_infinite": (b'{"dataframe_records": [{"n": 1, "temperature": Infinity}]}', "application/json",
                             400, "temperature=inf): n must be in 1..64, seed in 0..2**63-1, temperature finite and > 0"),
    "temperature_nan": (b'{"dataframe_records": [{"n": 1, "temperature": NaN}]}', "application/json", 400,
                        "temperature=nan)"),
    "temperature_zero": (records({"n": 1, "temperature": 0}), "application/json", 400, "temperature=0.0)"),
    "temperature_negative": (records({"n": 1, "temperature": -0.5}), "application/json", 400, "temperature=-0.5)"),
    "n_of_4000_digits_not_echoed": (b'{"dataframe_records": [{"n": ' + b"9" * 4000 + b"}]}", "application/json",
                                    400, "bad request row 0 (n=9999999999...(4000 digits), seed=0"),
    "temperature_past_any_float": (records({"n": 1, "temperature": 10**400}), "application/json", 400,
                                   "temperature=inf)"),
    "n_a_string": (records({"n": "64"}), "application/json", 400, "bad request row 0: n must be an integer, got a str"),
    "a_row_not_an_object": (records(5), "application/json", 400, "each request row must be an object"),
}


@pytest.mark.slow  # serves a model (uvicorn on loopback)
@pytest.mark.parametrize("case", list(SERVE_CASES))
def test_a_hostile_request_gets_its_status_and_reason(case, served):
    url, _ = served
    body, content_type, status, message = SERVE_CASES[case]
    reply = requests.post(f"{url}/invocations", data=body() if callable(body) else body,
                          headers={"Content-Type": content_type}, timeout=30)
    assert reply.status_code == status, reply.text[:500]
    assert message in reply.json()["message"], reply.json()
    assert CANARY.decode() not in reply.text and len(reply.content) < 1000


@pytest.mark.slow  # serves a model (uvicorn on loopback)
def test_a_request_within_bounds_gets_the_generators_phrases(served):
    url, gen = served
    reply = requests.post(f"{url}/invocations", data=records({"n": 2, "seed": 5}, {"n": 1, "seed": 6, "temperature": 0.5}),
                          headers={"Content-Type": "application/json"}, timeout=60)
    assert reply.status_code == 200, reply.text[:500]
    rows = reply.json()["predictions"]
    assert [(r["seed"], r["index"]) for r in rows] == [(5, 0), (5, 1), (6, 0)]
    expected = gen.generate(2, 5, 0.85) + gen.generate(1, 6, 0.5)  # no temperature: the evaluated one
    assert [r["pianoroll"] for r in rows] == [r["pianoroll"] for r in expected]


def test_a_request_past_its_deadline_stops_before_the_next_row(logged, tmp_path):
    gen = load_generator(str(logged), tmp_path)
    reqs = parse_requests([{"n": 1, "seed": 1}, {"n": 1, "seed": 2}], 1.0)
    with pytest.raises(serve_app.HTTPFailure, match=r"after 0 of 2 rows") as err:
        serve_app.generate_rows(gen, reqs, deadline=time.monotonic())
    assert err.value.status == 503
    assert len(serve_app.generate_rows(gen, reqs, deadline=time.monotonic() + 60)) == 2


# the pyfunc's predict (what `mlflow models serve` calls) gets a DataFrame: the same bounds
FRAME_CASES: dict[str, tuple[list[dict], str | None]] = {
    "64_phrases_over_4_rows_allowed": ([{"n": 16, "seed": s} for s in range(4)], None),
    "65_phrases_over_5_rows": ([{"n": 13, "seed": s} for s in range(5)], "65 phrases asked for in 5 rows"),
    "1000_rows": ([{"n": 1}] * 1000, "1000 request rows: a request has 1..64 rows"),
    "an_empty_optional_cell_is_the_default": ([{"n": 1, "temperature": 0.5}, {"n": 1}], None),
    "infinite_temperature": ([{"n": 1, "temperature": float("inf")}], "temperature finite and > 0"),
}


@pytest.mark.parametrize("case", list(FRAME_CASES))
def test_the_pyfuncs_requests_are_bounded_per_request(case):
    rows, message = FRAME_CASES[case]
    if message is None:
        reqs = parse_requests(pd.DataFrame(rows), 0.85)
        assert sum(r.n for r in reqs) <= 64 and all(r.temperature in (0.5, 0.85) for r in reqs)
    else:
        with pytest.raises(BadRequest, match=message.replace("(", r"\(").replace("*", r"\*")):
            parse_requests(pd.DataFrame(rows), 0.85)


def test_a_loaded_model_is_the_saved_one(model_dir, logged):
    """Sanity for the cases above: the untouched files load, in both shapes."""
    assert load_model(model_dir).state_dict().keys() == load_model(logged / "data" / "vae").state_dict().keys()
