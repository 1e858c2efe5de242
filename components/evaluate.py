from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output

from components import IMAGE


@dsl.component(base_image=IMAGE)
def evaluate_op(
    params_json: str,
    model: Input[Model],
    tensors: Input[Dataset],
    evaluation: Output[Dataset],
    samples_page: Output[HTML],
    metrics: Output[Metrics],
    blessing: Output[Markdown],
) -> NamedTuple("EvaluateOutputs", [("blessed", bool)]):
    """Metrics, samples and the blessing; `blessed` is a parameter so dsl.If can gate register."""
    import base64
    import json
    import mimetypes
    import re
    from collections import namedtuple
    from pathlib import Path

    from lpdvae.params import params_from_dict
    from lpdvae.steps.evaluate import evaluate

    params = params_from_dict(json.loads(params_json), source="params_json")
    out = Path(evaluation.path)
    result = evaluate(Path(model.path), Path(tensors.path), out, params)
    for key, value in result.metrics.items():
        metrics.log_metric(key.replace("/", "."), float(value))

    def inline(match: re.Match) -> str:  # the HTML artifact is one file: embed images and audio
        path = out / match.group(2)
        if not path.exists():
            return match.group(0)
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return f'{match.group(1)}="data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"'

    page = (out / "index.html").read_text()
    Path(samples_page.path).write_text(re.sub(r'(src|href)="(samples/[^"]+)"', inline, page))
    verdict = "**blessed**" if result.blessed else "**not blessed**"
    reasons = "".join(f"\n- {r}" for r in result.reasons)
    Path(blessing.path).write_text(f"# Blessing\n\n{verdict}{reasons}\n")
    return namedtuple("EvaluateOutputs", ["blessed"])(result.blessed)
