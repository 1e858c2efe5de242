"""A model card per registered version: what a reviewer needs without piecing MLflow tags together.

Register writes `model_card.md` and `model_card.html` (samples copied beside them, so the links
work in the report folder, in the MLflow run's `model_card/` artifacts and in KFP's HTML
artifact, where the images are inlined). Everything on the card comes from files the steps
already wrote (evaluation, training metrics, tensor index) and the version's tags (lineage,
promotion); nothing is measured here.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lpdvae.data.redact import redact_uri
from lpdvae.evaluation.baselines import BASELINES
from lpdvae.evaluation.gate import allowed_gap, statistic_reasons
from lpdvae.io import atomic_write_text
from lpdvae.params import EvaluateParams

CARD_MD = "model_card.md"
CARD_HTML = "model_card.html"
SAMPLES = ("generated-00", "generated-01", "reconstruction-00")
SAMPLE_KINDS = (".png", ".mid", ".wav")


@dataclass(frozen=True)
class CardInputs:
    """What the card is written from (all already on disk or in the version's tags)."""

    name: str
    version: str
    aliases: list[str]
    run_id: str
    tags: dict[str, str]
    metrics: dict[str, float]
    blessing: dict[str, Any]
    promotion: dict[str, Any]  # lpdvae.registry.promotion.record(...)
    train: dict[str, Any]  # models/vae/train_metrics.json
    index: dict[str, Any]  # data/tensors/index.json
    evaluate: EvaluateParams


def _f(value: Any, digits: int = 4) -> str:
    return "n/a" if value is None else f"{float(value):.{digits}f}"


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    header = list(header)
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return out + [""]


def _interval(d: dict[str, float]) -> str:
    return f"{d['estimate']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"


def render(c: CardInputs, samples: list[str]) -> str:
    """The card as Markdown; `samples` are file names in the card's own `samples/` folder."""
    lines = (_header(c) + _intended_use(c) + _data(c) + _training(c) + _against_baseline(c)
             + _against_data(c) + _against_champion(c) + _samples(samples) + _limitations(c)
             + _audit(c))
    return "\n".join(lines)


def _header(c: CardInputs) -> list[str]:
    t = c.tags
    return [f"# Model card: {c.name} version {c.version}", "",
            f"**Promotion:** {c.promotion.get('summary', 'no verdict')}  ",
            f"**Aliases:** {', '.join(c.aliases) or 'none'}  ",
            f"**Blessed by evaluation:** {'yes' if c.blessing.get('blessed') else 'no'}  ",
            f"**Card written:** {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')} "
            f"from MLflow run `{c.run_id}`, pipeline run `{t.get('lpdvae.pipeline_run_id', 'n/a')}`, "
            f"git `{t.get('lpdvae.git_revision', 'n/a')}`", ""]


def _intended_use(c: CardInputs) -> list[str]:
    tracks = ", ".join(c.index.get("tracks", []))
    return ["## Intended use", "",
            f"A variational autoencoder over {len(c.index.get('tracks', []))}-track phrases ({tracks}; "
            f"shape {c.index.get('shape')} = tracks, bars, steps, pitches) that generates new phrases "
            "(`mlflow models serve`, `lpdvae generate`), reconstructs and interpolates existing ones. "
            "Meant for music sketching, demos and research on the corpus it was trained on; not for "
            "judging or attributing music, and not a source of finished pieces.", ""]


def _song_counts(index: dict[str, Any]) -> tuple[Any, str]:
    """(number of songs, "train a / val b / test c") from the tensor index's `songs`."""
    songs = index.get("songs", {})
    by_split: dict[str, int] = {}
    if isinstance(songs, dict):
        for s in songs.values():
            by_split[s.get("split", "?")] = by_split.get(s.get("split", "?"), 0) + 1
    n_songs = len(songs) if isinstance(songs, dict) else songs
    song_split = " / ".join(f"{k} {by_split.get(k, 0)}" for k in ("train", "val", "test")) if by_split else "n/a"
    return n_songs, song_split


def _data(c: CardInputs) -> list[str]:
    t = c.tags
    split_n = {k: v.get("n", 0) for k, v in c.index.get("splits", {}).items()}
    n_songs, song_split = _song_counts(c.index)
    reasons = t.get("lpdvae.quarantine_reasons", "")
    return ["## Data", ""] + _table(["", ""], [
        ("source", f"`{redact_uri(t.get('lpdvae.source', 'n/a'))}`"),
        ("raw (DVC)", f"`{t.get('lpdvae.dvc.raw', 'n/a')}`"),
        ("validated (DVC)", f"`{t.get('lpdvae.dvc.validated', 'n/a')}`"),
        ("tensors (DVC)", f"`{t.get('lpdvae.dvc.tensors', 'n/a')}`"),
        ("manifest sha256", f"`{t.get('lpdvae.manifest_sha256', 'n/a')}`"),
        ("songs", f"{n_songs} (train / val / test: {song_split})"),
        ("phrases", " / ".join(f"{k} {split_n.get(k, 0)}" for k in ("train", "val", "test"))),
        ("quarantined songs", f"{t.get('lpdvae.quarantined', 'n/a')}" + (f" ({reasons})" if reasons else "")),
        ("drift vs the champion's data", t.get("lpdvae.drift.verdict", "not checked")
         + " (run artifact drift/drift.html)"),
        ("evaluation set", f"{t.get('lpdvae.eval_set.split', 'test')} split, {t.get('lpdvae.eval_set.n_phrases', '?')} "
                           f"phrases, sha256 `{t.get('lpdvae.eval_set.sha256', 'n/a')}`"),
    ])


def _training(c: CardInputs) -> list[str]:
    t, tr = c.tags, c.train
    return ["## Training", ""] + _table(["", ""], [
        ("params digest", f"`{t.get('lpdvae.params_digest', 'n/a')}`"),
        ("epochs", f"{tr.get('epochs', 'n/a')} (best {tr.get('best_epoch', 'n/a')}, "
                   f"stopped early: {tr.get('stopped_early', 'n/a')}), {tr.get('steps', 'n/a')} steps"),
        ("wall time", f"{_f(tr.get('train_time_s'), 1)} s ({_f(tr.get('samples_per_s'), 1)} phrases/s)"),
        ("hardware", f"{tr.get('device', 'n/a')} x {tr.get('world_size', 'n/a')} process(es), "
                     f"{tr.get('precision', 'n/a')}, global batch {tr.get('global_batch_size', 'n/a')}"),
        ("final losses", f"train {_f(tr.get('train_loss'), 2)}, val {_f(tr.get('val_loss'), 2)} "
                         f"(val neg ELBO {_f(tr.get('val_neg_elbo'), 2)})"),
    ])



def _against_baseline(c: CardInputs) -> list[str]:
    return ["## Evaluation (test split)", ""] + baseline_lines(c.metrics, c.evaluate)


def _statistic_rows(m: dict[str, float], ev: EvaluateParams) -> list[tuple[str, ...]]:
    """One row per statistic the data has a value for: generated, data, gap, allowed gap, gate."""
    rows = []
    for key in ev.statistics:
        gen, ref = m.get(f"generated.{key}"), m.get(f"reference.{key}")
        if ref is None:
            continue
        gap = allowed_gap(ref, ev, m.get(f"split_gap.{key}", 0.0))
        rows.append((key, _f(gen), _f(ref), _f(None if gen is None else abs(gen - ref)), _f(gap),
                     statistic_verdict(m, ev, key)))
    return rows


def _against_data(c: CardInputs) -> list[str]:
    m, ev = c.metrics, c.evaluate
    lines = ["### Generated music against the data", "",
             f"At temperature {m.get('temperature', 'n/a')} (chosen on the validation split).", ""]
    lines += _table(["statistic", "generated", "data", "gap", "allowed gap", "gate [interval of generated - data]"],
                    _statistic_rows(m, ev))
    lines += _table(["check", "value", "gate"], [
        ("distinct generated phrases", _f(m.get("diversity.unique_fraction"), 3), f">= {ev.min_unique_fraction}"),
        ("samples at best match >= copy_match / validation's", f"{_f(m.get('copy.share_at_match'), 3)} / "
         f"{_f(m.get('copy.val_share_at_match'), 3)} (p {_f(m.get('copy.p_value'), 3)})", f"p >= {ev.copy_alpha}"),
        ("samples' median best match / validation floor", f"{_f(m.get('copy.median_best_match'), 3)} / "
         f"{_f(m.get('copy.val_floor'), 3)}", ">= floor"),
        ("KL nats / active units", f"{_f(m.get('kl_nats'), 2)} / {_f(m.get('active_units'), 0)}", ""),
    ])
    verdict = "blessed" if c.blessing.get("blessed") else "not blessed: " + "; ".join(c.blessing.get("reasons", []))
    return lines + [f"**Gate:** {verdict}", ""]


def _against_champion(c: CardInputs) -> list[str]:
    lines = ["### Against the champion", ""]
    champ = c.promotion.get("champion")
    if champ:
        conf = champ["recon_note_f1"]["difference"]
        lines += [f"Champion v{champ['version']} measured on the same evaluation set (`{champ['evaluation_set'][:16]}…`), "
                  f"same seed and temperature rule; paired bootstrap, {conf['confidence']:.0%} intervals of "
                  f"challenger − champion ({conf['resamples']} resamples).", ""]
        rows = [("recon note F1 (higher is better)", _f(champ["recon_note_f1"]["challenger"]),
                 _f(champ["recon_note_f1"]["champion"]), _interval(conf))]
        rows += [(f"{k}: distance to data (lower is better)", _f(v["challenger"]), _f(v["champion"]),
                  _interval(v["difference"])) for k, v in champ["distances"].items()]
        lines += _table(["metric", "this version", f"champion v{champ['version']}", "difference [interval]"], rows)
    return lines + [f"- {r}" for r in c.promotion.get("reasons", [])] + [""]


def _samples(samples: list[str]) -> list[str]:
    lines = ["## Samples", ""]
    for name in sorted({Path(s).stem for s in samples}):
        files = [s for s in samples if Path(s).stem == name]
        pngs = [s for s in files if s.endswith(".png")]
        links = ", ".join(f"[{Path(s).suffix[1:].upper()}](samples/{s})" for s in files if not s.endswith(".png"))
        lines += [f"**{name}** {links}", ""] + [f"![{name}](samples/{p})" for p in pngs] + [""]
    if not samples:
        lines += ["No samples were rendered.", ""]
    return lines


def _limitations(c: CardInputs) -> list[str]:
    return ["## Limitations", "",
            f"- Measured on {_f(c.metrics.get('n_test_phrases'), 0)} test phrases of the same corpus it was "
            "trained on; music from other styles, meters or instrumentations is out of scope.",
            "- Phrases are 4/4 bars on a fixed grid; dynamics, tempo changes and expressive timing are not modelled.",
            "- The statistics compare averages of generated and real phrases (MuseGAN's metrics), not "
            "musical quality; listen to the samples before relying on a version.",
            f"- Generated music is sampled at one seed ({c.evaluate.seed}) per evaluation; "
            "the intervals cover resampling of those phrases, not other seeds or retraining.", ""]


def _audit(c: CardInputs) -> list[str]:
    t = c.tags
    rev = t.get("lpdvae.git_revision", "").removesuffix("-dirty")
    lines = ["## Audit and restore", "", "```bash",
             f"lpdvae registry describe {c.version}",
             f"lpdvae audit models:/{c.name}/{c.version}",
             f"lpdvae audit --dataset {t.get('lpdvae.dvc.tensors', '<tensors hash>')}"]
    if rev:
        lines += [f"git checkout {rev} && dvc checkout data/tensors   # or: dvc pull data/tensors"]
    return lines + [f"lpdvae registry promote {c.version}            # refused unless blessed",
                    "lpdvae registry rollback", "```", ""]


def to_html(markdown: str, title: str) -> str:
    """The card as one HTML page (tables on)."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark").enable("table").render(markdown)
    style = ("body{font-family:sans-serif;max-width:60rem;margin:2rem auto;line-height:1.4}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2rem .5rem}"
             "img{max-width:100%}code{background:#f4f4f4}")
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>"
            f"<style>{style}</style></head><body>\n{body}</body></html>\n")


def write_card(out_dir: Path, inputs: CardInputs, eval_dir: Path) -> tuple[Path, Path]:
    """Copy a few samples from `eval_dir/samples` and write model_card.md + .html into `out_dir`."""
    out_dir = Path(out_dir)
    samples_out = out_dir / "samples"
    samples_out.mkdir(parents=True, exist_ok=True)
    samples = []
    for name in SAMPLES:
        for kind in SAMPLE_KINDS:
            src = Path(eval_dir) / "samples" / f"{name}{kind}"
            if src.is_file():
                shutil.copyfile(src, samples_out / src.name)
                samples.append(src.name)
    md = render(inputs, samples)
    atomic_write_text(out_dir / CARD_MD, md)
    atomic_write_text(out_dir / CARD_HTML, to_html(md, f"{inputs.name} v{inputs.version}"))
    return out_dir / CARD_MD, out_dir / CARD_HTML


def baseline_lines(m: dict[str, float], ev: EvaluateParams) -> list[str]:
    """The model beside every baseline (`lpdvae.evaluation.baselines`), song-bootstrap intervals,
    the interval of (model - baseline) the gate reads, and the bits each uses."""
    def ci(key: str) -> str:
        return f"{_f(m.get(key))} [{_f(m.get(key + '.lo'))}, {_f(m.get(key + '.hi'))}]"

    rows = [("model", ci("recon_note_f1"), "", f"KL {_f(m.get('kl_bits'), 1)}")]
    for name in BASELINES:
        rows.append((name, ci(f"baseline.{name}.recon_note_f1"), ci(f"margin.{name}"),
                     _f(m.get(f"baseline.{name}.bits"), 1)))
    tracks = [k.split("/", 1)[1] for k in m if k.startswith("recon_note_f1/") and "." not in k]
    rows += [(f"model, {t}", ci(f"recon_note_f1/{t}"), "", "") for t in tracks]
    return ["### Against the baselines", "",
            f"Reconstruction note F1 on test, {ev.confidence:.0%} song-bootstrap intervals; blessed only when "
            f"every margin's lower bound is above {ev.min_margin} (and F1 >= {ev.min_note_f1}).", "",
            *_table(["predictor", "note F1", "model - it", "bits used"], rows)]


def statistic_verdict(m: dict[str, float], ev: EvaluateParams, key: str) -> str:
    """The gate's verdict on one statistic (its whole interval of generated - data counts), with
    that interval; a statistic constant on both sides is not gated."""
    if m.get(f"constant.{key}") == 1.0:
        return "not gated (constant)"
    verdict = "FAIL" if statistic_reasons(m, ev, (key,)) else "pass"
    return f"{verdict} [{_f(m.get(f'gap.{key}.lo'))}, {_f(m.get(f'gap.{key}.hi'))}]"
