from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Output

from components import IMAGE


@dsl.component(base_image=IMAGE)
def validate_op(params_json: str, raw: Input[Dataset], validated: Output[Dataset], data_docs: Output[HTML]):
    """Great Expectations validation; the data docs page becomes an HTML artifact."""
    import json
    import shutil
    from pathlib import Path

    from lpdvae.params import params_from_dict
    from lpdvae.steps.validate import validate

    params = params_from_dict(json.loads(params_json), source="params_json")
    validate(Path(raw.path), Path(validated.path), params)
    shutil.copyfile(Path(validated.path) / "data_docs" / "index.html", data_docs.path)
    summary = json.loads((Path(validated.path) / "summary.json").read_text())
    validated.metadata.update({k: v for k, v in summary.items() if isinstance(v, int | float | str)})
