"""Register: the evaluated model becomes a version in the MLflow registry, with its lineage.

The registered artifact is the generator pyfunc (lpdvae.registry.serving: a loader-module pyfunc, no
pickled object), logged into the train run so
run, metrics, samples and model stay one record. Every evaluated model becomes a version, under
every runner: an unblessed one gets no alias (nothing serves it, `registry promote` refuses it
without --force) but stays in the registry with its lineage and the evaluation's reasons.
Blessed versions get `challenger`. When a champion exists, register measures it on the same
frozen evaluation set as the challenger (`lpdvae.evaluation.evalset`) and, with `register.auto_promote`,
promotes the challenger only when it is significantly better (`lpdvae.registry.promotion`); the verdict
and its reasons are `lpdvae.registry.promotion.*` tags and `promotion.json` in the report folder.

Register is idempotent per training run: a run that already has a version (a rerun after
validate changed, or after a killed register) makes no second one. A complete version is reused
as it is (its record and report folder written again); one a killed register left unfinished
(no model card yet) is finished. Opening, it marks KILLED the runs of its experiment that a
killed process left RUNNING (`lpdvae.registry.tracking.mark_killed_runs`).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lpdvae.data.shards import read_index
from lpdvae.errors import LpdvaeError
from lpdvae.evaluation.evalset import PerPhrase, measure, read_per_phrase, tensor_set_id
from lpdvae.io import atomic_dir, atomic_write_json, atomic_write_text
from lpdvae.params import Params
from lpdvae.registry import promotion
from lpdvae.registry.aliases import (
    CHALLENGER,
    CHAMPION,
    TAG_CARD,
    alias_version,
    record_alias,
    set_champion,
)
from lpdvae.registry.drift_log import TAG_VERDICT, log_drift
from lpdvae.registry.model_card import CARD_MD, CardInputs, write_card
from lpdvae.registry.run_report import render_summary
from lpdvae.registry.tracking import (
    MAX_TAG_CHARS,
    blessing_tags,
    check_store,
    mark_killed_runs,
    owner_tags,
)

log = logging.getLogger(__name__)
TAGGED_METRICS = ("recon_note_f1", "recon_note_precision", "recon_note_recall", "recon_frame_f1",
                  "baseline.copy.recon_note_f1", "margin.copy.lo", "train.recon_note_f1", "neg_elbo", "kl_nats",
                  "active_units", "temperature", "diversity.unique_fraction",
                  "copy.nearest_train_note_f1")
PROMOTION_FILE = "promotion.json"
SUMMARY_FILE = "summary.md"
CARD_ARTIFACT = "model_card"  # the train run's artifact folder holding the report folder
RUN_ID = re.compile(r"[A-Za-z0-9_-]+")  # MLflow's are 32 hex digits; no quote reaches a search filter


@dataclass(frozen=True)
class RegisterResult:
    name: str
    version: str
    aliases: list[str] = field(default_factory=list)
    run_id: str = ""
    model_uri: str = ""
    blessed: bool = False
    promoted: bool = False
    verdict: str = ""
    reused: bool = False  # the training run was registered before: that version, no new one


def version_tags(metrics: dict[str, float], blessing: dict[str, Any], lineage: dict[str, str]) -> dict[str, str]:
    """Everything a model version carries: its lineage (`lpdvae.registry.lineage.lineage`), metrics, blessing."""
    tags = dict(lineage)
    tags.update(blessing_tags(blessing))
    for k, v in metrics.items():
        if k in TAGGED_METRICS or (k.split(".")[0] in ("generated", "reference") and "/" not in k):
            tags[f"lpdvae.metric.{k}"] = repr(float(v))  # full precision: compared like with like
    return tags


def eval_set_tags(record: PerPhrase) -> dict[str, str]:
    """The frozen evaluation set a version was measured on (split, content hash, size)."""
    return {"lpdvae.eval_set.split": str(record.info["split"]), "lpdvae.eval_set.sha256": record.set_id,
            "lpdvae.eval_set.n_phrases": str(record.info["n_phrases"])}


@dataclass
class _Evaluated:
    """What evaluate and train left on disk, and the version tags made from it."""

    run: dict[str, Any]  # models/vae/mlflow_run.json: run_id, tracking_uri
    metrics: dict[str, float]
    blessing: dict[str, Any]
    record: PerPhrase
    tags: dict[str, str]


@dataclass
class _Decision:
    """The champion (if any), how the challenger compared with it, and the promotion verdict."""

    champion: Any  # a registry ModelVersion, or None
    comparison: Any  # lpdvae.registry.promotion's comparison, or None when not compared
    champion_record: PerPhrase | None
    verdict: Any  # lpdvae.registry.promotion.decide(...)


def register(model_dir: Path, eval_dir: Path, out_path: Path, params: Params,
             lineage: dict[str, str], *, tensor_dir: Path, report_dir: Path,
             validated: Path | None = None, data_docs: Path | None = None) -> RegisterResult:
    """Register the evaluated model as a new version, blessed or not (an unblessed one gets no
    alias, so it serves nobody but stays auditable), tagged with `lineage` as the runner
    computed it (`lpdvae.registry.lineage.lineage`). `tensor_dir` holds the test split the champion is
    measured on (the one `eval_dir` was measured on); `report_dir` receives promotion.json, the
    model card and the run's summary.md, also logged to the train run as `model_card/`.
    `validated` and `data_docs` (validate's folders), when given, go into the run
    (`lpdvae.registry.drift_log`): the data a later drift check compares with, the drift report and its
    verdict (also a version tag)."""
    model_dir, eval_dir, out_path = Path(model_dir), Path(eval_dir), Path(out_path)
    tensor_dir, report_dir = Path(tensor_dir), Path(report_dir)
    ev = _read_evaluated(model_dir, eval_dir, params, lineage)
    client = _client(ev.run["tracking_uri"])
    if ev.run.get("experiment_id"):
        mark_killed_runs(client, str(ev.run["experiment_id"]))
    existing = registered_version(client, params.register.model_name, ev.run["run_id"])
    if existing is not None and existing.tags.get(TAG_CARD):  # registered before, completely
        return _reuse(existing, ev, out_path, report_dir)
    decision = _measure_and_decide(client, ev, tensor_dir, params, existing)
    if existing is None:
        mv, model_uri = _log_and_register(ev, model_dir, params.register.model_name, validated, data_docs)
    else:
        mv, model_uri = _finish(client, existing, ev), existing.source
    aliases = _set_aliases(client, ev, decision, mv)
    _report(client, ev, decision, mv, aliases, model_dir=model_dir, eval_dir=eval_dir,
            tensor_dir=tensor_dir, report_dir=report_dir, params=params)
    result = RegisterResult(mv.name, str(mv.version), aliases, ev.run["run_id"], model_uri,
                            bool(ev.blessing["blessed"]), decision.verdict.promote, decision.verdict.summary)
    atomic_write_json(out_path, {**result.__dict__, "tags": ev.tags})
    log.info("registered %s version %s aliases=%s", mv.name, mv.version, aliases)
    return result


def _read_evaluated(model_dir: Path, eval_dir: Path, params: Params, lineage: dict[str, str]) -> _Evaluated:
    """Read the run, metrics, blessing and per-phrase record; refuse a lineage made for other params."""
    run = _read_json(model_dir / "mlflow_run.json")
    metrics = _read_json(eval_dir / "metrics.json")
    blessing = _read_json(eval_dir / "blessing.json")
    record = read_per_phrase(eval_dir)
    digest = lineage.get("lpdvae.params_digest", params.digest())
    if digest != params.digest():
        raise LpdvaeError(f"register: the lineage's params digest {digest[:12]}… is not that of the params "
                          f"registering the model ({params.digest()[:12]}…)")
    tags = version_tags(metrics, blessing, {**lineage, "lpdvae.params_digest": digest})
    tags.update(eval_set_tags(record))
    return _Evaluated(run, metrics, blessing, record, tags)


def registered_version(client: Any, name: str, run_id: str) -> Any:
    """The version of `name` registered from training run `run_id` (the newest, should older
    code have made several), with its tags and aliases; None when the run has none."""
    if not RUN_ID.fullmatch(run_id):
        raise LpdvaeError(f"mlflow_run.json: run_id {run_id!r} is not an MLflow run id")
    found = [mv for mv in client.search_model_versions(f"run_id = '{run_id}'") if mv.name == name]
    if not found:
        return None
    return client.get_model_version(name, str(max(int(mv.version) for mv in found)))


def _finish(client: Any, mv: Any, ev: _Evaluated) -> Any:
    """This run's version that an earlier register left unfinished (killed after registering it):
    its tags set again; aliases and report follow as for a new version."""
    log.warning("training run %s is already %s version %s, left unfinished by an earlier register: "
                "finishing it (no new version)", ev.run["run_id"], mv.name, mv.version)
    for k, v in ev.tags.items():
        client.set_model_version_tag(mv.name, str(mv.version), k, v)
    return mv


def _reuse(mv: Any, ev: _Evaluated, out_path: Path, report_dir: Path) -> RegisterResult:
    """A training run registered before: nothing new in the registry; its version's record and
    report folder (the card logged with the run) are written again, as a rerun's outputs."""
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    run_id, tags = ev.run["run_id"], dict(mv.tags)
    with tempfile.TemporaryDirectory(prefix="lpdvae-report-") as scratch:
        try:
            got = download_artifacts(artifact_uri=f"runs:/{run_id}/{CARD_ARTIFACT}", dst_path=scratch,
                                     tracking_uri=ev.run["tracking_uri"])
        except (MlflowException, OSError) as exc:
            raise LpdvaeError(f"{mv.name} version {mv.version} (run {run_id}): its report folder cannot be read "
                              f"from the artifact store ({(str(exc).splitlines() or [''])[0]})") from None
        with atomic_dir(report_dir) as tmp:
            shutil.copytree(got, tmp, dirs_exist_ok=True)
    result = RegisterResult(mv.name, str(mv.version), [a for a in (CHALLENGER, CHAMPION) if a in mv.aliases],
                            run_id, mv.source, tags.get("lpdvae.blessed") == "true",
                            tags.get(f"{promotion.TAG}.verdict") == promotion.PROMOTED,
                            tags.get(f"{promotion.TAG}.summary", ""), reused=True)
    atomic_write_json(out_path, {**result.__dict__, "tags": tags})
    log.warning("training run %s is already registered as %s version %s: reused it, no new version",
                run_id, mv.name, mv.version)
    return result


def _client(tracking_uri: str) -> Any:
    """An MlflowClient on the train run's store, which is also the registry (and mlflow's default)."""
    import mlflow
    from mlflow import MlflowClient

    check_store(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _measure_and_decide(client: Any, ev: _Evaluated, tensor_dir: Path, params: Params,
                        existing: Any = None) -> _Decision:
    """Measure the champion (if any) on the challenger's evaluation set, compare, decide; the
    verdict's tags join `ev.tags`. A champion that cannot be measured is reported, not fatal.
    `existing`: this run's version, when an earlier register left it unfinished."""
    champion = alias_version(client, params.register.model_name, CHAMPION)
    if existing is not None and champion is not None and str(champion.version) == str(existing.version):
        verdict = promotion.Verdict(True, f"{promotion.PROMOTED}: already champion (an earlier register of "
                                    "this training run promoted it)", [])
        ev.tags.update(promotion.tags(verdict, None, params.register))
        return _Decision(None, None, None, verdict)
    comparison, not_compared, champion_record = None, None, None
    if champion is not None:
        try:
            champion_record = measure_champion(champion, tensor_dir, ev.record, params)
            comparison = promotion.compare(ev.record, champion_record, str(champion.version),
                                           params.evaluate.statistics, params.register)
        except (LpdvaeError, ValueError, OSError) as exc:
            not_compared = str(exc)
        except Exception as exc:  # noqa: BLE001 - MLflow's download errors: the version still registers
            not_compared = f"{type(exc).__name__}: {exc}"
        if not_compared:
            log.warning("champion v%s not compared: %s", champion.version, not_compared)
    verdict = promotion.decide(bool(ev.blessing["blessed"]), list(ev.blessing.get("reasons", [])),
                               None if champion is None else str(champion.version), comparison,
                               not_compared, params.register.auto_promote)
    ev.tags.update(promotion.tags(verdict, comparison, params.register))
    return _Decision(champion, comparison, champion_record, verdict)


def _log_and_register(ev: _Evaluated, model_dir: Path, name: str, validated: Path | None,
                      data_docs: Path | None) -> tuple[Any, str]:
    """Log the generator pyfunc (and the drift evidence) into the train run, then register it
    as a new version of `name` with `ev.tags`; returns (the ModelVersion, the logged model's URI)."""
    import mlflow

    from lpdvae.registry.serving import (
        LOADER_MODULE,
        code_paths,
        pip_requirements,
        save_generator,
        signature,
    )

    temperature = float(ev.blessing.get("temperature", 1.0))
    example, sig = signature(temperature)
    with mlflow.start_run(run_id=ev.run["run_id"]), tempfile.TemporaryDirectory(prefix="lpdvae-generator-") as tmp:
        mlflow.set_tags(owner_tags())  # this process writes the run now (mark_killed_runs)
        # a loader-module pyfunc: weights, model.json and generator.json, no pickled Python object
        info = mlflow.pyfunc.log_model(
            name="generator", loader_module=LOADER_MODULE, data_path=str(save_generator(model_dir, temperature, Path(tmp))),
            signature=sig, input_example=example, pip_requirements=pip_requirements(),
            code_paths=code_paths(),
        )
        mlflow.set_tags({k: v for k, v in ev.tags.items() if k.startswith("lpdvae.dvc.")})
        drift_verdict = log_drift(validated, data_docs) if validated is not None else None
    if drift_verdict:
        ev.tags[TAG_VERDICT] = drift_verdict
    return mlflow.register_model(info.model_uri, name, tags=ev.tags), info.model_uri


def _set_aliases(client: Any, ev: _Evaluated, decision: _Decision, mv: Any) -> list[str]:
    """`challenger` when blessed, `champion` when promoted; the old champion is tagged with
    what it was compared against. Returns the aliases the new version got."""
    aliases = []
    if ev.blessing["blessed"]:
        record_alias(client, mv.name, CHALLENGER, mv.version, "blessed by evaluation")
        aliases.append(CHALLENGER)
    if decision.verdict.promote and (decision.champion is not None or not _is_champion(client, mv)):
        set_champion(client, mv.name, mv.version, f"auto_promote: {decision.verdict.summary}"[:MAX_TAG_CHARS])
        aliases.append(CHAMPION)
    champion, comparison = decision.champion, decision.comparison
    if comparison is not None and decision.champion_record is not None:
        for k, v in {"eval_set": ev.record.set_id, "recon_note_f1": repr(comparison.f1[1])}.items():
            client.set_model_version_tag(mv.name, str(champion.version), f"lpdvae.compared.v{mv.version}.{k}", v)
    log.info("%s v%s: %s", mv.name, mv.version, decision.verdict.summary)
    return aliases


def _is_champion(client: Any, mv: Any) -> bool:
    champion = alias_version(client, mv.name, CHAMPION)
    return champion is not None and str(champion.version) == str(mv.version)


def _report(client: Any, ev: _Evaluated, decision: _Decision, mv: Any, aliases: list[str], *,
            model_dir: Path, eval_dir: Path, tensor_dir: Path, report_dir: Path, params: Params) -> None:
    """promotion.json, the card and summary.md into `report_dir` and the train run; the version's
    description and `lpdvae.model_card` tag point at the card."""
    import mlflow

    name, version, run_id = mv.name, str(mv.version), ev.run["run_id"]
    promo = {"name": name, "version": version, **promotion.record(decision.verdict, decision.comparison)}
    champion, champion_now = decision.champion, alias_version(client, name, CHAMPION)
    write_report(report_dir, CardInputs(
        name=name, version=version, aliases=aliases, run_id=run_id, tags=ev.tags, metrics=ev.metrics,
        blessing=ev.blessing, promotion=promo, train=_read_optional(model_dir / "train_metrics.json"),
        index=read_index(tensor_dir), evaluate=params.evaluate), eval_dir,
        None if champion is None else str(champion.version), None if champion_now is None else str(champion_now.version))
    with mlflow.start_run(run_id=run_id):
        mlflow.set_tags(owner_tags())
        mlflow.log_artifacts(str(report_dir), artifact_path=CARD_ARTIFACT)
    card_uri = f"runs:/{run_id}/{CARD_ARTIFACT}/{CARD_MD}"
    client.update_model_version(name, version, description=(
        f"{decision.verdict.summary}\n\nModel card: {card_uri} (`lpdvae registry card {version}`)")[:MAX_TAG_CHARS])
    client.set_model_version_tag(name, version, "lpdvae.model_card", card_uri)


def write_report(report_dir: Path, card: CardInputs, eval_dir: Path, champion_before: str | None,
                 champion_after: str | None) -> None:
    """promotion.json, the model card (Markdown + HTML + a few samples) and the run's summary.md."""
    with atomic_dir(report_dir) as tmp:  # no stale sample from an earlier run stays beside the card
        _write_report(tmp, report_dir, card, eval_dir, champion_before, champion_after)


def _write_report(out: Path, final: Path, card: CardInputs, eval_dir: Path, champion_before: str | None,
                  champion_after: str | None) -> None:
    atomic_write_json(out / PROMOTION_FILE, card.promotion)
    write_card(out, card, eval_dir)
    atomic_write_text(out / SUMMARY_FILE, render_summary(
        name=card.name, version=card.version, aliases=card.aliases, blessed=bool(card.blessing["blessed"]),
        blessing_reasons=list(card.blessing.get("reasons", [])), promotion=card.promotion,
        champion_before=champion_before, champion_after=champion_after, tags=card.tags,
        card=f"{final / CARD_MD} (MLflow: runs:/{card.run_id}/{CARD_ARTIFACT}/{CARD_MD})"))


def measure_champion(champion: Any, tensor_dir: Path, record: PerPhrase, params: Params) -> PerPhrase:
    """The champion (a registry ModelVersion) measured like evaluate measured the challenger: on
    the same evaluation set (checked first, before anything is downloaded), seed and temperatures."""
    from lpdvae.model.files import load_model
    from lpdvae.registry.serving import model_folder

    here = tensor_set_id(tensor_dir)
    if here != record.set_id:
        raise LpdvaeError(f"the evaluation was measured on validation phrases {record.set_id[:12]}… but {tensor_dir} "
                          f"holds {here[:12]}… (evaluate and register on the same tensors)")
    with tempfile.TemporaryDirectory(prefix="lpdvae-champion-") as tmp:
        folder = model_folder(f"models:/{champion.name}/{champion.version}", Path(tmp))
        vae = load_model(folder)
    return measure(vae, tensor_dir, params.evaluate).per_phrase


def _read_optional(path: Path) -> dict[str, Any]:
    """A JSON file the card shows when present (train_metrics.json); {} when absent."""
    return _read_json(path) if path.exists() else {}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise LpdvaeError(f"{path}: missing (run the step that writes it first)") from None
    except json.JSONDecodeError as exc:
        raise LpdvaeError(f"{path}: not valid JSON: {exc}") from None
