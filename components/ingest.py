"""ingest: `data.source` -> a content-addressed folder of songs with manifest.jsonl."""

from typing import NamedTuple

from kfp.dsl import Dataset, Output

from components.image import step_component


@step_component
def ingest_op(params_json: str, refresh_key: str, raw: Output[Dataset]
              ) -> NamedTuple("IngestOutputs", [("raw_uri", str), ("n_songs", int)]):
    """Fetch the songs of `data.source` into `raw` (files/ + manifest.jsonl).

    Returns where `raw` is stored (its URI under the pipeline root) and its song count: the
    fanned-out data tasks and register read from that prefix only what they need, where an
    `Input[Dataset]` would make KFP download every file into every pod.

    `refresh_key` only enters KFP's cache key: the same params with the same key are a cache
    hit (and so are the data steps after it); `python -m pipelines run --host` passes the time,
    so each run re-reads the source.
    """
    from collections import namedtuple
    from pathlib import Path

    from components.runtime import step_params
    from lpdvae.data.redact import redact_uri
    from lpdvae.io import read_jsonl
    from lpdvae.steps.ingest import ingest

    params = step_params(params_json)
    ingest(params.data.source, Path(raw.path), params)
    rows = read_jsonl(Path(raw.path) / "manifest.jsonl")
    raw.metadata.update({"source": redact_uri(params.data.source), "files": len(rows),
                         "bytes": sum(int(r.get("bytes", 0)) for r in rows), "refresh_key": refresh_key})
    return namedtuple("IngestOutputs", ["raw_uri", "n_songs"])(raw.uri, len(rows))
