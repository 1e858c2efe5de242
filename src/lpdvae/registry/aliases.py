"""Promotion through MLflow registry aliases (`challenger`, `champion`), never deprecated stages.

Every alias change is also written as tags on the version it lands on (who, when, why, which
version was champion before), so `rollback` knows where to go and an auditor sees the history.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from lpdvae.errors import RegistryError
from lpdvae.params import Params

CHAMPION = "champion"
CHALLENGER = "challenger"
TAG_BLESSED = "lpdvae.blessed"
TAG_HISTORY = "lpdvae.champion_history"
TAG_PROMOTION_SUMMARY = "lpdvae.promotion.summary"
TAG_CARD = "lpdvae.model_card"  # runs:/<run>/model_card/model_card.md

log = logging.getLogger(__name__)


def client(params: Params):
    from mlflow import MlflowClient

    from lpdvae.registry.tracking import check_store, tracking_uri

    uri = tracking_uri(params)
    check_store(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def alias_version(c, name: str, alias: str):
    """The version behind an alias, or None when the alias (or the model) does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return c.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def is_blessed(version) -> bool:
    return str(version.tags.get(TAG_BLESSED, "")).lower() == "true"


def record_alias(c, name: str, alias: str, version: str, reason: str) -> str | None:
    """Point `alias` at `version` and tag the version with who/when/why/previous; returns previous."""
    before = alias_version(c, name, alias)
    previous = before.version if before is not None else None
    c.set_registered_model_alias(name, alias, str(version))
    tags = {"by": promoter(c.tracking_uri), "at": _now(), "reason": reason, "previous": previous or ""}
    for k, v in tags.items():
        c.set_model_version_tag(name, str(version), f"lpdvae.alias.{alias}.{k}", v)
    return previous


def set_champion(c, name: str, version: str, reason: str, forced: bool = False,
                 remember_previous: bool = True) -> str | None:
    """Point `champion` at `version`; record who/when/why/previous; returns the previous version.

    The chain of earlier champions lives in a registered-model tag so `rollback` can walk back;
    each version also carries `lpdvae.previous_champion`, the champion it replaced.
    """
    history = _history(c, name)
    prev = record_alias(c, name, CHAMPION, str(version), reason)
    if prev == str(version):  # already champion: it replaced nothing
        prev = None
    if remember_previous and prev is not None:
        history.append(prev)
    c.set_registered_model_tag(name, TAG_HISTORY, json.dumps(history))
    tags = {
        "lpdvae.promoted_by": promoter(c.tracking_uri),
        "lpdvae.promoted_at": _now(),
        "lpdvae.promoted_reason": reason,
        "lpdvae.promoted_forced": str(forced).lower(),
        "lpdvae.previous_champion": prev or "",
    }
    for k, v in tags.items():
        c.set_model_version_tag(name, str(version), k, v)
    log.info("%s: champion -> version %s (was %s): %s", name, version, prev, reason)
    return prev


def _history(c, name: str) -> list[str]:
    tags = c.get_registered_model(name).tags
    return json.loads(tags.get(TAG_HISTORY, "[]"))


def promote(params: Params, version: str, force: bool = False, reason: str | None = None) -> str | None:
    """Make `version` champion; refuse an unblessed one unless forced with a reason."""
    name = params.register.model_name
    c = client(params)
    mv = _get_version(c, name, version)
    current = alias_version(c, name, CHAMPION)
    if current is not None and str(current.version) == str(mv.version):
        raise RegistryError(f"{name} version {mv.version} is already champion: nothing to promote")
    if not is_blessed(mv):
        if not force:
            raise RegistryError(
                f"{name} version {version} is not blessed by evaluation "
                f"({mv.tags.get('lpdvae.blessing_reasons', 'no blessing recorded')}); "
                "use --force --reason TEXT to promote it anyway"
            )
        if not reason:
            raise RegistryError("--force needs --reason TEXT (it is recorded on the version)")
    return set_champion(c, name, version, reason or "promoted: blessed by evaluation", forced=force)


def rollback(params: Params, reason: str | None = None) -> tuple[str, str]:
    """Restore the champion that the current champion replaced; returns (from, to)."""
    name = params.register.model_name
    c = client(params)
    current = alias_version(c, name, CHAMPION)
    if current is None:
        raise RegistryError(f"{name} has no champion: nothing to roll back")
    history = [v for v in _history(c, name) if v != str(current.version)]  # never "back" onto itself
    if not history:
        raise RegistryError(f"{name} version {current.version} is the only champion there has been "
                            "(no previous champion recorded): nothing to roll back")
    previous = history.pop()
    c.set_registered_model_tag(name, TAG_HISTORY, json.dumps(history))
    set_champion(c, name, previous, reason or f"rollback from version {current.version}",
                 forced=True, remember_previous=False)
    c.set_model_version_tag(name, str(current.version), "lpdvae.rolled_back", "true")
    return str(current.version), previous


def list_versions(params: Params) -> list[dict[str, Any]]:
    name = params.register.model_name
    c = client(params)
    rows = []
    for mv in sorted(c.search_model_versions(f"name='{name}'"), key=lambda m: int(m.version)):
        full = c.get_model_version(name, mv.version)
        rows.append({
            "version": full.version, "aliases": list(full.aliases), "blessed": is_blessed(full),
            "run_id": full.run_id, "recon_note_f1": full.tags.get("lpdvae.metric.recon_note_f1"),
            "dataset": full.tags.get("lpdvae.dvc.tensors"),
            "promotion": promotion_line(full.tags),
        })
    return rows


def promotion_line(tags: dict[str, str]) -> str:
    """One line: register's promotion verdict and why (`lpdvae.promotion.summary`), and a later
    manual promotion or rollback when one happened."""
    line = tags.get(TAG_PROMOTION_SUMMARY) or "no promotion verdict recorded (registered before significance tests)"
    if tags.get("lpdvae.promoted_forced") == "true" or (
            tags.get("lpdvae.promoted_reason") and not tags["lpdvae.promoted_reason"].startswith("auto_promote")):
        line += f" | later promoted by hand: {tags.get('lpdvae.promoted_reason', '')}"
    if tags.get("lpdvae.rolled_back") == "true":
        line += " | rolled back"
    return line


def promotion_lines(tags: dict[str, str]) -> list[str]:
    """`describe`'s promotion section: the verdict, each reason, the intervals and the evaluation set."""
    lines = [f"promotion: {promotion_line(tags)}"]
    reasons = [r for r in tags.get("lpdvae.promotion.reasons", "").split("; ") if r]
    lines += [f"  - {r}" for r in reasons]
    if tags.get("lpdvae.eval_set.sha256"):
        lines.append(f"evaluation set: {tags.get('lpdvae.eval_set.split', 'test')} split, "
                     f"{tags.get('lpdvae.eval_set.n_phrases', '?')} phrases, sha256 {tags['lpdvae.eval_set.sha256']}")
    compared = sorted(k for k in tags if k.startswith("lpdvae.compared.") and k.endswith(".eval_set"))
    for k in compared:
        v = k.split(".")[2]
        lines.append(f"measured as champion against {v}: note F1 "
                     f"{float(tags.get(f'lpdvae.compared.{v}.recon_note_f1', 'nan')):.4f} on set {tags[k][:12]}…")
    return lines


def describe(params: Params, version: str) -> dict[str, Any]:
    c = client(params)
    mv = _get_version(c, params.register.model_name, version)
    tags = dict(sorted(mv.tags.items()))
    return {"name": mv.name, "version": mv.version, "aliases": list(mv.aliases), "run_id": mv.run_id,
            "source": mv.source, "description": mv.description or "", "promotion": promotion_lines(tags),
            "tags": tags}


def card_folder(params: Params, version: str, dest: Path) -> Path:
    """Download `version`'s model card folder (model_card.md, .html, samples, summary.md) into `dest`."""
    from mlflow.artifacts import download_artifacts

    from lpdvae.registry.tracking import tracking_uri

    name = params.register.model_name
    mv = _get_version(client(params), name, version)
    uri = mv.tags.get(TAG_CARD)
    if not uri:
        raise RegistryError(f"{name} version {version} has no model card (registered before register wrote cards)")
    from mlflow.exceptions import MlflowException

    try:
        folder = Path(download_artifacts(artifact_uri=uri.rsplit("/", 1)[0], dst_path=str(dest),
                                         tracking_uri=tracking_uri(params)))
    except (MlflowException, OSError) as exc:
        raise RegistryError(_card_gone(name, version, uri, (str(exc).splitlines() or [type(exc).__name__])[0])) from None
    if not (folder / "model_card.md").is_file():
        raise RegistryError(_card_gone(name, version, uri, "model_card.md is not in the downloaded folder"))
    return folder


def _card_gone(name: str, version: str, uri: str, detail: str) -> str:
    return (f"{name} version {version}: its model card {uri} cannot be read from the artifact store ({detail}): "
            "the run's artifacts are gone; restore the artifact store (mlartifacts/ beside a local mlflow.db)")


def _get_version(c, name: str, version: str):
    from mlflow.exceptions import MlflowException

    try:
        return c.get_model_version(name, str(version))
    except MlflowException:
        raise RegistryError(f"{name} has no version {version}") from None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


CURRENT_USER = "/api/2.0/mlflow/users/current"  # MLflow's auth app: who this request authenticated as


def promoter(tracking_uri: str) -> str:
    """Who promotes: the MLflow user the server authenticated these registry calls as (its auth
    app's users/current), not the OS login, which in a pod or on a shared box names nobody. A
    server without auth, or a local store, has no login to record: that is said instead. A
    login the server refuses is a RegistryError (the promotion's own writes would fail too)."""
    import requests

    if not tracking_uri.startswith(("http://", "https://")):
        return f"unauthenticated (local store {tracking_uri.split(':', 1)[0]})"
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token and not user else {}
    resp = requests.get(tracking_uri.rstrip("/") + CURRENT_USER, auth=(user, password or "") if user else None,
                        headers=headers, timeout=30)
    if resp.status_code == 404:  # no auth app on this server: nobody is authenticated
        return "unauthenticated (the MLflow server runs without auth)"
    if resp.status_code != 200:
        raise RegistryError(f"MLflow refused the login (HTTP {resp.status_code}): set MLFLOW_TRACKING_USERNAME "
                            "and MLFLOW_TRACKING_PASSWORD to your MLflow user")
    return str(resp.json()["user"]["username"])


def _cmd(args: argparse.Namespace, params: Params) -> int:
    if args.action == "list":
        rows = list_versions(params)
        if args.json:
            print(json.dumps(rows, indent=2))
        for r in [] if args.json else rows:
            print(f"v{r['version']:>3}  aliases={','.join(r['aliases']) or '-':<22} blessed={r['blessed']!s:<5} "
                  f"recon_note_f1={r['recon_note_f1']}  run={r['run_id']}\n      {r['promotion']}")
    elif args.action == "promote":
        prev = promote(params, args.version, args.force, args.reason)
        print(f"{params.register.model_name}: champion -> version {args.version} (was {prev or 'none'})")
    elif args.action == "rollback":
        old, new = rollback(params, args.reason)
        print(f"{params.register.model_name}: champion rolled back from version {old} to {new}")
    elif args.action == "describe":
        info = describe(params, args.version)
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            print(f"{info['name']} version {info['version']}  aliases: {', '.join(info['aliases']) or 'none'}  "
                  f"run: {info['run_id']}")
            if info["description"]:
                print(info["description"])
            print("\n".join(info["promotion"]))
            print("tags:")
            print("\n".join(f"  {k} = {v}" for k, v in info["tags"].items()))
    elif args.action == "card":
        _show_card(params, args)
    return 0


def _show_card(params: Params, args: argparse.Namespace) -> None:
    """Print the card's Markdown, or with --open write the folder and open its HTML page."""
    import webbrowser

    if not args.open:
        with tempfile.TemporaryDirectory(prefix="lpdvae-card-") as tmp:
            print((card_folder(params, args.version, Path(tmp)) / "model_card.md").read_text(encoding="utf-8"))
        return
    dest = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix=f"lpdvae-card-v{args.version}-"))
    page = card_folder(params, args.version, dest) / "model_card.html"
    print(page)
    webbrowser.open(page.resolve().as_uri())  # no browser (a server, CI): the path above is the answer


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("registry", help="list, promote, roll back and describe registered model versions",
                       description="Manage the MLflow registry aliases of register.model_name.")
    acts = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = acts.add_parser("list", help="every version with aliases, blessing and metrics")
    ls.add_argument("--json", action="store_true")
    pr = acts.add_parser("promote", help="make VERSION the champion (refuses unblessed versions)")
    pr.add_argument("version")
    pr.add_argument("--force", action="store_true", help="promote an unblessed version")
    pr.add_argument("--reason", help="why (required with --force; recorded as a tag)")
    rb = acts.add_parser("rollback", help="restore the previous champion")
    rb.add_argument("--reason", help="why (recorded as a tag)")
    de = acts.add_parser("describe", help="a version's promotion verdict and reasons, run, source and tags")
    de.add_argument("version")
    de.add_argument("--json", action="store_true")
    ca = acts.add_parser("card", help="print VERSION's model card (Markdown), or --open its HTML page")
    ca.add_argument("version")
    ca.add_argument("--open", action="store_true", help="download the card folder, print and open its HTML path")
    ca.add_argument("--out", help="folder to download the card into with --open (default: a new temp folder)")
    p.set_defaults(func=_cmd)
