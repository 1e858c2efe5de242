"""The registered model: an MLflow pyfunc that *generates* music.

Input rows `{n, seed, temperature?}` -> one output row per generated phrase with its note codes
(`[T, B, S, P]` as nested lists: 0 silent, 1 sustain, 2 onset) and the phrase as base64 MIDI, so
`mlflow models serve -m models:/lpdvae@champion` answers HTTP requests with new music. The
trained model folder (`model.pt` + `model.json`) travels as the pyfunc artifact `vae`; a row
without a temperature uses the one evaluation chose on the validation split, so served music is
what evaluation measured.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd

ARTIFACT = "vae"
MAX_N = 64  # phrases per request row: bounds the work one HTTP call can ask for


class MusicGenerator(mlflow.pyfunc.PythonModel):
    """Samples z ~ N(0, I) per request row and draws phrases from the decoder at the temperature."""

    def __init__(self, temperature: float) -> None:
        self.temperature = temperature

    def load_context(self, context) -> None:
        from lpdvae.model.vae import load_model

        self.vae = load_model(Path(context.artifacts[ARTIFACT]))

    def predict(self, context, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Served requests arrive as a DataFrame (the signature); direct calls may pass dicts."""
        rows: list[dict[str, Any]] = []
        for req in _requests(model_input, self.temperature):
            rows.extend(self.generate(**req))
        return pd.DataFrame(rows, columns=["seed", "index", "pianoroll", "midi_base64"])

    def generate(self, n: int, seed: int, temperature: float) -> list[dict[str, Any]]:
        """`n` phrases for one request: seed, index, note codes and base64 MIDI each."""
        from lpdvae.data.roll import midi_bytes
        from lpdvae.params import RepresentationParams

        meta = self.vae.meta
        rep = RepresentationParams(**meta["representation"])
        phrases = self.vae.sample(n, seed, temperature).numpy()
        return [
            {
                "seed": seed,
                "index": k,
                "pianoroll": phrase.tolist(),
                "midi_base64": base64.b64encode(
                    midi_bytes(phrase, meta["tracks"], rep)
                ).decode("ascii"),
            }
            for k, phrase in enumerate(phrases)
        ]


def _requests(model_input: Any, temperature: float) -> list[dict[str, Any]]:
    """Validated `{n, seed, temperature}` rows from a DataFrame, a dict or a list of dicts."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    if isinstance(model_input, dict):
        model_input = [model_input]
    records = pd.DataFrame(model_input).to_dict("records")
    out = []
    for rec in records:
        req = {"n": int(_field(rec, "n", 1)), "seed": int(_field(rec, "seed", 0)),
               "temperature": float(_field(rec, "temperature", temperature))}
        if not 1 <= req["n"] <= MAX_N or req["temperature"] <= 0:
            raise MlflowException(
                f"bad request {req}: n must be in 1..{MAX_N} and temperature > 0",
                error_code=INVALID_PARAMETER_VALUE,
            )
        out.append(req)
    return out


def _field(rec: dict[str, Any], key: str, default: float) -> Any:
    """A request field; missing or NaN (an optional column left empty) gives the default."""
    value = rec.get(key)
    return default if value is None or value != value else value


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


def load_generator(model_uri: str) -> MusicGenerator:
    """The `MusicGenerator` behind a registry URI (`models:/NAME@ALIAS`) or a run's model URI."""
    return mlflow.pyfunc.load_model(model_uri).unwrap_python_model()


def model_folder(model_uri: str, dst: Path) -> Path:
    """The trained model folder (`model.pt` + `model.json`) inside a logged generator, downloaded
    into `dst`. Read from the MLmodel file rather than loaded as a pyfunc: loading would put that
    version's own copy of lpdvae (its code_paths) ahead of this one on sys.path."""
    import yaml
    from mlflow.artifacts import download_artifacts

    local = Path(download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    rel = mlmodel["flavors"]["python_function"]["artifacts"][ARTIFACT]["path"]
    return local / rel
