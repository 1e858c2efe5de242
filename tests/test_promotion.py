"""Promotion by significance: the rule on hand-made per-phrase records, then register on a real
MLflow server measuring a real champion on the challenger's evaluation set."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lpdvae.data.shards import load_split
from lpdvae.evaluation.evalset import PerPhrase, read_per_phrase, write_per_phrase
from lpdvae.evaluation.metrics import musegan_per_phrase, note_counts
from lpdvae.params import RegisterParams, RepresentationParams
from lpdvae.registry.aliases import CHAMPION, alias_version, client
from lpdvae.registry.promotion import compare, decide
from lpdvae.steps.evaluate import evaluate
from lpdvae.steps.register import register
from tests.evalkit import make_model, make_tensors, tiny_params

RP = RegisterParams(model_name="m", auto_promote=True, bootstrap_resamples=500, confidence=0.95, seed=0)
STATS = ("empty_bar_rate", "polyphonic_rate")


def record(correct: np.ndarray, gen: dict[str, np.ndarray], ref: dict[str, np.ndarray], sid: str = "s") -> PerPhrase:
    """A per-phrase record with 10 true and 10 predicted notes per phrase, `correct` of them right."""
    counts = np.stack([correct, np.full_like(correct, 10), np.full_like(correct, 10)], 1)
    n_gen = len(next(iter(gen.values())))
    return PerPhrase(counts, gen, ref, {"split": "test", "sha256": sid, "n_phrases": len(correct), "n_generated": n_gen})


def stats(rng: np.random.Generator, n: int, ebr: float, poly: float) -> dict[str, np.ndarray]:
    return {"empty_bar_rate/a": rng.normal(ebr, 0.05, n), "polyphonic_rate/a": rng.normal(poly, 0.05, n)}


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng, stats(rng, 60, 0.2, 0.5), rng.integers(2, 6, 60)


def test_a_challenger_equal_to_the_champion_up_to_noise_is_not_promoted(data):
    rng, ref, correct = data
    noisy = np.clip(correct + rng.integers(-1, 2, 60), 0, 10)
    c = compare(record(noisy, stats(rng, 40, 0.2, 0.5), ref), record(correct, stats(rng, 40, 0.2, 0.5), ref),
                "1", STATS, RP)
    assert c.recon_note_f1.low < 0 < c.recon_note_f1.high
    v = decide(True, [], "1", c, None, auto_promote=True)
    assert not v.promote and v.summary.startswith("not promoted: recon_note_f1")
    assert "not significantly better" in v.summary


def test_a_clearly_better_challenger_is_promoted(data):
    rng, ref, correct = data
    c = compare(record(correct + 3, stats(rng, 40, 0.2, 0.5), ref), record(correct, stats(rng, 40, 0.2, 0.5), ref),
                "1", STATS, RP)
    assert c.recon_note_f1.above_zero()
    v = decide(True, [], "1", c, None, auto_promote=True)
    assert v.promote and "no statistic significantly worse" in v.summary
    assert any(r.startswith("empty_bar_rate distance to data") for r in v.reasons)


def test_a_better_f1_with_a_statistic_significantly_further_from_the_data_is_not_promoted(data):
    rng, ref, correct = data
    c = compare(record(correct + 3, stats(rng, 40, 0.2, 0.9), ref), record(correct, stats(rng, 40, 0.2, 0.5), ref),
                "1", STATS, RP)
    assert c.distances["polyphonic_rate"].above_zero() and not c.distances["empty_bar_rate"].above_zero()
    v = decide(True, [], "1", c, None, auto_promote=True)
    assert not v.promote and v.summary.endswith("polyphonic_rate")


def test_a_statistic_the_challenger_cannot_measure_counts_as_worse(data):
    rng, ref, correct = data
    gen = stats(rng, 40, 0.2, 0.5)
    gen["polyphonic_rate/a"][:] = np.nan
    c = compare(record(correct + 3, gen, ref), record(correct, stats(rng, 40, 0.2, 0.5), ref), "1", STATS, RP)
    assert c.unmeasured == {"polyphonic_rate": "challenger"}
    assert not decide(True, [], "1", c, None, auto_promote=True).promote


def test_unblessed_first_and_manual_cases_say_why():
    assert decide(False, ["copying"], None, None, None, True).summary == (
        "not promoted: not blessed by evaluation: copying")
    first = decide(True, [], None, None, None, True)
    assert first.promote and first.summary == "promoted: first version: no champion to compare with"
    off = decide(True, [], None, None, None, False)
    assert not off.promote and "register.auto_promote is off" in off.summary
    failed = decide(True, [], "4", None, "model format 3", True)
    assert not failed.promote and failed.summary == "not promoted: not compared with champion v4: model format 3"


def test_records_of_different_evaluation_sets_are_not_compared(data):
    rng, ref, correct = data
    with pytest.raises(ValueError, match="evaluation set"):
        compare(record(correct, stats(rng, 4, 0.2, 0.5), ref, "a"), record(correct, stats(rng, 4, 0.2, 0.5), ref, "b"),
                "1", STATS, RP)


def test_the_per_phrase_record_round_trips_and_a_missing_one_names_the_file(tmp_path, data):
    from lpdvae.errors import DataError

    rng, ref, correct = data
    rec = record(correct, {"tonal_distance/a-b": rng.random(5)}, ref)
    write_per_phrase(tmp_path, rec)
    back = read_per_phrase(tmp_path)
    assert back.info == rec.info and np.array_equal(back.note_counts, rec.note_counts)
    assert back.generated.keys() == {"tonal_distance/a-b"} and back.reference.keys() == ref.keys()
    with pytest.raises(DataError, match="per_phrase.npz: missing"):
        read_per_phrase(tmp_path / "nothing")


# --- register on a real MLflow server ------------------------------------------------------------

OPEN_GATE = {"evaluate.min_note_f1": 0.0, "evaluate.min_margin": -1.0, "evaluate.stat_rel_tolerance": 1e9,
             "evaluate.stat_abs_floor": 1e9,
             "evaluate.min_unique_fraction": 0.0, "evaluate.copy_alpha": 0.0, "evaluate.fidelity_quantile": 0.0,
             "evaluate.temperatures": [1.0], "register.bootstrap_resamples": 500}


LINEAGE = {"lpdvae.git_revision": "abc123", "lpdvae.dvc.tensors": "feedbeef.dir", "lpdvae.dvc.raw": "0ddba11.dir",
           "lpdvae.source": "s3://***@bucket/chorales", "lpdvae.quarantined": "2",
           "lpdvae.quarantine_reasons": "too_short: 2", "lpdvae.pipeline_run_id": "weekly-7"}


@pytest.fixture(scope="module")
def world(mlflow_server, tmp_path_factory):
    """A champion (v1: an untrained tiny model, really evaluated) on 24 test phrases; the gate is
    opened so that these tests are about the comparison alone."""
    tmp = tmp_path_factory.mktemp("promotion")
    params = tiny_params(mlflow_server, "promotion-tests", **OPEN_GATE)
    tensors = make_tensors(tmp / "tensors", params, n=24)
    champion = make_model(tmp / "v1-model", params, seed=0)
    evaluate(champion, tensors, tmp / "v1-eval", params)
    r = register(champion, tmp / "v1-eval", tmp / "v1.json", params, LINEAGE,
                 tensor_dir=tensors, report_dir=tmp / "v1-report")
    assert r.promoted and r.aliases == ["challenger", "champion"]
    return params, tensors, tmp


def register_challenger(world, name: str, model: Path, evaluation: Path):
    params, tensors, tmp = world
    r = register(model, evaluation, tmp / f"{name}.json", params, LINEAGE,
                 tensor_dir=tensors, report_dir=tmp / f"{name}-report")
    tags = client(params).get_model_version(params.register.model_name, r.version).tags
    return r, tags, json.loads((tmp / f"{name}-report" / "promotion.json").read_text())


def champion(params) -> str:
    return alias_version(client(params), params.register.model_name, CHAMPION).version


@pytest.mark.slow
def test_register_does_not_promote_the_champion_retrained_up_to_noise(world):
    params, tensors, tmp = world
    model = make_model(tmp / "noisy-model", params, seed=5, like=tmp / "v1-model", noise=1e-3)
    evaluate(model, tensors, tmp / "noisy-eval", params)
    r, tags, report = register_challenger(world, "noisy", model, tmp / "noisy-eval")
    assert r.blessed and not r.promoted and r.aliases == ["challenger"] and champion(params) == "1"
    assert tags["lpdvae.promotion.verdict"] == "not promoted" and tags["lpdvae.promotion.champion"] == "1"
    assert "not significantly better" in tags["lpdvae.promotion.summary"]
    diff = report["champion"]["recon_note_f1"]["difference"]
    assert diff["low"] <= 0 <= diff["high"] and diff["resamples"] > 0
    set_id = read_per_phrase(tmp / "noisy-eval").set_id
    assert tags["lpdvae.eval_set.sha256"] == set_id == report["champion"]["evaluation_set"]
    champion_tags = client(params).get_model_version(params.register.model_name, "1").tags
    assert champion_tags[f"lpdvae.compared.v{r.version}.eval_set"] == set_id  # recorded on both versions


def oracle_eval(world, name: str, generated: np.ndarray | None = None) -> Path:
    """evaluate's files for a challenger that reconstructs every test phrase and generates `generated`
    (default: the first test phrases themselves): the champion's real evaluation with its per-phrase
    record rebuilt by the same functions evaluate uses."""
    params, tensors, tmp = world
    out = tmp / f"{name}-eval"
    shutil.copytree(tmp / "v1-eval", out)
    champ = read_per_phrase(out)
    test = load_split(tensors, "test", limit=champ.info["n_phrases"])
    n_gen = champ.info["n_generated"]
    per = lambda x: musegan_per_phrase(x, params.track_names, [False] * len(params.tracks),  # noqa: E731
                                       RepresentationParams(**dataclasses.asdict(params.representation)))
    gen = test[:n_gen] if generated is None else generated
    write_per_phrase(out, PerPhrase(note_counts(test, test), per(gen), per(test), champ.info))
    return out


@pytest.mark.slow
def test_register_promotes_a_clearly_better_challenger(world):
    params, _, tmp = world
    model = make_model(tmp / "better-model", params, seed=6)
    r, tags, report = register_challenger(world, "better", model, oracle_eval(world, "better"))
    assert r.promoted and r.aliases == ["challenger", "champion"] and champion(params) == r.version
    assert tags["lpdvae.promotion.verdict"] == "promoted"
    assert report["champion"]["recon_note_f1"]["difference"]["low"] > 0
    assert report["champion"]["recon_note_f1"]["challenger"] == 1.0
    assert tags["lpdvae.alias.champion.reason"].startswith("auto_promote: promoted: recon_note_f1")
    assert set(report["champion"]["distances"]) <= set(params.evaluate.statistics)


@pytest.mark.slow
def test_register_does_not_promote_a_better_reconstructor_that_generates_silence(world):
    params, _, tmp = world
    before = champion(params)
    shape = read_per_phrase(tmp / "v1-eval").info["n_generated"], len(params.tracks), *(
        params.representation.n_bars, params.representation.steps_per_bar, params.representation.n_pitches)
    model = make_model(tmp / "silent-model", params, seed=7)
    r, tags, _ = register_challenger(world, "silent", model, oracle_eval(world, "silent", np.zeros(shape, np.uint8)))
    assert not r.promoted and champion(params) == before
    assert "not measured on the challenger's generated music (counts as worse)" in tags["lpdvae.promotion.reasons"]


@pytest.mark.slow
def test_registry_describe_and_list_show_the_promotion_verdict(world, capsys):
    from lpdvae.cli import main
    from tests.conftest import REPO
    from tests.evalkit import write_eval

    params, tensors, tmp = world
    unblessed = write_eval(tmp / "unblessed-eval", False, 0.1, tensors=tensors)
    register_challenger(world, "unblessed", make_model(tmp / "unblessed-model", params, seed=8), unblessed)
    base = ["--params", str(REPO / "params.yaml"), "--set", f"mlflow.tracking_uri={params.mlflow.tracking_uri}",
            "--set", f"register.model_name={params.register.model_name}", "registry"]
    capsys.readouterr()
    assert main([*base, "describe", "1"]) == 0
    out = capsys.readouterr().out
    assert "promotion: promoted: first version: no champion to compare with" in out
    assert "evaluation set: val split, 24 phrases, sha256 " in out  # test is sealed
    assert main([*base, "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any("promoted: first version" in line for line in lines)
    assert any("not promoted: not blessed by evaluation: recon_note_f1 too low" in line for line in lines)


@pytest.mark.slow
def test_the_card_holds_the_lineage_the_intervals_and_the_audit_commands(world, capsys):
    from lpdvae.cli import main
    from tests.conftest import REPO

    params, _, tmp = world
    report = tmp / "noisy-report"
    card = (report / "model_card.md").read_text()
    promo = json.loads((report / "promotion.json").read_text())
    version = promo["version"]
    for text in ("## Intended use", "## Data", "`feedbeef.dir`", "`0ddba11.dir`", "`s3://***@bucket/chorales`",
                 "2 (too_short: 2)", "24 phrases, sha256", "## Training", "## Limitations",
                 f"lpdvae audit models:/{params.register.model_name}/{version}",
                 "git checkout abc123 && dvc checkout data/tensors", "### Against the baselines", "| copy_per_voice |",
                 "| recon note F1 (higher is better) |", "champion v1", "(samples/generated-00.mid)"):
        assert text in card, text
    diff = promo["champion"]["recon_note_f1"]["difference"]
    assert f"{diff['estimate']:+.4f} [{diff['low']:+.4f}, {diff['high']:+.4f}]" in card
    assert (report / "samples" / "generated-00.png").stat().st_size > 0
    html = (report / "model_card.html").read_text()
    assert "<table>" in html and 'src="samples/generated-00.png"' in html
    summary = (report / "summary.md").read_text()
    assert summary.startswith(f"# {params.register.model_name} version {version}: not promoted")

    mv = client(params).get_model_version(params.register.model_name, version)
    assert f"runs:/{mv.run_id}/model_card/model_card.md" in mv.description
    base = ["--params", str(REPO / "params.yaml"), "--set", f"mlflow.tracking_uri={params.mlflow.tracking_uri}",
            "--set", f"register.model_name={params.register.model_name}", "registry", "card", version]
    capsys.readouterr()
    assert main(base) == 0
    assert capsys.readouterr().out.strip() == card.strip()
    assert main([*base, "--open", "--out", str(tmp / "opened")]) == 0
    page = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert page.name == "model_card.html" and page.read_text() == html
