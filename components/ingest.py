from kfp import dsl
from kfp.dsl import Dataset, Output

from components import IMAGE


@dsl.component(base_image=IMAGE)
def ingest_op(params_json: str, raw: Output[Dataset]):
    """Fetch data.source into a content-addressed folder with manifest.jsonl."""
    import json
    from pathlib import Path

    from lpdvae.params import params_from_dict
    from lpdvae.steps.ingest import ingest

    params = params_from_dict(json.loads(params_json), source="params_json")
    result = ingest(params.data.source, Path(raw.path), params)
    raw.metadata.update({"source": params.data.source, "files": result.n_files})
