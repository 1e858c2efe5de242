"""validate: per-song stats, Great Expectations suite and data docs, quarantine."""

from kfp.dsl import HTML, Dataset, Input, Metrics, Output

from components.image import step_component


@step_component
def validate_op(params_json: str, raw: Input[Dataset], validated: Output[Dataset], data_docs: Output[HTML],
                metrics: Output[Metrics]):
    """Validate every song; the GX data docs page becomes an HTML artifact, the counts metrics.

    The docs site is built in a scratch folder, not in `validated`: it holds run times, and the
    validated Dataset must be the same bytes for the same input (as with DVC).

    Fails the task (ValidationFailed) when the quarantined fraction passes
    `validate.max_bad_fraction`, so nothing downstream trains on a broken batch. The drift check
    against the registered champion's training data (lpdvae.validation.drift; found through the MLflow run
    the champion came from, as no DVC cache is in the pod) is a section of the data docs page;
    under `drift.stop_on_drift` a drifting batch fails the task (DataError) before training.
    """
    import json
    import math
    import tempfile
    from pathlib import Path

    from components.runtime import step_params
    from lpdvae.evaluation.sandbox_page import sandbox_page
    from lpdvae.steps.validate import validate
    from lpdvae.validation.drift_reference import champion_reference

    params = step_params(params_json)
    out = Path(validated.path)
    with tempfile.TemporaryDirectory() as scratch:
        docs = Path(scratch) / "data_docs"
        try:
            result = validate(Path(raw.path), out, params, docs_dir=docs, reference=champion_reference(params))
        finally:  # a drift stop leaves the docs (with the drift section) in place: show them
            if (docs / "index.html").exists():
                note = ("Shown inside the Kubeflow Pipelines UI, whose sandbox blocks downloads: the drift "
                        "report's files named by path are not part of this artifact; its Data drift "
                        "section is the same report.")
                page = sandbox_page(docs / "index.html", "data_docs", note=note)
                Path(data_docs.path).write_text(page, encoding="utf-8")
        validated.metadata["drift_verdict"] = result.drift_verdict
    summary = json.loads((out / "summary.json").read_text())
    for key, value in summary.items():
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            metrics.log_metric(key, float(value))
            validated.metadata[key] = value
