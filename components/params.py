"""make_params: the component that turns the knob pipeline parameters into one params JSON.

Its inputs are the knobs of `components.knobs` (one per params.yaml key), so its Python source
is generated from the `Params` dataclasses: a knob added there appears here, in the pipeline
and in the KFP UI without touching this file. KFP ships a lightweight component as its source
text, which `inspect.getsource` reads; the generated text is registered with `linecache` so
that works for a function that has no file.
"""

from __future__ import annotations

import hashlib
import linecache

from kfp import dsl

from components.image import step_component
from components.knobs import knob_types

TEMPLATE = '''def make_params({signature}) -> str:
    """Validate every knob once; the params JSON every step component parses."""
    values = dict(locals())
    from components.knobs import params_json_from_knobs

    return params_json_from_knobs(values)
'''


def make_params_source() -> str:
    signature = ", ".join(f"{name}: {kind.__name__}" for name, kind, _ in knob_types())
    return TEMPLATE.format(signature=signature)


def _make_params_component() -> dsl.PythonComponent:
    source = make_params_source()
    filename = f"<lpdvae-make-params-{hashlib.sha256(source.encode()).hexdigest()[:12]}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    namespace: dict[str, object] = {"__name__": __name__}
    exec(compile(source, filename, "exec", dont_inherit=True), namespace)  # noqa: S102 (our own generated source)
    return step_component(namespace["make_params"])


make_params_op = _make_params_component()
