"""validate: per-song stats, Great Expectations suite and data docs, quarantine; one task, or
fanned out like tensorize (plan -> per-chunk stats -> one merge)."""

from typing import NamedTuple

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
    from pathlib import Path

    from components.runtime import report_validation, step_params
    from lpdvae.steps.validate import validate
    from lpdvae.validation.drift_reference import champion_reference

    params = step_params(params_json)
    report_validation(lambda docs: validate(Path(raw.path), Path(validated.path), params, docs_dir=docs,
                                            reference=champion_reference(params)), validated, data_docs, metrics)


@step_component
def validate_chunk_op(params_json: str, raw_uri: str, chunk: int, n_chunks: int, part: Output[Dataset]):
    """The per-song half of validate over chunk `chunk` of `n_chunks` contiguous runs of the
    manifest: its stats rows and fingerprints (`lpdvae.validation.parts`), reading only the
    manifest and this chunk's songs from `raw_uri` (ingest's output as stored)."""
    import tempfile
    from pathlib import Path

    from components.runtime import step_params
    from components.sharding import validate_chunk

    params = step_params(params_json)
    with tempfile.TemporaryDirectory() as work:
        songs = validate_chunk(raw_uri, chunk, n_chunks, Path(part.path), params, Path(work))
    part.metadata.update({"chunk": chunk, "n_chunks": n_chunks, "songs": songs})


@step_component
def merge_validate_op(params_json: str, parts: Input[list[Dataset]], validated: Output[Dataset],
                      data_docs: Output[HTML], metrics: Output[Metrics]
                      ) -> NamedTuple("ValidateOutputs", [("validated_uri", str), ("n_accepted", int)]):
    """The corpus-wide half of validate over every chunk's part: one stats table, tune groups and
    duplicates across all songs, the GX suite, quarantine, the gate and the drift check; the same
    outputs (bytes, docs, metrics, failures) as `validate_op` over the whole raw artifact. Returns
    where `validated` is stored and its accepted count: the tensorize fan-out plans from the count
    and its chunks read only `accepted.jsonl` from there."""
    from collections import namedtuple
    from pathlib import Path

    from components.runtime import report_validation, step_params
    from lpdvae.steps.validate import merge_parts
    from lpdvae.validation.drift_reference import champion_reference
    from lpdvae.validation.parts import read_part

    params = step_params(params_json)
    loaded = [read_part(Path(p.path)) for p in parts]
    report_validation(lambda docs: merge_parts(loaded, Path(validated.path), params, docs_dir=docs,
                                               reference=champion_reference(params)), validated, data_docs, metrics)
    return namedtuple("ValidateOutputs", ["validated_uri", "n_accepted"])(validated.uri,
                                                                         int(validated.metadata["n_accepted"]))
