"""dvc.yaml declares every params key each stage reads, so `dvc repro` reruns a stage when one changes.

Each stage's own command (the `lpdvae ...` part of its dvc.yaml `cmd`) runs on a tiny project
through `lpdvae.cli.main`, with the params it loads replaced by a recording stand-in: every field
read (`params.tensorize.hop_bars`, a section handed to a helper and read there, a property such
as `steps_per_bar`, `to_dict()["representation"]`) adds its dotted key to that stage's set.
Two reads are not recorded, on purpose: `digest()` (the params' identity, tagged for lineage,
not a value an output is computed from) and `flat()` (all params logged to MLflow as a record).
"""

from __future__ import annotations

import dataclasses
import functools
import shlex
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

import lpdvae.cli
from lpdvae.params import Params, params_from_dict
from tests.project import REPO, TINY, deep_merge

STAGES = ["ingest", "validate", "tensorize", "train", "evaluate", "register"]
DVC_YAML = yaml.safe_load((REPO / "dvc.yaml").read_text())


# --- the recording stand-in ------------------------------------------------------------------

class RecordingDict(dict):
    """`to_dict()` of recorded params: a key looked up is a read of that whole section; walking
    the whole mapping reads every section."""

    def __init__(self, data: dict[str, Any], reads: set[str]) -> None:
        super().__init__(data)
        self._reads = reads

    def __getitem__(self, key: str) -> Any:
        self._reads.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self._reads.add(key)
        return super().get(key, default)

    def _all(self) -> None:
        self._reads.update(super().keys())

    def __iter__(self) -> Iterator[str]:
        self._all()
        return super().__iter__()

    def items(self):  # type: ignore[override]
        self._all()
        return super().items()

    def values(self):  # type: ignore[override]
        self._all()
        return super().values()

    def keys(self):  # type: ignore[override]
        self._all()
        return super().keys()


def recording(obj: Any, reads: set[str], prefix: str = "") -> Any:
    """`obj` (Params or one of its sections) as an instance of a subclass, so `isinstance` and
    `dataclasses.asdict` keep working, that adds `prefix + field` to `reads` on each field read."""
    proxy = object.__new__(_recording_class(type(obj)))
    object.__setattr__(proxy, "_recorded", (obj, prefix, reads))
    return proxy


@functools.cache
def _recording_class(cls: type) -> type:
    fields = {f.name for f in dataclasses.fields(cls)}

    def __getattribute__(self, name: str) -> Any:  # noqa: N807
        if name.startswith("__") or name == "_recorded":
            return object.__getattribute__(self, name)
        target, prefix, reads = object.__getattribute__(self, "_recorded")
        if name in fields:
            value = getattr(target, name)
            if dataclasses.is_dataclass(value):  # a section: its fields are recorded as they are read
                return recording(value, reads, f"{prefix}{name}.")
            reads.add(prefix + name)
            return value
        if cls is Params and name == "to_dict":
            return lambda: RecordingDict(target.to_dict(), reads)
        if cls is Params and name in ("digest", "flat"):  # identity and the MLflow record: not reads
            return getattr(target, name)
        return object.__getattribute__(self, name)  # methods, properties: run on the stand-in

    return type(f"Recording{cls.__name__}", (cls,), {"__getattribute__": __getattribute__})


def test_the_recording_stand_in_records_fields_sections_properties_and_to_dict():
    params = tiny_params("sqlite:///unused.db")
    reads: set[str] = set()
    p = recording(params, reads)
    assert isinstance(p, Params) and p.representation.steps_per_bar == params.representation.steps_per_bar
    assert dataclasses.asdict(p.model) == dataclasses.asdict(params.model)
    assert p.track_names == params.track_names and p.to_dict()["validate"] == params.to_dict()["validate"]
    assert p.digest() == params.digest()
    assert reads == {"representation.beat_resolution", "representation.beats_per_bar", "tracks", "validate",
                     *(f"model.{f.name}" for f in dataclasses.fields(params.model))}


# --- dvc.yaml's declarations and what each stage's command reads --------------------------------

def tiny_params(tracking_uri: str) -> Params:
    """tests/project.py's TINY params, 6 songs, one process per step (a worker process's reads
    would not be recorded here), a local MLflow store."""
    raw = deep_merge(yaml.safe_load((REPO / "params.yaml").read_text()), TINY)
    raw["data"]["source"] = "demo://bach-chorales?songs=6"
    raw["tensorize"]["workers"] = 1
    raw["train"]["nproc"] = 1
    raw["mlflow"]["tracking_uri"] = tracking_uri
    return params_from_dict(raw, "tiny params")


def declared(stage: str) -> set[str]:
    return set(DVC_YAML["stages"][stage].get("params", []))


def stage_argv(stage: str) -> list[str]:
    """The `lpdvae ...` command of a dvc.yaml stage, without the shell steps after `&&`."""
    argv = shlex.split(DVC_YAML["stages"][stage]["cmd"].split("&&")[0])
    assert argv[0] == "lpdvae", DVC_YAML["stages"][stage]["cmd"]
    return argv[1:]


def covered(key: str, declarations: set[str]) -> bool:
    """A read key (`section.key`, or a whole section) is declared by its section or itself."""
    return key in declarations or key.split(".")[0] in declarations


@pytest.fixture(scope="module")
def reads(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """{stage: params keys its command read}, the six commands run in order in a tiny project."""
    project = tmp_path_factory.mktemp("declared")
    params = tiny_params(f"sqlite:///{project / 'mlflow.db'}")
    out: dict[str, set[str]] = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(project)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        for stage in STAGES:
            out[stage] = set()
            mp.setattr(lpdvae.cli, "load_params", lambda *_a, _r=out[stage], **_k: recording(params, _r))
            assert lpdvae.cli.main(stage_argv(stage)) == 0, stage
    return out


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_dvc_yaml_declares_every_params_key_the_stage_reads(reads: dict[str, set[str]], stage: str):
    undeclared = sorted(k for k in reads[stage] if not covered(k, declared(stage)))
    assert not undeclared, f"dvc.yaml stage {stage} reads but does not declare params: {undeclared}"


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_dvc_yaml_declares_no_params_the_stage_does_not_read(reads: dict[str, set[str]], stage: str):
    """Over-declaring reruns a stage for nothing; a declared section must have a key read."""
    unread = sorted(d for d in declared(stage)
                    if not any(k == d or k.split(".")[0] == d or k == d.split(".")[0] for k in reads[stage]))
    assert not unread, f"dvc.yaml stage {stage} declares params it never reads: {unread}"


def test_every_stage_command_is_an_lpdvae_command_run_here():
    assert [s for s in DVC_YAML["stages"]] == STAGES
    assert all(stage_argv(s)[0] == s for s in STAGES)


def test_a_key_is_covered_by_its_section_or_itself():
    assert covered("tensorize.hop_bars", {"tensorize"}) and covered("tensorize.hop_bars", {"tensorize.hop_bars"})
    assert covered("tracks", {"tracks"}) and not covered("tensorize.hop_bars", {"tensorize.workers"})
    assert not covered("representation", {"representation.n_bars"}), "a whole-section read needs the section"


def test_reading_an_unknown_key_through_the_stand_in_fails_as_on_params():
    p = recording(tiny_params("sqlite:///unused.db"), set())
    with pytest.raises(AttributeError):
        p.train.no_such_key  # noqa: B018
