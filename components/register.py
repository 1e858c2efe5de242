"""register: every evaluated model becomes an MLflow model version with its lineage."""

from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Model, Output

from components.image import step_component


@step_component
def register_op(
    params_json: str,
    git_revision: str,
    pipeline_run_id: str,
    model: Input[Model],
    evaluation: Input[Dataset],
    raw_uri: str,
    validated: Input[Dataset],
    tensors: Input[Dataset],
    registration: Output[Artifact],
    model_card: Output[Markdown],
    model_card_page: Output[HTML],
    summary: Output[Markdown],
):
    """Register the evaluated model, as every runner does: lineage from `lpdvae.registry.lineage.lineage`
    over the very artifacts that made the model (the raw data by `raw_uri`, where ingest's output is
    stored: hashed from the listing, no song downloaded), the git revision the pipeline was compiled from
    (a pipeline parameter) and KFP's run id (tag `lpdvae.pipeline_run_id`). An unblessed model
    becomes a version without aliases (auditable, served by nobody). The model card (Markdown, and
    HTML with its sample images inlined) and the run's summary (promoted or not, and why: the
    pipeline's last word) are artifacts the KFP UI shows."""
    import json
    import shutil
    import tempfile
    from pathlib import Path

    from components.runtime import step_params
    from lpdvae.evaluation.sandbox_page import sandbox_page
    from lpdvae.registry.lineage import lineage
    from lpdvae.registry.model_card import CARD_HTML, CARD_MD
    from lpdvae.steps.register import SUMMARY_FILE, register

    params = step_params(params_json)
    tags = lineage(raw_uri, Path(validated.path), Path(tensors.path), git_revision=git_revision or None,
                   params_digest=params.digest(), run_id=pipeline_run_id)
    report = Path(tempfile.mkdtemp(prefix="lpdvae-register-")) / "report"
    result = register(Path(model.path), Path(evaluation.path), Path(registration.path), params, tags,
                      tensor_dir=Path(tensors.path), report_dir=report,
                      validated=Path(validated.path))  # the data a later drift check compares with
    shutil.copyfile(report / CARD_MD, model_card.path)
    note = ("Shown inside the Kubeflow Pipelines UI, whose sandbox blocks downloads: the samples named "
            f"by path are in MLflow run <code>{result.run_id}</code>'s artifacts, under "
            "<code>model_card/</code>.")
    page = sandbox_page(report / CARD_HTML, "model_card", note=note)
    Path(model_card_page.path).write_text(page, encoding="utf-8")
    shutil.copyfile(report / SUMMARY_FILE, summary.path)
    registration.metadata.update({"registered": True, "name": result.name, "version": result.version,
                                  "aliases": list(result.aliases), "blessed": result.blessed,
                                  "model_uri": result.model_uri, "promoted": result.promoted,
                                  "verdict": result.verdict})
    summary.metadata.update({"promoted": result.promoted, "verdict": result.verdict})
    print(json.dumps({"registered": result.name, "version": result.version, "aliases": result.aliases}))
