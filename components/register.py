from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components import IMAGE


@dsl.component(base_image=IMAGE)
def register_op(
    params_json: str,
    git_revision: str,
    model: Input[Model],
    evaluation: Input[Dataset],
    raw: Input[Dataset],
    validated: Input[Dataset],
    tensors: Input[Dataset],
    registration: Output[Artifact],
):
    """Register the model version with lineage computed from the very artifacts that made it
    (git_revision is the revision the pipeline was compiled from)."""
    import json
    from pathlib import Path

    from lpdvae.io import sha256_file
    from lpdvae.lineage import dvc_hash
    from lpdvae.params import params_from_dict
    from lpdvae.steps.register import register

    params = params_from_dict(json.loads(params_json), source="params_json")
    lineage = {f"lpdvae.dvc.{name}": dvc_hash(art.path)
               for name, art in (("raw", raw), ("validated", validated), ("tensors", tensors))}
    lineage["lpdvae.source"] = params.data.source
    lineage["lpdvae.manifest_sha256"] = sha256_file(Path(raw.path) / "manifest.jsonl")
    quarantine = Path(validated.path) / "quarantine.jsonl"
    lineage["lpdvae.quarantined"] = str(sum(1 for line in quarantine.open() if line.strip()))
    if git_revision:
        lineage["lpdvae.git_revision"] = git_revision
    result = register(Path(model.path), Path(evaluation.path), Path(registration.path), params, lineage)
    registration.metadata.update({"name": result.name, "version": result.version, "aliases": result.aliases})
