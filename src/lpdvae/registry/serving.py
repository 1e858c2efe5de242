"""The registered model: an MLflow pyfunc that *generates* music, with no pickled object in it.

Input rows `{n, seed, temperature?}` -> one output row per generated phrase with its note codes
(`[T, B, S, P]` as nested lists: 0 silent, 1 sustain, 2 onset) and the phrase as base64 MIDI.
The logged model is a `loader_module` pyfunc: its data folder `vae/` holds `model.pt` (a state
dict, read by the weights-only loader), `model.json` and `generator.json` (the temperature
evaluation chose on validation, which a row without one uses, so served music is what
evaluation measured). MLflow calls `_load_pyfunc(data_path)` below; `lpdvae generate` and
`lpdvae.registry.serve_app` do not even go through MLflow's loader (which imports the version's
own copy of lpdvae from its `code_paths`): they read the MLmodel file as YAML and load the data
folder with this lpdvae. A request asks for at most `MAX_PHRASES` phrases in all its rows.
"""

from __future__ import annotations

import base64
import json
import math
import numbers
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lpdvae.errors import LpdvaeError, ModelFileError
from lpdvae.io import NotRegularFile, first_line, regular_file_size

LOADER_MODULE = "lpdvae.registry.serving"  # MLflow imports it and calls `_load_pyfunc`
DATA = "vae"  # the data folder inside the logged model
GENERATOR_FILE = "generator.json"  # {"temperature": T}: plain JSON beside the weights
MAX_PHRASES = 64  # phrases per request, summed over its rows: bounds the work one HTTP call asks for
MAX_SEED = 2**63 - 1  # torch's generator takes a signed 64-bit seed
MLMODEL_MAX_BYTES = 1 << 20  # an MLmodel file is a few kB
COLUMNS = ["seed", "index", "pianoroll", "midi_base64"]


class BadRequest(LpdvaeError, ValueError):
    """A generation request out of range; the message names the row and field, never echoes input."""


@dataclass(frozen=True)
class Request:
    n: int
    seed: int
    temperature: float


class MusicGenerator:
    """Samples z from the model's prior per request row and draws phrases at the temperature."""

    def __init__(self, temperature: float, vae: Any = None) -> None:
        self.temperature = temperature
        self.vae = vae

    @classmethod
    def from_folder(cls, folder: Path) -> MusicGenerator:
        """The generator in a logged model's data folder: JSON and a weights-only state dict."""
        from lpdvae.model.files import load_model

        return cls(read_temperature(folder / GENERATOR_FILE), load_model(folder))

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        """Served requests arrive as a DataFrame (the signature); direct calls may pass dicts. A
        request out of range is MLflow's INVALID_PARAMETER_VALUE: `mlflow models serve` answers 400."""
        import pandas as pd
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        try:
            requests = parse_requests(model_input, self.temperature)
        except BadRequest as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
        rows = [row for req in requests for row in self.generate(req.n, req.seed, req.temperature)]
        return pd.DataFrame(rows, columns=COLUMNS)

    def generate(self, n: int, seed: int, temperature: float) -> list[dict[str, Any]]:
        """`n` phrases for one request row: seed, index, note codes and base64 MIDI each."""
        from lpdvae.data.roll import midi_bytes
        from lpdvae.params import RepresentationParams

        meta = self.vae.meta
        rep = RepresentationParams(**meta["representation"])
        phrases = self.vae.sample(n, seed, temperature).numpy()
        return [
            {"seed": seed, "index": k, "pianoroll": phrase.tolist(),
             "midi_base64": base64.b64encode(midi_bytes(phrase, meta["tracks"], rep)).decode("ascii")}
            for k, phrase in enumerate(phrases)
        ]


def _load_pyfunc(data_path: str) -> MusicGenerator:
    """MLflow's entry point for a `loader_module` pyfunc: the data folder, read without unpickling."""
    return MusicGenerator.from_folder(Path(data_path))


def parse_requests(model_input: Any, default_temperature: float) -> list[Request]:
    """Checked rows from a DataFrame, a dict or a list of dicts: each in range, and at most
    `MAX_PHRASES` phrases in all (checked before any row is converted, so a million rows cost nothing)."""
    import pandas as pd

    if isinstance(model_input, dict):
        model_input = [model_input]
    if not isinstance(model_input, list | pd.DataFrame):
        raise BadRequest(f"expected request rows (a list of objects), got a {type(model_input).__name__}")
    if not 1 <= len(model_input) <= MAX_PHRASES:
        raise BadRequest(f"{len(model_input)} request rows: a request has 1..{MAX_PHRASES} rows "
                         f"(n must be in 1..{MAX_PHRASES} phrases per request in all)")
    if isinstance(model_input, list) and not all(isinstance(r, dict) for r in model_input):
        raise BadRequest("each request row must be an object {n, seed, temperature}")
    records = _frame_records(model_input) if isinstance(model_input, pd.DataFrame) else model_input
    requests = [_request(i, rec, default_temperature) for i, rec in enumerate(records)]
    total = sum(r.n for r in requests)
    if total > MAX_PHRASES:
        raise BadRequest(f"{total} phrases asked for in {len(requests)} rows: n must be in 1..{MAX_PHRASES} "
                         "phrases per request in all (split the work over several requests)")
    return requests


def _request(i: int, rec: dict[str, Any], default_temperature: float) -> Request:
    req = Request(n=_integer(i, rec, "n", 1), seed=_integer(i, rec, "seed", 0),
                  temperature=_number(i, rec, "temperature", default_temperature))
    if not (1 <= req.n <= MAX_PHRASES and 0 <= req.seed <= MAX_SEED and math.isfinite(req.temperature)
            and req.temperature > 0):
        raise BadRequest(f"bad request row {i} (n={_short(req.n)}, seed={_short(req.seed)}, "
                         f"temperature={req.temperature}): "
                         f"n must be in 1..{MAX_PHRASES}, seed in 0..2**63-1, temperature finite and > 0")
    return req


def _short(value: int) -> str:
    """A number as the reply shows it: a 4000-digit one is not echoed whole."""
    text = str(value)
    return text if len(text) <= 24 else f"{text[:10]}...({len(text)} digits)"


def _frame_records(frame: Any) -> list[dict[str, Any]]:
    """A DataFrame's rows without their empty cells: an optional column one row left out is NaN
    there, which means "not given" (a NaN sent explicitly cannot be told apart and also gets the default)."""
    return [{k: v for k, v in rec.items() if not (isinstance(v, float) and v != v)}
            for rec in frame.to_dict("records")]


def _field(rec: dict[str, Any], key: str, default: float) -> Any:
    value = rec.get(key)
    return default if value is None else value


def _integer(i: int, rec: dict[str, Any], key: str, default: int) -> int:
    value = _field(rec, key, default)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or (
            not isinstance(value, numbers.Integral) and not float(value).is_integer()):
        raise BadRequest(f"bad request row {i}: {key} must be an integer, got a {type(value).__name__}")
    return int(value)


def _number(i: int, rec: dict[str, Any], key: str, default: float) -> float:
    value = _field(rec, key, default)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise BadRequest(f"bad request row {i}: {key} must be a number, got a {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:  # an integer past any float: as out of range as infinity
        return math.inf


def read_temperature(path: Path) -> float:
    """`generator.json`'s temperature: a small regular JSON file holding a finite number > 0."""
    data = _read_small_json(path)
    value = data.get("temperature") if isinstance(data, dict) else None
    try:
        temperature = float(value) if isinstance(value, float | int) and not isinstance(value, bool) else math.nan
    except OverflowError:  # an integer past any float
        temperature = math.inf
    if not 0 < temperature < math.inf:
        raise ModelFileError(f"{path}: not a generator config: needs {{\"temperature\": a finite number > 0}}")
    return temperature


def _read_small_json(path: Path) -> Any:
    _check_small_file(path, "a model logged by this lpdvae (register it again)")
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as exc:  # bad JSON and bad UTF-8 are ValueErrors
        raise ModelFileError(f"{path}: unreadable: {_reason(exc)}") from None


def _check_small_file(path: Path, what: str) -> None:
    """Refuse anything but a regular file of at most `MLMODEL_MAX_BYTES` before reading it."""
    size: int | None = None  # None: not a regular file
    try:
        size = regular_file_size(path)
    except FileNotFoundError:
        raise ModelFileError(f"{path}: missing: not {what}") from None
    except NotRegularFile:
        pass
    except OSError as exc:
        raise ModelFileError(f"{path}: unreadable ({_reason(exc)}): not {what}") from None
    if size is None or size > MLMODEL_MAX_BYTES:
        raise ModelFileError(f"{path}: not a regular file of at most {MLMODEL_MAX_BYTES} bytes: not {what}")


def _reason(exc: BaseException) -> str:
    """The exception's type and first line: "PermissionError: ..." says more than the line alone."""
    return f"{type(exc).__name__}: {first_line(exc)}" if str(exc).strip() else type(exc).__name__


def save_generator(model_dir: Path, temperature: float, dst: Path) -> Path:
    """The data folder to log: the weights and meta of `model_dir` plus `generator.json`."""
    from lpdvae.io import atomic_write_json
    from lpdvae.model.files import META_FILE, MODEL_FILE

    folder = dst / DATA
    folder.mkdir(parents=True)
    for name in (MODEL_FILE, META_FILE):
        shutil.copyfile(model_dir / name, folder / name)
    atomic_write_json(folder / GENERATOR_FILE, {"temperature": float(temperature)})
    return folder


def pip_requirements() -> list[str]:
    """Pinned from this environment; explicit, because MLflow's inference re-imports the model in a
    (slow) subprocess and still misses lpdvae itself, which travels as code_paths instead."""
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg).split('+')[0]}" for pkg in
            ("mlflow", "torch", "numpy", "pandas", "pypianoroll", "pretty_midi", "pyyaml")]


def code_paths() -> list[str]:
    return [str(Path(__file__).resolve().parents[1])]  # the lpdvae package


def signature(temperature: float):
    """(input example, signature): `{n, seed?, temperature?}` in, one row per phrase out."""
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, Schema

    roll = Array(Array(Array(Array("long"))))  # [tracks, bars, steps, pitches]
    sig = ModelSignature(
        inputs=Schema([ColSpec("long", "n"), ColSpec("long", "seed", required=False),
                       ColSpec("double", "temperature", required=False)]),
        outputs=Schema([ColSpec("long", "seed"), ColSpec("long", "index"),
                        ColSpec(roll, "pianoroll"), ColSpec("string", "midi_base64")]),
    )
    return pd.DataFrame([{"n": 1, "seed": 0, "temperature": temperature}]), sig


def pyfunc_data(local: Path) -> Path:
    """The model data folder inside a logged generator at `local`, from its MLmodel file read as
    YAML (nothing imported or unpickled). Versions logged before the loader-module pyfunc kept it
    as the artifact `vae` beside a pickled `python_model.pkl`, which is never read here."""
    import yaml

    path = local / "MLmodel"
    _check_small_file(path, "a logged model")
    try:
        flavor = yaml.safe_load(path.read_text())["flavors"]["python_function"]
        rel = flavor["data"] if "data" in flavor else flavor["artifacts"][DATA]["path"]
    except (OSError, ValueError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise ModelFileError(f"{path}: not an lpdvae generator's MLmodel ({_reason(exc)})") from None
    folder = (local / str(rel)).resolve()
    if not folder.is_relative_to(local.resolve()):
        raise ModelFileError(f"{path}: its data path {str(rel)[:200]!r} leaves the model folder")
    return folder


def model_folder(model_uri: str, dst: Path) -> Path:
    """The trained model folder (`model.pt` + `model.json`) inside a logged generator, downloaded
    into `dst`. Read from the MLmodel file rather than loaded as a pyfunc: loading would put that
    version's own copy of lpdvae (its code_paths) ahead of this one on sys.path and run it."""
    from mlflow.artifacts import download_artifacts

    return pyfunc_data(Path(download_artifacts(artifact_uri=model_uri, dst_path=str(dst))))


def load_generator(model_uri: str, dst: Path) -> MusicGenerator:
    """The `MusicGenerator` behind a registry URI (`models:/NAME@ALIAS`), a run's model URI or a
    local logged model, loaded by this lpdvae from the data alone."""
    local = Path(model_uri)
    folder = pyfunc_data(local) if local.is_dir() else model_folder(model_uri, dst)
    return MusicGenerator.from_folder(folder)
