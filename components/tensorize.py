"""tensorize, one task or fanned out: plan chunks -> tensorize each chunk -> merge."""

from typing import NamedTuple

from kfp.dsl import Dataset, Input, Output

from components.image import step_component


@step_component
def tensorize_op(params_json: str, raw: Input[Dataset], validated: Input[Dataset], tensors: Output[Dataset]):
    """All accepted songs -> packed phrase shards + index.json with the song-level split."""
    from pathlib import Path

    from components.runtime import step_params
    from components.sharding import tensor_metadata
    from lpdvae.steps.tensorize import tensorize

    params = step_params(params_json)
    tensorize(Path(raw.path), Path(validated.path), Path(tensors.path), params)
    tensors.metadata.update(tensor_metadata(Path(tensors.path)))


@step_component
def plan_chunks_op(n_songs: int, songs_per_chunk: int, max_chunks: int
                   ) -> NamedTuple("ChunkPlan", [("chunks", list[int]), ("n_chunks", int)]):
    """How many tasks a fan-out over `n_songs` songs needs (validate: ingested songs; tensorize:
    accepted ones): one per `songs_per_chunk`, at most `max_chunks`; returns the chunk numbers to
    fan out over and their count."""
    from collections import namedtuple

    from components.sharding import n_chunks

    k = n_chunks(n_songs, songs_per_chunk, max_chunks)
    return namedtuple("ChunkPlan", ["chunks", "n_chunks"])(list(range(k)), k)


@step_component
def tensorize_chunk_op(params_json: str, raw_uri: str, validated_uri: str, chunk: int, n_chunks: int,
                       tensors: Output[Dataset]):
    """tensorize over chunk `chunk` of `n_chunks` contiguous runs of the accepted songs, reading
    where ingest's and validate's outputs are stored (the pipeline root's S3 prefixes) only
    `accepted.jsonl` and this chunk's songs, not the whole raw and validated artifacts."""
    import tempfile
    from pathlib import Path

    from components.runtime import step_params
    from components.sharding import tensorize_chunk

    params = step_params(params_json)
    with tempfile.TemporaryDirectory() as work:
        songs = tensorize_chunk(raw_uri, validated_uri, chunk, n_chunks, Path(tensors.path), params, Path(work))
    tensors.metadata.update({"chunk": chunk, "n_chunks": n_chunks, "songs": songs})


@step_component
def merge_tensors_op(params_json: str, chunks: Input[list[Dataset]], tensors: Output[Dataset]):
    """The chunk outputs, in chunk order, as one tensor dataset (same bytes as one task's)."""
    from pathlib import Path

    from components.runtime import step_params
    from components.sharding import merge_tensor_dirs, tensor_metadata

    params = step_params(params_json)
    ordered = sorted(chunks, key=lambda a: int(a.metadata.get("chunk", 0)))
    merge_tensor_dirs([Path(a.path) for a in ordered], Path(tensors.path), params)
    tensors.metadata.update(tensor_metadata(Path(tensors.path)))
    tensors.metadata["chunks"] = len(ordered)
