"""evaluate: metrics, listenable samples and the blessing that gates register."""

from typing import NamedTuple

from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output

from components.image import step_component


@step_component
def evaluate_op(
    params_json: str,
    model: Input[Model],
    tensors: Input[Dataset],
    evaluation: Output[Dataset],
    samples_page: Output[HTML],
    metrics: Output[Metrics],
    blessing: Output[Markdown],
) -> NamedTuple("EvaluateOutputs", [("blessed", bool)]):
    """Evaluate the model; `blessed` is an output parameter because dsl.If compares parameters."""
    import math
    from collections import namedtuple
    from pathlib import Path

    from components.runtime import step_params
    from lpdvae.evaluation.sandbox_page import sandbox_page
    from lpdvae.steps.evaluate import evaluate

    params = step_params(params_json)
    out = Path(evaluation.path)
    result = evaluate(Path(model.path), Path(tensors.path), out, params)
    for key, value in result.metrics.items():
        if math.isfinite(value):  # KFP's executor output is JSON: no NaN
            metrics.log_metric(key.replace("/", "."), float(value))
    # <= 2 MB for the UI's sandboxed iframe: PNGs and short audio previews inlined, MIDI/WAV by path
    Path(samples_page.path).write_text(sandbox_page(out / "index.html", "evaluation"), encoding="utf-8")
    verdict = "**blessed**" if result.blessed else "**not blessed**"
    reasons = "".join(f"\n- {r}" for r in result.reasons) or "\n- every check passed"
    Path(blessing.path).write_text(f"# Blessing\n\n{verdict}\n{reasons}\n", encoding="utf-8")
    evaluation.metadata.update({"blessed": result.blessed, "reasons": list(result.reasons)})
    return namedtuple("EvaluateOutputs", ["blessed"])(bool(result.blessed))
