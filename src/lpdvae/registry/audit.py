"""`lpdvae audit`: which exact data, code and params produced a model, and how to get that data back."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path
from typing import Any

from lpdvae.data.redact import redact_uri
from lpdvae.errors import RegistryError
from lpdvae.layout import Layout
from lpdvae.params import Params
from lpdvae.registry.aliases import client

LAYOUT = Layout(Path("."))  # restore commands run at the repository root
URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))$")


def resolve(c, uri: str):
    m = URI.match(uri)
    if not m:
        raise RegistryError(f"{uri!r}: expected models:/NAME/VERSION or models:/NAME@ALIAS")
    from mlflow.exceptions import MlflowException

    try:
        if m["version"]:
            return c.get_model_version(m["name"], m["version"])
        return c.get_model_version_by_alias(m["name"], m["alias"])
    except MlflowException as exc:
        raise RegistryError(f"{uri}: not in the registry ({exc.message})") from None


def restore_commands(rev: str, tensors_hash: str | None, version: str, repo_url: str | None) -> list[str]:
    """Shell commands that bring back the training tensors of a version, byte for byte."""
    if not rev:
        return []
    cmds = [
        f"git checkout {rev} && dvc checkout data/tensors",
        f"git checkout {rev} && dvc pull data/tensors",
        f"dvc get {repo_url or '<repo-url>'} data/tensors --rev {rev} -o tensors-v{version}",
    ]
    if tensors_hash:
        cmds.append("python -c \"from lpdvae.registry.lineage import dvc_hash; print(dvc_hash('data/tensors'))\""
                    f"   # prints {tensors_hash}")
    return cmds


def _origin_url() -> str | None:
    try:
        out = subprocess.run(["git", "remote", "get-url", "origin"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    url = out.stdout.strip() if out.returncode == 0 else ""
    return redact_uri(url) or None  # a token in the remote URL is never printed


def lineage(params: Params, uri: str) -> dict[str, Any]:
    """Version -> run -> git revision -> params -> DVC hashes -> source -> validation, as a dict."""
    c = client(params)
    mv = resolve(c, uri)
    tags = mv.tags
    run = c.get_run(mv.run_id) if mv.run_id else None
    rev = tags.get("lpdvae.git_revision", "")
    clean_rev = rev.removesuffix("-dirty")
    data = {stage: tags.get(f"lpdvae.dvc.{stage}") for stage in ("raw", "validated", "tensors")}
    return {
        "model": {"name": mv.name, "version": mv.version, "aliases": list(mv.aliases), "source": mv.source},
        "run": {"run_id": mv.run_id, "experiment_id": run.info.experiment_id if run else None,
                "dataset_dvc_hash": run.data.tags.get("lpdvae.dataset_dvc_hash") if run else None},
        "git_revision": rev or None,
        "git_dirty": rev.endswith("-dirty"),
        "params_digest": tags.get("lpdvae.params_digest"),
        "data": data,
        "dvc_lock": {k.removeprefix("lpdvae.dvclock."): v for k, v in sorted(tags.items())
                     if k.startswith("lpdvae.dvclock.")},
        "source": tags.get("lpdvae.source"),
        "manifest_sha256": tags.get("lpdvae.manifest_sha256"),
        "validation_report": [str(LAYOUT.validated / "summary.json"),
                              str(LAYOUT.validated / "quarantine.jsonl"),
                              str(LAYOUT.data_docs / "index.html")],
        "quarantined": tags.get("lpdvae.quarantined"),
        "blessed": tags.get("lpdvae.blessed"),
        "blessing_reasons": tags.get("lpdvae.blessing_reasons"),
        "metrics": {k.removeprefix("lpdvae.metric."): v for k, v in sorted(tags.items())
                    if k.startswith("lpdvae.metric.")},
        "pipeline_run_id": tags.get("lpdvae.pipeline_run_id"),
        "restore": restore_commands(clean_rev, data["tensors"], mv.version, _origin_url()),
    }


def versions_for_dataset(params: Params, dataset_hash: str) -> list[dict[str, Any]]:
    """Versions of register.model_name whose training tensors (or raw data) have this DVC hash."""
    c = client(params)
    name = params.register.model_name
    out = []
    for mv in c.search_model_versions(f"name='{name}'"):
        full = c.get_model_version(name, mv.version)
        hit = [s for s in ("raw", "validated", "tensors")
               if _same_hash(full.tags.get(f"lpdvae.dvc.{s}"), dataset_hash)]
        if hit:
            out.append({"name": name, "version": full.version, "aliases": list(full.aliases), "stage": hit[0],
                        "run_id": full.run_id, "git_revision": full.tags.get("lpdvae.git_revision")})
    return sorted(out, key=lambda r: int(r["version"]))


def _same_hash(tag: str | None, wanted: str) -> bool:
    """DVC folder hashes end in `.dir`; accept the hash with or without it."""
    return tag is not None and tag.removesuffix(".dir") == wanted.strip().removesuffix(".dir")


def render(info: dict[str, Any]) -> str:
    m = info["model"]
    lines = [
        f"model     {m['name']} version {m['version']} (aliases: {', '.join(m['aliases']) or 'none'})",
        f"  run       {info['run']['run_id']} (experiment {info['run']['experiment_id']})",
        f"  git       {info['git_revision']}" + ("  WARNING: working tree was dirty" if info["git_dirty"] else ""),
        f"  params    sha256 {info['params_digest']}",
    ]
    for stage, h in info["data"].items():
        lines.append(f"  data      {stage:<9} dvc {h}")
    lines += [
        f"  source    {info['source']} (manifest sha256 {info['manifest_sha256']})",
        f"  validate  {info['quarantined']} songs quarantined (report: "
        f"{', '.join(info['validation_report'])} at that revision)",
        f"  blessed   {info['blessed']} ({info['blessing_reasons']})",
        f"  pipeline  run {info['pipeline_run_id']}",
        "restore this dataset:",
        *[f"  {cmd}" for cmd in info["restore"]],
    ]
    return "\n".join(lines)


def _cmd(args: argparse.Namespace, params: Params) -> int:
    if args.dataset:
        rows = versions_for_dataset(params, args.dataset)
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for r in rows or [{"version": None}]:
                print("no model version was trained on that dataset" if r["version"] is None else
                      f"{r['name']} version {r['version']} ({r['stage']}; aliases {','.join(r['aliases']) or '-'};"
                      f" git {r['git_revision']})")
        return 0
    if not args.model_uri:
        raise RegistryError("give MODEL_URI (models:/NAME/VERSION or models:/NAME@ALIAS) or --dataset HASH")
    info = lineage(params, args.model_uri)
    print(json.dumps(info, indent=2) if args.json else render(info))
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="lineage of a model version, or the versions trained on a dataset",
                       description="Print which data (DVC hashes), code (git revision) and params produced "
                       "a model, and the commands that restore that dataset.")
    p.add_argument("model_uri", nargs="?", help="models:/NAME/VERSION or models:/NAME@ALIAS")
    p.add_argument("--dataset", metavar="HASH", help="list the model versions trained on this DVC hash")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd)
