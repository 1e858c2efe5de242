from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components import IMAGE


@dsl.component(base_image=IMAGE)
def tensorize_op(params_json: str, raw: Input[Dataset], validated: Input[Dataset], tensors: Output[Dataset]):
    """Phrase shards + index.json with the song-level split."""
    import json
    from pathlib import Path

    from lpdvae.lineage import dvc_hash
    from lpdvae.params import params_from_dict
    from lpdvae.steps.tensorize import tensorize

    params = params_from_dict(json.loads(params_json), source="params_json")
    tensorize(Path(raw.path), Path(validated.path), Path(tensors.path), params)
    index = json.loads((Path(tensors.path) / "index.json").read_text())
    tensors.metadata.update({f"n_{s}": v.get("n", 0) for s, v in index["splits"].items()})
    tensors.metadata["dvc_hash"] = dvc_hash(tensors.path)
