"""register: every evaluated model becomes an MLflow model version with its lineage."""

from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.image import step_component


@step_component
def register_op(
    params_json: str,
    git_revision: str,
    pipeline_run_id: str,
    model: Input[Model],
    evaluation: Input[Dataset],
    raw: Input[Dataset],
    validated: Input[Dataset],
    tensors: Input[Dataset],
    registration: Output[Artifact],
):
    """Register the evaluated model, as every runner does: lineage from `lpdvae.lineage.lineage`
    over the very artifacts that made the model, the git revision the pipeline was compiled from
    (a pipeline parameter) and KFP's run id (tag `lpdvae.pipeline_run_id`). An unblessed model
    becomes a version without aliases (auditable, served by nobody)."""
    import json
    from pathlib import Path

    from components.runtime import step_params
    from lpdvae.lineage import lineage
    from lpdvae.steps.register import register

    params = step_params(params_json)
    tags = lineage(Path(raw.path), Path(validated.path), Path(tensors.path), git_revision=git_revision or None,
                   params_digest=params.digest(), run_id=pipeline_run_id)
    result = register(Path(model.path), Path(evaluation.path), Path(registration.path), params, tags,
                      tensor_dir=Path(tensors.path), report_dir=Path(registration.path).parent / "register-report")
    registration.metadata.update({"registered": True, "name": result.name, "version": result.version,
                                  "aliases": list(result.aliases), "blessed": result.blessed,
                                  "model_uri": result.model_uri})
    print(json.dumps({"registered": result.name, "version": result.version, "aliases": result.aliases}))
