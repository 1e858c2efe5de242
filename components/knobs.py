"""params.yaml knobs as KFP pipeline parameters: one typed parameter per flattened key.

`train.epochs` becomes the pipeline parameter `train__epochs: int`; list and mapping knobs
(`tracks`, `evaluate.temperatures`, `evaluate.tolerances`) become `list`/`dict` parameters; a knob
that may be null (`data.sha256`) is a `str` whose empty value means null. The KFP UI then shows
one typed field per knob, and run comparisons show which knob changed.

Plain functions only (no kfp import): the `make_params` component calls `params_json_from_knobs`
inside the image.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lpdvae.params import Params, params_from_dict

SEP = "__"
KFP_TYPES = (bool, int, float, str, list, dict)


@dataclass(frozen=True)
class Knob:
    """One params key as a pipeline parameter."""

    key: str  # dotted params key: "train.epochs"
    type: type  # bool | int | float | str | list | dict
    default: Any
    nullable: bool = False  # None in params <-> "" in KFP

    @property
    def name(self) -> str:
        return self.key.replace(".", SEP)


def _kfp_type(hint: Any) -> tuple[type, bool]:
    """(KFP parameter type, nullable) of a Params field type hint."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        return _kfp_type(inner[0])[0], True
    origin = typing.get_origin(hint) or hint
    if origin in (tuple, list):
        return list, False
    if origin is dict:
        return dict, False
    if origin in KFP_TYPES:
        return origin, False
    raise TypeError(f"no KFP parameter type for {hint!r}")  # pragma: no cover


def knobs(params: Params) -> list[Knob]:
    """Every knob of `params` in params.yaml order, defaults from `params`."""
    plain = params.to_dict()
    out: list[Knob] = []
    for section in dataclasses.fields(Params):
        value = getattr(params, section.name)
        if dataclasses.is_dataclass(value):
            hints = typing.get_type_hints(type(value))
            for f in dataclasses.fields(value):
                out.append(_knob(f"{section.name}.{f.name}", hints[f.name], plain[section.name][f.name]))
        else:
            out.append(_knob(section.name, typing.get_type_hints(Params)[section.name], plain[section.name]))
    return out


def _knob(key: str, hint: Any, default: Any) -> Knob:
    kind, nullable = _kfp_type(hint)
    if default is None:
        default = ""
    elif kind is float:
        default = float(default)
    return Knob(key, kind, default, nullable)


def knob_types() -> list[tuple[str, type, bool]]:
    """(knob name, KFP type, nullable) of every params key in params.yaml order, from the
    `Params` types alone (no values: params.yaml is their only source)."""
    top = typing.get_type_hints(Params)
    out: list[tuple[str, type, bool]] = []
    for section in dataclasses.fields(Params):
        hint = top[section.name]
        if dataclasses.is_dataclass(hint):
            hints = typing.get_type_hints(hint)
            out += [(f"{section.name}{SEP}{f.name}", *_kfp_type(hints[f.name])) for f in dataclasses.fields(hint)]
        else:
            out.append((section.name, *_kfp_type(hint)))
    return out


def _nullable_keys() -> set[str]:
    return {name for name, _, nullable in knob_types() if nullable}


def _integral(value: Any) -> Any:
    """Whole floats back to ints inside lists/mappings: KFP passes their numbers as doubles."""
    if isinstance(value, list):
        return [_integral(v) for v in value]
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    return int(value) if isinstance(value, float) and value.is_integer() else value


def params_from_knobs(values: dict[str, Any]) -> Params:
    """Rebuild and validate `Params` from pipeline-parameter values keyed by knob name."""
    nullable = _nullable_keys()
    raw: dict[str, Any] = {}
    for name, value in values.items():
        if name in nullable and value == "":
            value = None
        elif isinstance(value, str) and value[:1] in "[{" and name not in nullable:
            value = json.loads(value)  # a list/mapping typed into a text field as JSON
        if isinstance(value, list | dict):
            value = _integral(value)
        section, _, key = name.partition(SEP)
        if key:
            raw.setdefault(section, {})[key] = value
        else:
            raw[section] = value
    return params_from_dict(raw, source="pipeline parameters")


def params_json_from_knobs(values: dict[str, Any]) -> str:
    """Canonical params JSON (what every step component receives) from knob values."""
    return json.dumps(params_from_knobs(values).to_dict(), sort_keys=True)


def knob_values(params: Params) -> dict[str, Any]:
    """Knob name -> value: the arguments that reproduce `params` as pipeline parameters."""
    return {k.name: k.default for k in knobs(params)}


_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][A-Za-z0-9_]*):(?P<value>[^#]*?)\s*(?:#\s?(?P<comment>.*))?$")
_COMMENT_LINE = re.compile(r"^(?P<indent> *)#\s?(?P<comment>.*)$")


def knob_descriptions(params_file: str | Path) -> dict[str, str]:
    """Knob name -> what the params file's comments say about it (the KFP UI shows it per parameter).

    A key's description is the block of `#` lines right above it plus its inline comment and the
    deeper-indented `#` lines that continue it; a section holding a list (`tracks`) takes the
    block above its first item. Keys without a comment are left out.
    """
    out: dict[str, list[str]] = {}
    section, block, last = "", [], None  # last: the knob whose inline comment may continue
    for line in Path(params_file).read_text(encoding="utf-8").splitlines():
        comment, key = _COMMENT_LINE.match(line), _KEY_LINE.match(line)
        if comment:
            if last and len(comment["indent"]) > 2:
                out[last].append(comment["comment"].strip())
            else:
                block.append(comment["comment"].strip())
            continue
        if key and not key["indent"]:
            section = key["key"]
            if key["value"].strip():  # a scalar top-level knob
                out[section] = [key["comment"] or ""]
        elif key and len(key["indent"]) == 2:
            name = f"{section}{SEP}{key['key']}"
            out[name] = [*block, key["comment"] or ""]
            last = name if key["comment"] else None
            block = []
            continue
        elif line.lstrip().startswith("- ") and block and section not in out:
            out[section] = block  # the comment above a list's first item describes the list
        block, last = [], None
    return {k: " ".join(v).strip() for k, v in out.items() if " ".join(v).strip()}
