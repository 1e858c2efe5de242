"""params.yaml is parsed once into dataclasses; every mistake names the file, the key and why."""

from __future__ import annotations

from pathlib import Path

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
    assert params.representation.steps_per_bar == 48


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
    assert flat["train.epochs"] == params.train.epochs and flat["model.conv_channels"] == "[8, 16, 32]"
    assert all(isinstance(v, str | int | float | bool) or v is None for v in flat.values())
