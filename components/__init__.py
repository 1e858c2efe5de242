"""KFP v2 components: one per pipeline step, each calling the lpdvae.steps function every runner
calls (the CLI, `lpdvae run`, DVC through the CLI) and turning its outputs into KFP artifacts and
metrics. What only KFP needs lives here too: the params as one JSON parameter (`make_params_op`),
validate and tensorize fanned out across pods (`plan_chunks_op` for both; `validate_chunk_op`,
`merge_validate_op`; `tensorize_chunk_op`, `merge_tensors_op`; over `components.sharding`), multi-node training as a Kubeflow Trainer TrainJob (`train_trainjob_op`,
`components.trainjob`; its nodes run `lpdvae train`) and the exit handler (`record_status_op`).

Every component runs in the project image (`LPDVAE_IMAGE`, default `ghcr.io/lpdvae/lpdvae:<version>`)
and receives the params as one JSON string made (and validated) once by `make_params_op` from the
knob pipeline parameters.

The components are imported lazily: inside a pod KFP runs with a runtime-only `kfp.dsl` that
cannot define components, and component bodies import the plain helper modules of this package
(`components.knobs`, `components.sharding`, `components.runtime`).
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "DEFAULT_IMAGE": "image", "IMAGE": "image",
    "make_params_op": "params",
    "ingest_op": "ingest",
    "validate_op": "validate", "validate_chunk_op": "validate",
    "merge_validate_op": "validate",
    "tensorize_op": "tensorize", "plan_chunks_op": "tensorize", "tensorize_chunk_op": "tensorize",
    "merge_tensors_op": "tensorize",
    "train_op": "train", "train_trainjob_op": "train",
    "evaluate_op": "evaluate",
    "register_op": "register",
    "record_status_op": "status",
}
STEPS = ("ingest", "validate", "tensorize", "train", "evaluate", "register")

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'components' has no attribute {name!r}")
    return getattr(importlib.import_module(f"components.{_WHERE[name]}"), name)
