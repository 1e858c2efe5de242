"""`lpdvae run`: the six steps in order in this process (no DVC), and `lpdvae status`.

`dvc repro` is the cached runner (`make run` uses it); `lpdvae run` is the same chain without
caching, for a quick try or a debugger. Everything it writes lands under `--root`: the data,
model and reports folders and, unless params or `$MLFLOW_TRACKING_URI` name another store,
`<root>/mlflow.db`; the model is registered with the lineage of `<root>`'s data. `lpdvae status` tells a user where things landed,
from the files the last run wrote (no MLflow import, so it answers at once); `--registry` also
asks the MLflow registry for the model's current aliases.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from lpdvae.data.redact import redact_uri
from lpdvae.errors import RegistryError
from lpdvae.layout import Layout
from lpdvae.params import Params
from lpdvae.registry.tracking import check_store, pinned_store, tracking_uri

log = logging.getLogger(__name__)


def run_all(params: Params, layout: Layout, source: str | None = None, run_id: str = "local") -> dict:
    """Run ingest → register under `layout.root` (MLflow store included); returns the register
    step's record. `run_id` is tagged as the model's `lpdvae.pipeline_run_id`."""
    from lpdvae.registry.lineage import git_revision, lineage
    from lpdvae.steps.evaluate import evaluate
    from lpdvae.steps.ingest import ingest
    from lpdvae.steps.register import register
    from lpdvae.steps.tensorize import tensorize
    from lpdvae.steps.train import launch
    from lpdvae.steps.validate import validate
    from lpdvae.validation.drift_reference import champion_reference

    def register_step() -> object:
        tags = lineage(layout.raw, layout.validated, layout.tensors, git_revision=git_revision(Path.cwd()),
                       params_digest=params.digest(), run_id=run_id)
        return register(layout.model, layout.eval, layout.registered, params, tags,
                        tensor_dir=layout.tensors, report_dir=layout.register_report,
                        validated=layout.validated, data_docs=layout.data_docs)

    chain = [
        ("ingest", lambda: ingest(source or params.data.source, layout.raw, params)),
        ("validate", lambda: validate(layout.raw, layout.validated, params, layout.data_docs,
                                      champion_reference(params, layout.root))),
        ("tensorize", lambda: tensorize(layout.raw, layout.validated, layout.tensors, params)),
        ("train", lambda: launch(layout.tensors, layout.model, params)),
        ("evaluate", lambda: evaluate(layout.model, layout.tensors, layout.eval, params)),
        ("register", register_step),
    ]
    with pinned_store(params, layout.root) as uri:
        log.info("MLflow store: %s", redact_uri(uri))
        for i, (name, step) in enumerate(chain, 1):
            log.info("step %d/6: %s", i, name)
            step()
    return json.loads(layout.registered.read_text())


def status_lines(params: Params, layout: Layout) -> list[str]:
    """What a user wants after a run: the model version, the samples, the MLflow UI command."""
    lines = []
    if layout.registered.exists():
        reg = json.loads(layout.registered.read_text())
        aliases = ", ".join(reg.get("aliases", [])) or "none"
        lines.append(f"registered model: {reg.get('name')} version {reg.get('version')} (aliases: {aliases})")
        if reg.get("verdict"):
            lines.append(f"promotion: {reg['verdict']}")
        card = layout.register_report / "model_card.md"
        if card.exists():
            lines.append(f"model card: {card}")
    else:
        lines.append("registered model: none yet (run `make run`)")
    samples = sorted((layout.eval / "samples").glob("*.mid")) if layout.eval.exists() else []
    if samples:
        lines.append(f"generated MIDI sample: {samples[0]}")
        lines.append(f"samples page: {layout.eval / 'index.html'}")
    blessing = layout.eval / "blessing.json"
    if blessing.exists():
        b = json.loads(blessing.read_text())
        lines.append(f"blessed: {b.get('blessed')}" + (f" ({'; '.join(b.get('reasons', []))})" if b.get("reasons") else ""))
    uri = tracking_uri(params, layout.root)
    problem = store_broken(uri)
    if problem:
        lines.append(problem)
    elif uri.startswith("sqlite:"):
        lines.append(
            f"MLflow UI: .venv/bin/mlflow ui --backend-store-uri {uri} "
            "--port 5000, then open http://127.0.0.1:5000"
        )
    else:
        lines.append(f"MLflow UI: {redact_uri(uri)}")
    return lines


def registry_lines(params: Params, layout: Layout) -> list[str]:
    """The registry's current aliases of register.model_name (imports MLflow: asked for only)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = tracking_uri(params, layout.root)
    name = params.register.model_name
    try:
        model = MlflowClient(tracking_uri=uri, registry_uri=uri).get_registered_model(name)
    except MlflowException as exc:
        return [f"registry ({redact_uri(uri)}): model {name}: {redact_uri(exc.message)}"]
    aliases = ", ".join(f"{a} -> version {v}" for a, v in sorted(model.aliases.items())) or "none"
    return [f"registry ({redact_uri(uri)}): {name} aliases: {aliases}"]


def store_broken(uri: str) -> str:
    """`check_store`'s one line when the store is unusable, else ""."""
    try:
        check_store(uri)
    except RegistryError as exc:
        return str(exc)
    return ""


def _cmd_run(args: argparse.Namespace, params: Params) -> int:
    layout = Layout(Path(args.root).resolve())
    run_all(params, layout, args.source, args.run_id)
    print("\n".join(status_lines(params, layout)))
    summary = layout.register_report / "summary.md"
    if summary.exists():  # the run's last word: promoted or not, and why
        print(f"\n{summary.read_text(encoding='utf-8').rstrip()}\n\n(summary: {summary})")
    return 0


def _cmd_status(args: argparse.Namespace, params: Params) -> int:
    layout = Layout(Path(args.root).resolve())
    broken = store_broken(tracking_uri(params, layout.root))  # status_lines says so in one line
    lines = status_lines(params, layout) + (registry_lines(params, layout) if args.registry and not broken else [])
    print("\n".join(lines))
    return 1 if broken else 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run all six steps in this process (no DVC caching)",
                       description="Run ingest, validate, tensorize, train, evaluate and "
                       "register in order, writing the dvc.yaml layout under --root.")
    p.add_argument("--root", default=".", help="project root for data/, models/, reports/")
    p.add_argument("--source", default=None, help="override data.source")
    p.add_argument("--run-id", default="local",
                   help="run id tagged on the model as lpdvae.pipeline_run_id (default: %(default)s)")
    p.set_defaults(func=_cmd_run)
    s = sub.add_parser("status", help="where the last run's model, samples and MLflow UI are")
    s.add_argument("--root", default=".", help="project root (default: %(default)s)")
    s.add_argument("--registry", action="store_true",
                   help="also ask the MLflow registry for the model's aliases (slower: imports MLflow)")
    s.set_defaults(func=_cmd_status)
