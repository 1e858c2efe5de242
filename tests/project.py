"""A throwaway copy of the project (git + DVC) in a temp dir, with params shrunk for speed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

SMALL_MODEL = {"step_embedding": 16, "encoder_hidden": 16, "latent_dim": 4, "bar_latent_dim": 0, "prior_components": 0,
               "conductor_hidden": 16, "decoder_hidden": 16}


def small_model(**sizes: Any) -> dict[str, Any]:
    """Tiny `model` params: SMALL_MODEL with `sizes` (a key params.yaml's model lacks is an
    error when the params load, not dropped)."""
    return {**SMALL_MODEL, **sizes}


def small_model_dotted(**sizes: Any) -> dict[str, Any]:
    return {f"model.{k}": v for k, v in small_model(**sizes).items()}


TINY = {
    "data": {"source": "demo://bach-chorales?songs=12"},
    "model": small_model(),
    "train": {"epochs": 1, "batch_size": 8, "checkpoint_every_steps": 10},
    "evaluate": {"n_samples": 2, "n_generated": 8, "temperatures": [1.0], "render_audio": False},
}


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def env() -> dict[str, str]:
    """The venv's bin first on PATH so dvc stage commands find `lpdvae`; no user MLflow URI."""
    e = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    return e


def sh(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def make_project(dest: Path, overrides: dict[str, Any] | None = None) -> Path:
    """Copy dvc.yaml, params.yaml (tiny) and src/ into `dest`, then `git init` + `dvc init`."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dvc.yaml", dest / "dvc.yaml")
    shutil.copytree(REPO / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    params = deep_merge(yaml.safe_load((REPO / "params.yaml").read_text()), deep_merge(TINY, overrides or {}))
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (dest / ".gitignore").write_text("/mlflow.db\n/mlartifacts/\n/reports/\n")
    sh(["git", "init", "-q", "-b", "main"], dest)
    sh(["git", "config", "user.email", "test@lpdvae.invalid"], dest)
    sh(["git", "config", "user.name", "lpdvae test"], dest)
    sh([str(BIN / "dvc"), "init", "-q"], dest)
    sh([str(BIN / "dvc"), "config", "core.analytics", "false"], dest)
    sh(["git", "add", "-A"], dest)
    sh(["git", "commit", "-qm", "project"], dest)
    return dest
