"""Register: the evaluated model becomes a version in the MLflow registry, with its lineage.

The registered artifact is the generator pyfunc (lpdvae.serving), logged into the train run so
run, metrics, samples and model stay one record. Every evaluated model becomes a version, under
every runner: an unblessed one gets no alias (nothing serves it, `registry promote` refuses it
without --force) but stays in the registry with its lineage and the evaluation's reasons.
Blessed versions get `challenger`; with `register.auto_promote` a blessed challenger that beats
the champion becomes `champion`.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lpdvae.drift_log import TAG_VERDICT, log_drift
from lpdvae.errors import LpdvaeError
from lpdvae.io import atomic_write_json
from lpdvae.layout import CWD
from lpdvae.lineage import git_revision
from lpdvae.lineage import lineage as lineage_tags
from lpdvae.params import Params
from lpdvae.registry import CHALLENGER, CHAMPION, alias_version, record_alias, set_champion

log = logging.getLogger(__name__)
TAGGED_METRICS = ("recon_note_f1", "recon_note_precision", "recon_note_recall", "recon_frame_f1",
                  "baseline.recon_note_f1", "train.recon_note_f1", "neg_elbo", "kl_nats",
                  "active_units", "temperature", "diversity.unique_fraction",
                  "copy.nearest_train_note_f1")


@dataclass(frozen=True)
class RegisterResult:
    name: str
    version: str
    aliases: list[str] = field(default_factory=list)
    run_id: str = ""
    model_uri: str = ""
    blessed: bool = False


def version_tags(metrics: dict[str, float], blessing: dict[str, Any], lineage: dict[str, str]) -> dict[str, str]:
    """Everything a model version carries: its lineage (`lpdvae.lineage.lineage`), metrics, blessing."""
    tags = dict(lineage)
    tags["lpdvae.blessed"] = str(bool(blessing["blessed"])).lower()
    tags["lpdvae.blessing_reasons"] = "; ".join(blessing.get("reasons", []))[:4000] or "all checks passed"
    for k, v in metrics.items():
        if k in TAGGED_METRICS or (k.split(".")[0] in ("generated", "reference") and "/" not in k):
            tags[f"lpdvae.metric.{k}"] = repr(float(v))  # full precision: compared like with like
    return tags


def register(model_dir: Path, eval_dir: Path, out_path: Path, params: Params,
             lineage: dict[str, str], validated: Path | None = None, data_docs: Path | None = None) -> RegisterResult:
    """Register the evaluated model as a new version, blessed or not (an unblessed one gets no
    alias, so it serves nobody but stays auditable), tagged with `lineage` as the runner
    computed it (`lpdvae.lineage.lineage`). `validated` and `data_docs` (validate's folders), when
    given, go into the run (`lpdvae.drift_log`): the data a later drift check compares with, the
    drift report and its verdict (also a version tag)."""
    import mlflow
    from mlflow import MlflowClient

    from lpdvae.serving import ARTIFACT, MusicGenerator, code_paths, pip_requirements, signature

    model_dir, eval_dir, out_path = Path(model_dir), Path(eval_dir), Path(out_path)
    run = _read_json(model_dir / "mlflow_run.json")
    metrics = _read_json(eval_dir / "metrics.json")
    blessing = _read_json(eval_dir / "blessing.json")
    name = params.register.model_name

    digest = lineage.get("lpdvae.params_digest", params.digest())
    if digest != params.digest():
        raise LpdvaeError(f"register: the lineage's params digest {digest[:12]}… is not that of the params "
                          f"registering the model ({params.digest()[:12]}…)")
    tags = version_tags(metrics, blessing, {**lineage, "lpdvae.params_digest": digest})

    mlflow.set_tracking_uri(run["tracking_uri"])
    mlflow.set_registry_uri(run["tracking_uri"])
    temperature = float(blessing.get("temperature", 1.0))
    example, sig = signature(temperature)
    with mlflow.start_run(run_id=run["run_id"]):
        info = mlflow.pyfunc.log_model(
            name="generator", python_model=MusicGenerator(temperature), artifacts={ARTIFACT: str(model_dir)},
            signature=sig, input_example=example, pip_requirements=pip_requirements(),
            code_paths=code_paths(),
        )
        mlflow.set_tags({k: v for k, v in tags.items() if k.startswith("lpdvae.dvc.")})
        verdict = log_drift(validated, data_docs) if validated is not None else None
    if verdict:
        tags[TAG_VERDICT] = verdict
    mv = mlflow.register_model(info.model_uri, name, tags=tags)
    client = MlflowClient(tracking_uri=run["tracking_uri"], registry_uri=run["tracking_uri"])
    aliases = []
    if blessing["blessed"]:
        record_alias(client, name, CHALLENGER, mv.version, "blessed by evaluation")
        aliases.append(CHALLENGER)
        champion = alias_version(client, name, CHAMPION)
        verdict = versus_champion(metrics, champion, params.register.champion_margin)
        if params.register.auto_promote and verdict is None:
            set_champion(client, name, mv.version,
                         "auto_promote: blessed and not worse than the champion")
            aliases.append(CHAMPION)
        elif verdict:
            log.info("not promoted: %s", verdict)
    result = RegisterResult(name, str(mv.version), aliases, run["run_id"], info.model_uri,
                            bool(blessing["blessed"]))
    atomic_write_json(out_path, {**result.__dict__, "tags": tags})
    log.info("registered %s version %s aliases=%s", name, mv.version, aliases)
    return result


def versus_champion(metrics: dict[str, float], champion: Any, margin: float) -> str | None:
    """None when a blessed candidate may replace `champion` (a registry ModelVersion or None):
    its test note F1 is not below the champion's by more than `margin` (both full precision);
    else the reason."""
    if champion is None:
        return None
    try:
        theirs = float(champion.tags.get("lpdvae.metric.recon_note_f1", "-inf"))
    except ValueError:
        return None
    mine = metrics["recon_note_f1"]
    if mine < theirs - margin:
        return (f"recon_note_f1 {mine:.4f} is below champion v{champion.version}'s {theirs:.4f} "
                f"by more than {margin}")
    return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise LpdvaeError(f"{path}: missing (run the step that writes it first)") from None
    except json.JSONDecodeError as exc:
        raise LpdvaeError(f"{path}: not valid JSON: {exc}") from None


def _cmd(args: argparse.Namespace, params: Params) -> int:
    tags = lineage_tags(Path(args.raw), Path(args.validated), Path(args.tensors),
                        git_revision=git_revision(Path.cwd()), params_digest=params.digest(),
                        run_id=args.run_id, dvc_lock=Path(args.dvc_lock))
    r = register(Path(args.model), Path(args.eval), Path(args.out), params, tags, validated=Path(args.validated),
                 data_docs=Path(args.data_docs))
    print(f"registered {r.name} version {r.version} (aliases: {', '.join(r.aliases) or 'none'}; "
          f"blessed: {r.blessed})")
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("register", help="register the evaluated model in the MLflow registry",
                       description="Log the generator pyfunc, register a new model version with "
                       "lineage tags, and set challenger/champion aliases.")
    p.add_argument("--model", default=str(CWD.model), help="trained model folder (default: %(default)s)")
    p.add_argument("--eval", default=str(CWD.eval), help="evaluation folder (default: %(default)s)")
    p.add_argument("--out", default=str(CWD.registered), help="record file (default: %(default)s)")
    for stage in ("raw", "validated", "tensors"):
        p.add_argument(f"--{stage}", default=str(getattr(CWD, stage)),
                       help=f"the {stage} data folder the model came from, hashed for lineage (default: %(default)s)")
    p.add_argument("--data-docs", default=str(CWD.data_docs),
                   help="validate's docs folder whose drift report is logged with the model (default: %(default)s)")
    p.add_argument("--dvc-lock", default="dvc.lock",
                   help="dvc.lock whose outputs are tagged too, when it exists (default: %(default)s)")
    p.add_argument("--run-id", default="local",
                   help="the pipeline run id tagged as lpdvae.pipeline_run_id (default: %(default)s)")
    p.set_defaults(func=_cmd)
