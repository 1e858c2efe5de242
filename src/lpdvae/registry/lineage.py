"""Where a model came from: DVC content hashes of data folders, the git revision, params hash.

`lineage` builds a model version's lineage tags; every runner (the CLI and DVC through
`lpdvae register`, `lpdvae run`, the KFP register component) calls it with explicit paths.
Hashes are computed with dvc-data exactly as `dvc add`/`dvc repro` compute them (md5 of the
`.dir` listing), so a hash taken inside a KFP pod equals the one in `dvc.lock`.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import yaml

from lpdvae.data.redact import redact_uri
from lpdvae.errors import DataError
from lpdvae.io import read_jsonl, sha256_file


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


STAGES = ("raw", "validated", "tensors")


def lineage(raw: Path | str, validated: Path, tensors: Path, *, git_revision: str | None, params_digest: str,
            run_id: str, dvc_lock: Path | None = None) -> dict[str, str]:
    """The registry tags that say where a model came from, from explicit paths (every runner).

    Data: the DVC hash of each folder as it is now (equal to dvc.lock's after `dvc repro`), the
    raw manifest's sha256 and its source URI (credentials masked), the quarantine count and its
    reasons (`reason: count`, most frequent first). `raw` may be where ingest's output is stored
    (an `s3://`/`minio://` prefix: the KFP register task): its hash then comes from the listing's
    ETags and only its manifest is read (`lpdvae.data.store`), never a song. Code
    and config: `git_revision` (None: not tagged) and `params_digest`. Run: `run_id`, the
    orchestrator's run (KFP's job id) or what the local runner was given. `dvc_lock`, when it
    exists, adds every output dvc.lock records as `lpdvae.dvclock.<path>` (models/vae included).
    """
    folders = {"validated": Path(validated), "tensors": Path(tensors)}
    quarantine = folders["validated"] / "quarantine.jsonl"
    _require(*folders.values(), quarantine)
    with tempfile.TemporaryDirectory() as scratch:
        raw_hash, manifest = _raw(raw, Path(scratch))
        try:
            manifest_rows, quarantined = read_jsonl(manifest), read_jsonl(quarantine)
        except ValueError as exc:
            raise DataError(str(exc)) from None
        tags = {"lpdvae.dvc.raw": raw_hash, **{f"lpdvae.dvc.{stage}": dvc_hash(path) for stage, path in folders.items()}}
        tags["lpdvae.manifest_sha256"] = sha256_file(manifest)
    # the source that was ingested (ingest records it per file), not the params' current one
    sources = sorted({str(row.get("source", "")) for row in manifest_rows} - {""})
    tags["lpdvae.source"] = " ".join(redact_uri(s) for s in sources)
    tags["lpdvae.quarantined"] = str(len(quarantined))
    reasons = Counter(str(row.get("reason", "unknown")) for row in quarantined)
    tags["lpdvae.quarantine_reasons"] = ", ".join(f"{r}: {n}" for r, n in sorted(reasons.items(), key=lambda x: (-x[1], x[0])))
    tags["lpdvae.params_digest"] = params_digest
    tags["lpdvae.pipeline_run_id"] = run_id
    if git_revision:
        tags["lpdvae.git_revision"] = git_revision
    if dvc_lock is not None:
        locked = {path: md5 for outs in dvc_lock_hashes(dvc_lock).values() for path, md5 in outs.items() if md5}
        tags.update({f"lpdvae.dvclock.{path}": md5 for path, md5 in sorted(locked.items())})
    return tags


def _raw(raw: Path | str, scratch: Path) -> tuple[str, Path]:
    """(DVC hash of the raw folder, its manifest.jsonl as a local file): a local folder is hashed
    as it lies; a stored one (`lpdvae.data.store`) from its listing, its manifest fetched into
    `scratch`."""
    from lpdvae.data.sources.base import MANIFEST
    from lpdvae.data.store import dvc_dir_hash, fetch_one, locate

    loc = locate(str(raw))
    if loc.remote:
        return dvc_dir_hash(loc), fetch_one(loc, MANIFEST, scratch / MANIFEST)
    _require(Path(raw), Path(raw) / MANIFEST)
    return dvc_hash(raw), Path(raw) / MANIFEST


def _require(*paths: Path) -> None:
    for path in paths:
        if not path.exists():
            raise DataError(f"{path}: missing, so the model's lineage cannot be recorded "
                            "(run the step that writes it first)")
