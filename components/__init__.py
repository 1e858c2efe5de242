"""KFP v2 components: one per step, each a thin caller of the same lpdvae.steps function.

Every component runs in the project image (`LPDVAE_IMAGE`, default below) and receives the
whole params as one JSON string, produced and validated once by `make_params`.
"""

import os

IMAGE = os.environ.get("LPDVAE_IMAGE", "ghcr.io/lpdvae/lpdvae:0.1.0")

from components.evaluate import evaluate_op  # noqa: E402
from components.ingest import ingest_op  # noqa: E402
from components.params import make_params_op  # noqa: E402
from components.register import register_op  # noqa: E402
from components.tensorize import tensorize_op  # noqa: E402
from components.train import train_op  # noqa: E402
from components.validate import validate_op  # noqa: E402

__all__ = ["IMAGE", "make_params_op", "ingest_op", "validate_op", "tensorize_op", "train_op",
           "evaluate_op", "register_op"]
