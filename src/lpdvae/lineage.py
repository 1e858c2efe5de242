"""Where a model came from: DVC content hashes of data folders, the git revision, params hash.

Hashes are computed with dvc-data exactly as `dvc add`/`dvc repro` compute them (md5 of the
`.dir` listing), so a hash taken inside a KFP pod equals the one in `dvc.lock`.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import yaml


def dvc_hash(path: str | Path) -> str:
    """DVC's md5 for a file or folder (`<md5>.dir` for folders)."""
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db.local import LocalHashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    path = Path(path).resolve()
    if not path.exists():
        raise FileNotFoundError(f"{path}: cannot hash, it does not exist")
    fs = LocalFileSystem()
    with tempfile.TemporaryDirectory() as tmp:
        odb = LocalHashFileDB(fs, tmp)
        _, _, obj = build(odb, str(path), fs, "md5", dry_run=True)
    return obj.hash_info.value


def git_revision(cwd: str | Path = ".") -> str | None:
    """HEAD's sha, suffixed `-dirty` when tracked files differ; None outside a git checkout."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{rev}-dirty" if dirty else rev


def dvc_lock_hashes(lock_path: str | Path = "dvc.lock") -> dict[str, dict[str, str]]:
    """{stage: {out path: md5}} from dvc.lock; empty when there is no lock file yet."""
    lock_path = Path(lock_path)
    if not lock_path.exists():
        return {}
    try:
        lock = yaml.safe_load(lock_path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{lock_path}: not valid YAML: {exc}") from None
    out: dict[str, dict[str, str]] = {}
    for stage, body in (lock.get("stages") or {}).items():
        out[stage] = {o["path"]: o.get("md5", "") for o in body.get("outs", []) or []}
    return out
