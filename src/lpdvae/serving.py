"""The registered model: an MLflow pyfunc that *generates* music.

Input rows `{n, seed, temperature}` -> one row per generated phrase with its 0/1 piano roll
(`[T, B, S, P]` as nested lists) and the phrase as base64 MIDI, so
`mlflow models serve -m models:/lpdvae@champion` answers HTTP requests with new music.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import mlflow.pyfunc

ARTIFACT = "vae"


class MusicGenerator(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from lpdvae.model import load_model

        self.vae = load_model(Path(context.artifacts[ARTIFACT]))

    def predict(self, context, model_input, params: dict[str, Any] | None = None):
        import pandas as pd

        from lpdvae.params import RepresentationParams
        from lpdvae.roll import midi_bytes, to_multitrack

        meta = self.vae.meta
        rep = RepresentationParams(**meta["representation"])
        threshold = float((params or {}).get("threshold", 0.5))
        rows = []
        for req in pd.DataFrame(model_input).to_dict("records"):
            probs = self.vae.sample(int(req.get("n", 1)), int(req.get("seed", 0)),
                                    float(req.get("temperature", 1.0)))
            for k, phrase in enumerate((probs > threshold).to(dtype=__import__("torch").uint8).numpy()):
                midi = midi_bytes(to_multitrack(phrase, meta["tracks"], rep))
                rows.append({"seed": int(req.get("seed", 0)), "index": k,
                             "pianoroll": phrase.tolist(),
                             "midi_base64": base64.b64encode(midi).decode("ascii")})
        return pd.DataFrame(rows)


def pip_requirements() -> list[str]:
    """Pinned from this environment; explicit, because MLflow's inference re-imports the model in a
    subprocess (~40 s) and still misses lpdvae itself, which travels as code_paths instead."""
    from importlib.metadata import version

    pins = [f"{pkg}=={version(pkg).split('+')[0]}" for pkg in
            ("mlflow", "torch", "numpy", "pandas", "pypianoroll", "pretty_midi", "pyyaml")]
    return pins


def code_paths() -> list[str]:
    return [str(Path(__file__).resolve().parent)]


def signature():
    from mlflow.models import infer_signature
    import pandas as pd

    example = pd.DataFrame([{"n": 1, "seed": 0, "temperature": 1.0}])
    out = pd.DataFrame([{"seed": 0, "index": 0, "pianoroll": "[[...]]", "midi_base64": "TVRoZA=="}])
    return example, infer_signature(example, out, params={"threshold": 0.5})
