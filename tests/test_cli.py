"""Every command has --help, and `lpdvae --help` lists them all."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lpdvae.cli import build_parser

COMMANDS = ["demo-data", "ingest", "validate", "tensorize", "train", "evaluate", "register",
            "run", "status", "registry", "audit", "generate"]


def lpdvae(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lpdvae", *args], capture_output=True, text=True)


def test_top_level_help_lists_every_command():
    out = lpdvae("--help")
    assert out.returncode == 0
    for command in COMMANDS:
        assert command in out.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help(command):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([command, "--help"])
    assert exit_.value.code == 0


def test_params_error_is_one_line_without_traceback(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("train: {epochs: lots}\ntracks: [{name: a}]\n")
    out = lpdvae("--params", str(bad), "status")
    assert out.returncode == 2
    assert "train.epochs: expected an integer, got 'lots'" in out.stderr
    assert "Traceback" not in out.stderr
