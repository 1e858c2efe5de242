"""Every command has --help, `lpdvae --help` lists them all, and neither (nor `status`) imports
the heavy libraries."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lpdvae.cli import COMMANDS, build_parser

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "mlflow", "great_expectations", "pandas", "pypianoroll")


def lpdvae(*args: str, cwd: Path | None = None, flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`python -m lpdvae ...` without the MLflow URI an earlier in-process test may have exported
    (`mlflow.set_tracking_uri` sets MLFLOW_TRACKING_URI), so the params file decides."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run([sys.executable, *flags, "-m", "lpdvae", *args], capture_output=True,
                          text=True, cwd=cwd, env=env)


def imported_top_level(stderr: str) -> set[str]:
    """Top-level package names from `python -X importtime` output."""
    names = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)$", stderr, re.MULTILINE)
    return {n.split(".")[0] for n in names}


def test_top_level_help_lists_every_command():
    out = lpdvae("--help")
    assert out.returncode == 0
    for command in COMMANDS:
        assert command in out.stdout


@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_command_has_help(command):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([command, "--help"])
    assert exit_.value.code == 0


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["validate", "--help"],
                                  ["evaluate", "--help"], ["status"]])
def test_help_and_status_import_no_heavy_library(argv, tmp_path):
    out = lpdvae("--params", str(REPO / "params.yaml"), *argv, cwd=tmp_path, flags=("-X", "importtime"))
    assert out.returncode == 0, out.stderr[-2000:]
    imported = imported_top_level(out.stderr)
    assert "lpdvae" in imported  # the parse worked: the check is not vacuous
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_status_reads_the_run_files(tmp_path):
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports/registered.json").write_text('{"name": "lpdvae", "version": "3", "aliases": ["champion"]}')
    out = lpdvae("--params", str(REPO / "params.yaml"), "status", "--root", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "registered model: lpdvae version 3 (aliases: champion)" in out.stdout


@pytest.mark.slow
def test_status_registry_asks_mlflow(tmp_path):
    out = lpdvae("--params", str(REPO / "params.yaml"), "status", "--root", str(tmp_path), "--registry")
    assert out.returncode == 0, out.stderr[-2000:]
    assert re.search(r"^registry \(sqlite:///.*mlflow\.db\): model lpdvae: ", out.stdout, re.MULTILINE)


def test_every_register_cli_is_in_the_command_table():
    """A module still declaring a command outside COMMANDS would be silently unreachable."""
    declaring = {
        ".".join(p.relative_to(REPO / "src").with_suffix("").parts)
        for p in (REPO / "src/lpdvae").rglob("*.py")
        if re.search(r"^def register_cli\(", p.read_text(), re.MULTILINE)
    }
    assert declaring == set(COMMANDS.values())


def test_params_error_is_one_line_without_traceback(tmp_path):
    bad = tmp_path / "params.yaml"
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"]["epochs"] = "lots"
    bad.write_text(yaml.safe_dump(raw))
    out = lpdvae("--params", str(bad), "status")
    assert out.returncode == 2
    assert "train.epochs: expected an integer, got 'lots'" in out.stderr
    assert "Traceback" not in out.stderr


def mismatched_model(root: Path) -> Path:
    """A saved model whose model.json says latent_dim 8 while model.pt was trained with 4."""
    import json

    from lpdvae.model.files import build_model, save_model
    from lpdvae.params import load_params
    from tests.project import small_model_dotted

    params = load_params(REPO / "params.yaml", small_model_dotted(latent_dim=4))
    save_model(build_model(params), root, params)
    meta = json.loads((root / "model.json").read_text())
    meta["model"]["latent_dim"] = 8
    (root / "model.json").write_text(json.dumps(meta))
    return root


# issue 11's careless inputs: each is one line on stderr naming the key/file and the reason
CARELESS = {
    "yaml_parse_error": (["--set", "train.epochs=[1", "status"], 2,
                         "lpdvae: params error: --set 'train.epochs=[1': the value is not valid YAML "
                         "(while parsing a flow sequence)"),
    "zero_latent_dim": (["--set", "model.latent_dim=0", "status"], 2,
                        "lpdvae: params error: {params}: model.latent_dim: must be > 0, got 0"),
    "removed_key": (["--set", "model.conv_channels=[]", "status"], 2,
                    "lpdvae: params error: {params}: unknown key model.conv_channels (known keys at model: "
                    "bar_echo, bar_harmony, bar_latent_dim, bar_prior, conductor_hidden, decoder_hidden, dropout, encoder_hidden, latent_dim, "
                    "prior, prior_components, step_embedding, track_presence, voice_chain)"),
    "negative_warmup": (["--set", "train.warmup_steps=-5", "status"], 2,
                        "lpdvae: params error: {params}: train.warmup_steps: must be >= 0, got -5"),
    "negative_train_fraction": (["--set", "tensorize.train_fraction=-1", "status"], 2,
                                "lpdvae: params error: {params}: tensorize.train_fraction: must be in (0, 1), "
                                "got -1.0"),
    "missing_model": (["evaluate", "--model", "{tmp}/missing", "--tensors", "{tmp}/t", "--out", "{tmp}/e"], 1,
                      "lpdvae evaluate: {tmp}/missing/model.json: no model here (run `lpdvae train`)"),
    "model_json_not_matching_weights": (
        ["evaluate", "--model", "{tmp}/model", "--tensors", "{tmp}/t", "--out", "{tmp}/e"], 1,
        "lpdvae evaluate: {tmp}/model: model.json does not match model.pt: size mismatch for "),
    # ... the first weight, its two shapes, then "(and N more)"
}


@pytest.mark.parametrize("case", list(CARELESS))
def test_careless_input_is_a_one_line_error(case, tmp_path):
    argv, code, expected = CARELESS[case]
    if case == "model_json_not_matching_weights":
        mismatched_model(tmp_path / "model")
    params = REPO / "params.yaml"
    out = lpdvae("--params", str(params), *(a.format(tmp=tmp_path) for a in argv), cwd=tmp_path)
    assert out.returncode == code, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith(expected.format(params=params, tmp=tmp_path)), lines[-1]
    assert not [line for line in lines if line.startswith(("\t", " "))]  # no continuation lines
    assert not (tmp_path / "e").exists()
