"""register: the blessed model becomes an MLflow registered model version with its lineage."""

from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.image import step_component


@step_component
def register_op(
    params_json: str,
    git_revision: str,
    pipeline_run_id: str,
    blessed: bool,
    model: Input[Model],
    evaluation: Input[Dataset],
    raw: Input[Dataset],
    validated: Input[Dataset],
    tensors: Input[Dataset],
    registration: Output[Artifact],
):
    """Register with lineage computed from the very artifacts that made the model; the git
    revision is the one the pipeline was compiled from (a pipeline parameter), the run id is
    KFP's (tag `lpdvae.pipeline_run_id`). An unblessed model is never registered: the pipeline
    gates this task with dsl.If, and the task checks `blessed` again (kfp.local runs it ungated)."""
    import json
    import os
    from pathlib import Path

    from components.runtime import step_params
    from lpdvae.io import sha256_file
    from lpdvae.lineage import dvc_hash
    from lpdvae.steps.register import register

    if not blessed:
        registration.metadata.update({"registered": False, "reason": "evaluation did not bless the model"})
        print("not blessed: nothing registered")
        return
    params = step_params(params_json)
    lineage = {f"lpdvae.dvc.{name}": dvc_hash(art.path)
               for name, art in (("raw", raw), ("validated", validated), ("tensors", tensors))}
    lineage["lpdvae.source"] = params.data.source
    lineage["lpdvae.manifest_sha256"] = sha256_file(Path(raw.path) / "manifest.jsonl")
    quarantine = Path(validated.path) / "quarantine.jsonl"
    lineage["lpdvae.quarantined"] = str(sum(1 for line in quarantine.open() if line.strip()))
    if git_revision:
        lineage["lpdvae.git_revision"] = git_revision
    os.environ["LPDVAE_PIPELINE_RUN_ID"] = pipeline_run_id
    result = register(Path(model.path), Path(evaluation.path), Path(registration.path), params, lineage)
    registration.metadata.update({"registered": True, "name": result.name, "version": result.version,
                                  "aliases": list(result.aliases), "model_uri": result.model_uri})
    print(json.dumps({"registered": result.name, "version": result.version, "aliases": result.aliases}))
