"""params.yaml is parsed once into dataclasses; every mistake names the file, the key and why."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from lpdvae.params import Params, ParamsError, load_params, parse_override

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, obj) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(obj) if not isinstance(obj, str) else obj)
    return path


def project_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_project_params_file_loads_into_dataclasses():
    params = load_params(REPO / "params.yaml")
    assert isinstance(params, Params)
    assert params.track_names == ["soprano", "alto", "tenor", "bass"]
    assert params.representation.steps_per_bar == 16  # the chorales' 16th grid
    assert [t.kind for t in params.tracks] == ["monophonic"] * 4


def test_unknown_key_is_named_with_its_section(tmp_path):
    raw = project_params()
    raw["train"]["epoch"] = 3
    with pytest.raises(ParamsError, match=r"params.yaml: unknown key train.epoch"):
        load_params(write(tmp_path, raw))


def test_wrong_type_names_key_and_value(tmp_path):
    raw = project_params()
    raw["train"]["batch_size"] = "big"
    with pytest.raises(ParamsError, match=r"train.batch_size: expected an integer, got 'big'"):
        load_params(write(tmp_path, raw))


def test_bool_is_not_accepted_as_a_number(tmp_path):
    raw = project_params()
    raw["train"]["lr"] = True
    with pytest.raises(ParamsError, match=r"train.lr: expected a number"):
        load_params(write(tmp_path, raw))


def test_missing_required_track_key_is_named(tmp_path):
    raw = project_params()
    raw["tracks"][1].pop("name")
    with pytest.raises(ParamsError, match=r"missing key tracks\[1\].name"):
        load_params(write(tmp_path, raw))


def test_out_of_range_value_gives_the_rule(tmp_path):
    raw = project_params()
    raw["validate"]["max_bad_fraction"] = 1.5
    with pytest.raises(ParamsError, match=r"validate.max_bad_fraction: must be in \[0, 1\], got 1.5"):
        load_params(write(tmp_path, raw))


def test_split_fractions_must_leave_room_for_test(tmp_path):
    raw = project_params()
    raw["tensorize"]["train_fraction"] = 0.95
    with pytest.raises(ParamsError, match="test split gets the rest"):
        load_params(write(tmp_path, raw))


def test_duplicate_track_names_are_refused(tmp_path):
    raw = project_params()
    raw["tracks"][1]["name"] = raw["tracks"][0]["name"]
    with pytest.raises(ParamsError, match="names must be unique"):
        load_params(write(tmp_path, raw))


def test_invalid_yaml_names_the_file(tmp_path):
    with pytest.raises(ParamsError, match=r"params.yaml: not valid YAML"):
        load_params(write(tmp_path, "train: [unclosed"))


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(ParamsError, match=r"nope.yaml: file not found"):
        load_params(tmp_path / "nope.yaml")


def test_command_line_override_is_parsed_as_yaml():
    key, value = parse_override("train.epochs=3")
    params = load_params(REPO / "params.yaml", {key: value})
    assert params.train.epochs == 3


def test_override_with_wrong_type_is_refused():
    with pytest.raises(ParamsError, match="train.epochs: expected an integer"):
        load_params(REPO / "params.yaml", dict([parse_override("train.epochs=many")]))


def test_digest_is_stable_and_changes_with_any_knob():
    a = load_params(REPO / "params.yaml")
    b = load_params(REPO / "params.yaml")
    c = load_params(REPO / "params.yaml", {"train.seed": 99})
    assert a.digest() == b.digest() != c.digest()


def test_flat_params_are_scalars_for_mlflow():
    params = load_params(REPO / "params.yaml")
    flat = params.flat()
    assert flat["train.epochs"] == params.train.epochs
    assert flat["evaluate.temperatures"] == json.dumps(list(params.evaluate.temperatures))
    assert all(isinstance(v, str | int | float | bool) or v is None for v in flat.values())


def leaf_keys(obj: Any, prefix: str = "") -> list[tuple[str, tuple]]:
    """(dotted name, path into the raw dict) of every leaf of params.yaml (list items by index)."""
    if isinstance(obj, dict):
        return [leaf for k, v in obj.items() for leaf in leaf_keys(v, f"{prefix}.{k}" if prefix else k)]
    if isinstance(obj, list) and obj and all(isinstance(v, dict) for v in obj):
        return [leaf for i, v in enumerate(obj) for leaf in leaf_keys(v, f"{prefix}[{i}]")]
    return [(prefix, ())]


def raw_path(dotted: str) -> list[str | int]:
    """"tracks[1].name" -> ["tracks", 1, "name"]."""
    out: list[str | int] = []
    for part in dotted.split("."):
        name, _, index = part.partition("[")
        out.append(name)
        if index:
            out.append(int(index.rstrip("]")))
    return out


LEAVES = [name for name, _ in leaf_keys(project_params())]


def test_every_section_of_params_yaml_has_leaves_to_check():
    sections = {name.split(".")[0].split("[")[0] for name in LEAVES}
    assert sections == set(project_params())
    assert "tracks[0].kind" in LEAVES and "evaluate.stat_rel_tolerance" in LEAVES


@pytest.mark.parametrize("key", LEAVES)
def test_a_deleted_key_is_refused_naming_it(tmp_path, key):
    raw = project_params()
    *parents, leaf = raw_path(key)
    node = raw
    for part in parents:
        node = node[part]
    del node[leaf]
    with pytest.raises(ParamsError, match=rf"params.yaml: missing key {re.escape(key)}\b"):
        load_params(write(tmp_path, raw))


@pytest.mark.parametrize("section", sorted(project_params()))
def test_a_deleted_section_is_refused_naming_it(tmp_path, section):
    raw = project_params()
    del raw[section]
    with pytest.raises(ParamsError, match=rf"missing key {section}\b"):
        load_params(write(tmp_path, raw))


def test_set_with_invalid_yaml_is_a_params_error_naming_the_override():
    with pytest.raises(ParamsError, match=r"--set 'model.conv_channels=\[4, 8': the value is not valid YAML"):
        parse_override("model.conv_channels=[4, 8")


def test_set_without_an_equals_sign_is_a_params_error():
    with pytest.raises(ParamsError, match="expected KEY=VALUE"):
        parse_override("train.epochs")


@pytest.mark.parametrize(("override", "message"), [
    ("model.latent_dim=0", r"model.latent_dim: must be > 0, got 0"),
    ("model.dropout=1", r"model.dropout: must be in \[0, 1\)"),
    *[(f"model.{key}=0", rf"model.{key}: must be > 0") for key in project_params()["model"]
      if key not in ("dropout", "step_embedding", "voice_chain", "bar_latent_dim", "prior_components", "bar_prior",
                     "bar_harmony", "track_presence", "bar_echo", "prior")],
    ("model.prior=flow", r"model.prior: must be mixture or kde, got 'flow'"),
    ("model.bar_prior=gmm", r"model.bar_prior: must be normal, learned or kde, got 'gmm'"),
    ("model.bar_latent_dim=-1", r"model.bar_latent_dim: must be >= 0 \(0 = no per-bar latent\)"),
    ("model.prior_components=-1", r"model.prior_components: must be >= 0 \(0 = z ~ N\(0, I\)\)"),
    ("model.step_embedding=1", r"model.step_embedding: must be >= 2 \(the encoder halves it"),
    ("train.warmup_steps=-5", r"train.warmup_steps: must be >= 0, got -5"),
    ("tensorize.train_fraction=-1", r"tensorize.train_fraction: must be in \(0, 1\), got -1"),
    ("train.free_nats=-1", r"train.free_nats: must be >= 0"),
    ("train.transpose=13", r"train.transpose: must be in 0..12 semitones"),
    ("evaluate.temperatures=[]", r"evaluate.temperatures: must list at least one temperature"),
    ("evaluate.temperatures=[1.0, 0]", r"evaluate.temperatures: must be > 0"),
    ("evaluate.statistics=[loudness]", r"evaluate.statistics: unknown statistic 'loudness'"),
    ("evaluate.n_generated=1", r"evaluate.n_generated: must be >= 2"),
    ("evaluate.copy_match=1.5", r"evaluate.copy_match: must be in \(0, 1\]"),
    ("evaluate.min_margin=-2", r"evaluate.min_margin: must be in \[-1, 1\)"),
])
def test_an_out_of_range_override_is_a_clear_params_error(override, message):
    with pytest.raises(ParamsError, match=message):
        load_params(REPO / "params.yaml", dict([parse_override(override)]))


def test_an_unknown_track_kind_is_refused_with_the_known_ones(tmp_path):
    raw = project_params()
    raw["tracks"][2]["kind"] = "choir"
    with pytest.raises(ParamsError, match=r"tracks: tenor: kind must be one of monophonic, polyphonic, "
                                          r"drums, got 'choir'"):
        load_params(write(tmp_path, raw))


def test_removed_keys_are_refused_as_unknown(tmp_path):
    """Keys of the old model (threshold, pos_weight, per-dimension free bits) no longer exist."""
    for section, key in [("evaluate", "threshold"), ("train", "pos_weight"), ("train", "free_bits")]:
        raw = project_params()
        raw[section][key] = 0.5
        with pytest.raises(ParamsError, match=rf"unknown key {section}.{key}"):
            load_params(write(tmp_path, raw))


def test_full_profile_lays_its_values_over_params_yaml() -> None:
    from lpdvae.params import profile_overrides

    params = load_params(REPO / "params.yaml", profile_overrides(REPO / "profiles/full.yaml"))
    assert params.train.transpose == 3 and params.tensorize.hop_bars == 1
    assert params.data == load_params(REPO / "params.yaml").data  # untouched sections stay


def test_profile_with_an_unknown_key_is_refused_naming_it(tmp_path: Path) -> None:
    from lpdvae.params import profile_overrides

    profile = tmp_path / "typo.yaml"
    profile.write_text("train:\n  epoch: 3\n")
    with pytest.raises(ParamsError, match=r"unknown key train\.epoch"):
        load_params(REPO / "params.yaml", profile_overrides(profile))


def test_a_latent_density_with_a_bar_prior_of_its_own_is_refused():
    with pytest.raises(ParamsError, match="model.prior: kde draws the bars' z's too: model.bar_prior must be normal"):
        load_params(REPO / "params.yaml", {"model.prior": "kde", "model.bar_prior": "learned"})

