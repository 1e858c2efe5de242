"""The KFP components: knobs <-> params, and the component bodies themselves on a tiny corpus.

Component bodies run here through `component.python_func` with local artifacts, i.e. the same
code KFP runs in the pod, on real step functions. The tensorize fan-out (plan -> chunks ->
merge) must give byte for byte what one tensorize task gives.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
from kfp.dsl import HTML, Dataset, Markdown, Metrics

from components import (
    make_params_op,
    merge_tensors_op,
    merge_validate_op,
    plan_chunks_op,
    tensorize_chunk_op,
    tensorize_op,
    validate_chunk_op,
)
from components.knobs import knob_values, knobs, params_from_knobs, params_json_from_knobs
from components.sharding import chunk_rows, n_chunks
from lpdvae.evaluation.sandbox_page import sandbox_page
from lpdvae.params import Params, ParamsError, load_params

REPO = Path(__file__).resolve().parents[1]
VOICES = {"Soprano": (67, 79), "Alto": (60, 72), "Tenor": (52, 64), "Bass": (40, 52)}


def write_song(path: Path, seed: int, n_bars: int = 10) -> None:
    """Four voices of quarter notes in 4/4 (a chorale-like MIDI file the demo corpus resembles)."""
    rng = np.random.default_rng(seed)
    pm = pretty_midi.PrettyMIDI(initial_tempo=100.0)
    pm.time_signature_changes.append(pretty_midi.TimeSignature(4, 4, 0.0))
    beat = 0.6
    for name, (lo, hi) in VOICES.items():
        inst = pretty_midi.Instrument(program=52, name=name)
        for b in range(n_bars * 4):
            inst.notes.append(pretty_midi.Note(80, int(rng.integers(lo, hi)), b * beat, (b + 0.8) * beat))
        pm.instruments.append(inst)
    path.parent.mkdir(parents=True, exist_ok=True)
    pm.write(str(path))


# --- knobs -----------------------------------------------------------------------------------

def test_every_params_key_is_a_knob_and_the_round_trip_is_exact():
    params = load_params(REPO / "params.yaml")
    names = {k.name for k in knobs(params)}
    for dotted in params.flat():
        assert dotted.replace(".", "__") in names, dotted
    assert params_from_knobs(knob_values(params)) == params


def test_knob_values_from_the_kfp_ui_are_parsed_and_validated():
    values = knob_values(load_params(REPO / "params.yaml"))
    values.update({"data__sha256": "", "validate__require_time_signature": "", "train__lr": 1,
                   "evaluate__temperatures": "[0.5, 1.0]",  # "" is null; JSON typed into a text field
                   "tracks": [{**t, "program": float(t["program"])} for t in values["tracks"]]})  # doubles
    params = params_from_knobs(values)
    assert params.data.sha256 is None and params.validate.require_time_signature is None
    assert params.train.lr == 1.0 and params.evaluate.temperatures == (0.5, 1.0)
    with pytest.raises(ParamsError, match="train.epochs"):
        params_from_knobs({**values, "train__epochs": 0})
    with pytest.raises(ParamsError, match="unknown key"):
        params_from_knobs({**values, "train__epoch": 3})


def test_make_params_has_one_typed_input_per_knob_and_returns_the_params_json():
    spec = make_params_op.component_spec
    assert set(spec.inputs) == {k.name for k in knobs(load_params(REPO / "params.yaml"))}
    assert spec.inputs["train__epochs"].type == "Integer" and spec.inputs["tracks"].type == "List"
    params = load_params(REPO / "params.yaml", {"train.epochs": 3})
    out = make_params_op.python_func(**knob_values(params))
    assert json.loads(out) == params.to_dict() == json.loads(params_json_from_knobs(knob_values(params)))


# --- fan-out planning ------------------------------------------------------------------------

@pytest.mark.parametrize(("songs", "per", "most", "expected"),
                         [(0, 10, 4, 1), (5, 10, 4, 1), (25, 10, 4, 3), (1000, 10, 4, 4), (7, 1, 16, 7)])
def test_chunk_count(songs, per, most, expected):
    assert n_chunks(songs, per, most) == expected


def test_chunks_partition_the_songs_in_path_order():
    rows = [{"path": f"files/{i:03d}.mid"} for i in range(10)][::-1]
    parts = [chunk_rows(rows, c, 3) for c in range(3)]
    assert [len(p) for p in parts] == [3, 3, 4]
    assert [r["path"] for p in parts for r in p] == sorted(r["path"] for r in rows)
    with pytest.raises(ValueError):
        chunk_rows(rows, 3, 3)


# --- the component bodies on a tiny corpus ----------------------------------------------------

def seven_songs(root: Path) -> Params:
    """7 MIDI songs of 8..14 bars under root/songs, and params reading them with 4-phrase shards
    and a 60/20/20 split: the tiny corpus the component and store tests share."""
    for i in range(7):
        write_song(root / "songs" / f"song{i}.mid", seed=i, n_bars=8 + i)
    return load_params(REPO / "params.yaml", {
        "data.source": str(root / "songs"), "tensorize.shard_size": 4, "tensorize.workers": 1,
        "tensorize.train_fraction": 0.6, "tensorize.val_fraction": 0.2})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """ingest + validate components over 7 songs; params with 4-phrase shards."""
    from components import ingest_op, validate_op

    root = tmp_path_factory.mktemp("corpus")
    params = seven_songs(root)
    params_json = json.dumps(params.to_dict())
    raw = Dataset(uri=str(root / "raw"))
    ingest_op.python_func(params_json=params_json, refresh_key="week-1", raw=raw)
    validated, docs, metrics = Dataset(uri=str(root / "validated")), HTML(uri=str(root / "docs.html")), \
        Metrics(uri=str(root / "validate-metrics"))
    validate_op.python_func(params_json=params_json, raw=raw, validated=validated, data_docs=docs, metrics=metrics)
    return {"root": root, "params_json": params_json, "raw": raw, "validated": validated, "docs": docs,
            "metrics": metrics}


def test_ingest_and_validate_components_write_their_artifacts(corpus):
    assert corpus["raw"].metadata["files"] == 7 and corpus["raw"].metadata["refresh_key"] == "week-1"
    assert (Path(corpus["validated"].path) / "accepted.jsonl").exists()
    page = Path(corpus["docs"].path).read_text()
    assert "<html" in page.lower()
    assert corpus["metrics"].metadata, "validation counts are logged as metrics"


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_tensorize_fan_out_is_byte_identical_to_one_task(corpus):
    root, params_json = corpus["root"], corpus["params_json"]
    raw, validated = corpus["raw"], corpus["validated"]
    single = Dataset(uri=str(root / "tensors-single"))
    tensorize_op.python_func(params_json=params_json, raw=raw, validated=validated, tensors=single)

    accepted = len((Path(validated.path) / "accepted.jsonl").read_text().splitlines())
    plan = plan_chunks_op.python_func(n_songs=accepted, songs_per_chunk=2, max_chunks=3)
    assert plan.n_chunks == 3 and plan.chunks == [0, 1, 2]
    parts = []
    for chunk in reversed(plan.chunks):  # any completion order: merge sorts by chunk number
        part = Dataset(uri=str(root / f"chunk-{chunk}"))
        tensorize_chunk_op.python_func(params_json=params_json, raw_uri=raw.uri, validated_uri=validated.uri, chunk=chunk,
                                       n_chunks=plan.n_chunks, tensors=part)
        parts.append(part)
    merged = Dataset(uri=str(root / "tensors-merged"))
    merge_tensors_op.python_func(params_json=params_json, chunks=parts, tensors=merged)

    want, got = tree(Path(single.path)), tree(Path(merged.path))
    assert want == got
    index = json.loads(want["index.json"])
    assert sum(len(s["shards"]) for s in index["splits"].values()) > 3, "several shards per split"
    assert merged.metadata["dvc_hash"] == single.metadata["dvc_hash"]
    assert merged.metadata["n_train"] == index["splits"]["train"]["n"]


def test_validate_fan_out_is_byte_identical_to_one_task(corpus):
    root, params_json, raw = corpus["root"], corpus["params_json"], corpus["raw"]
    plan = plan_chunks_op.python_func(n_songs=raw.metadata["files"], songs_per_chunk=3, max_chunks=16)
    assert plan.n_chunks == 3 and plan.chunks == [0, 1, 2]
    parts = []
    for chunk in reversed(plan.chunks):  # any completion order: the merge sorts by chunk number
        part = Dataset(uri=str(root / f"validate-chunk-{chunk}"))
        validate_chunk_op.python_func(params_json=params_json, raw_uri=raw.uri, chunk=chunk,
                                      n_chunks=plan.n_chunks, part=part)
        parts.append(part)
    merged, docs, metrics = Dataset(uri=str(root / "validated-merged")), HTML(uri=str(root / "docs-merged.html")), \
        Metrics(uri=str(root / "validate-metrics-merged"))
    out = merge_validate_op.python_func(params_json=params_json, parts=parts, validated=merged, data_docs=docs,
                                        metrics=metrics)
    assert (out.validated_uri, out.n_accepted) == (merged.uri, merged.metadata["n_accepted"])
    assert tree(Path(merged.path)) == tree(Path(corpus["validated"].path))
    assert merged.metadata == corpus["validated"].metadata and metrics.metadata == corpus["metrics"].metadata
    assert "<html" in Path(docs.path).read_text().lower()


def test_html_pages_become_one_file_with_local_images_inlined_and_downloads_named_by_path(tmp_path):
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "a.png").write_bytes(b"\x89PNG fake")
    (tmp_path / "samples" / "a.mid").write_bytes(b"MThd")
    (tmp_path / "index.html").write_text('<body><img src="samples/a.png"><a href="samples/a.mid">m</a>'
                                         '<a href="other.html">o</a><img src="https://x.example/y.png">'
                                         '<img src="../outside.png"></body>')
    (tmp_path.parent / "outside.png").write_bytes(b"no")
    page = sandbox_page(tmp_path / "index.html", "card", note="where the files are")
    assert 'src="data:image/png;base64,' in page and "m: <code>samples/a.mid</code>" in page
    assert 'href="other.html"' in page and 'src="https://x.example/y.png"' in page
    assert 'src="../outside.png"' in page, "nothing outside the page's folder is embedded"
    assert page.startswith('<body><p class="kfp-note"') and "where the files are</p>" in page


def test_a_page_that_names_no_file_by_path_gets_no_kfp_note(tmp_path):
    (tmp_path / "index.html").write_text('<body><a href="#drift">ok</a><a href="drift.html">d</a></body>')
    assert sandbox_page(tmp_path / "index.html", "data_docs") == (tmp_path / "index.html").read_text()


def test_evaluate_writes_the_blessing_markdown_and_a_blessed_parameter(tmp_path, monkeypatch):
    """evaluate_op around a stand-in step result: the KFP-facing outputs, NaN metrics dropped."""
    import lpdvae.steps.evaluate as step
    from components import evaluate_op

    out_dir = tmp_path / "evaluation"

    def fake_evaluate(model_dir, tensor_dir, out, params):
        out.mkdir(parents=True)
        (out / "index.html").write_text("<html>samples</html>")
        return step.EvaluateResult(out, {"recon_note_f1": 0.5, "generated.empty_bar_rate": float("nan")},
                                   False, ["recon_note_f1 0.500 < min_note_f1 0.6"])

    monkeypatch.setattr(step, "evaluate", fake_evaluate)
    metrics, blessing = Metrics(uri=str(tmp_path / "m")), Markdown(uri=str(tmp_path / "blessing.md"))
    result = evaluate_op.python_func(
        params_json=json.dumps(load_params(REPO / "params.yaml").to_dict()), model=Dataset(uri=str(tmp_path)),
        tensors=Dataset(uri=str(tmp_path)), evaluation=Dataset(uri=str(out_dir)),
        samples_page=HTML(uri=str(tmp_path / "page.html")), metrics=metrics, blessing=blessing)
    assert result.blessed is False
    assert metrics.metadata == {"recon_note_f1": 0.5}
    assert "**not blessed**" in Path(blessing.path).read_text() and "recon_note_f1" in Path(blessing.path).read_text()


def test_register_registers_an_unblessed_model_with_the_lineage_of_its_artifacts(tmp_path, monkeypatch):
    """No gate in the task: an unblessed evaluation reaches the register step (which gives it no
    alias), with `lpdvae.registry.lineage.lineage` of the task's own artifacts and KFP's run id."""
    from kfp.dsl import Artifact, Model

    import lpdvae.steps.register as step
    from components import register_op
    from lpdvae.registry.lineage import lineage

    raw, validated, tensors = (tmp_path / n for n in ("raw", "validated", "tensors"))
    for folder, name, text in ((raw, "manifest.jsonl", '{"path": "files/a.mid", "source": "s3://u:pw@b/p"}\n'),
                               (validated, "quarantine.jsonl", '{"path": "files/b.mid"}\n'),
                               (tensors, "index.json", "{}")):
        folder.mkdir()
        (folder / name).write_text(text)
    (tmp_path / "evaluation").mkdir()
    (tmp_path / "evaluation" / "blessing.json").write_text('{"blessed": false, "reasons": ["too few notes"]}')
    params = load_params(REPO / "params.yaml")
    seen = {}

    def fake_register(model_dir, eval_dir, out_path, p, lineage_tags, *, tensor_dir, report_dir, validated):
        seen.update(eval_dir=eval_dir, lineage=lineage_tags, tensor_dir=tensor_dir, validated=validated)
        (report_dir / "samples").mkdir(parents=True)
        (report_dir / "samples" / "g.png").write_bytes(b"\x89PNG")
        (report_dir / "model_card.md").write_text("# Model card\n")
        (report_dir / "model_card.html").write_text('<html><img src="samples/g.png"></html>')
        (report_dir / "summary.md").write_text("# v3: not promoted\n")
        return step.RegisterResult(p.register.model_name, "3", [], "r-1", "runs:/r-1/generator", False, False,
                                   "not promoted: not blessed by evaluation: too few notes")

    monkeypatch.setattr(step, "register", fake_register)
    registration = Artifact(uri=str(tmp_path / "registration"))
    register_op.python_func(params_json=json.dumps(params.to_dict()), git_revision="abc", pipeline_run_id="run-1",
                            model=Model(uri=str(tmp_path / "model")), evaluation=Dataset(uri=str(tmp_path / "evaluation")),
                            raw_uri=str(raw), validated=Dataset(uri=str(validated)),
                            tensors=Dataset(uri=str(tensors)), registration=registration,
                            model_card=Markdown(uri=str(tmp_path / "card.md")),
                            model_card_page=HTML(uri=str(tmp_path / "card.html")),
                            summary=Markdown(uri=str(tmp_path / "summary.md")))
    assert seen["eval_dir"] == tmp_path / "evaluation" and seen["tensor_dir"] == tensors
    assert seen["validated"] == validated  # logged into the run: what a later drift check compares with
    assert seen["lineage"] == lineage(raw, validated, tensors, git_revision="abc", params_digest=params.digest(),
                                      run_id="run-1")
    assert seen["lineage"]["lpdvae.pipeline_run_id"] == "run-1" and seen["lineage"]["lpdvae.source"] == "s3://***@b/p"
    assert registration.metadata["registered"] is True and registration.metadata["aliases"] == []
    assert (tmp_path / "summary.md").read_text() == "# v3: not promoted\n"  # the run's last word
    assert (tmp_path / "card.md").read_text() == "# Model card\n"
    assert 'src="data:image/png;base64,' in (tmp_path / "card.html").read_text()  # one self-contained page


# --- the exit handler -------------------------------------------------------------------------------

def final_status(state: str, error: str = ""):
    from kfp.dsl import PipelineTaskFinalStatus

    return PipelineTaskFinalStatus(state=state, pipeline_job_resource_name="projects/p/pipelineJobs/run-7",
                                   pipeline_task_name="train-op", error_code=9 if error else None,
                                   error_message=error or None)


def test_the_exit_handler_records_a_failed_run_as_a_failed_mlflow_run(tmp_path):
    import mlflow

    from components import record_status_op

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    record_status_op.python_func(status=final_status("FAILED", "train: TrainJob ns/x failed: DeadlineExceeded"),
                                 experiment="lpdvae-exit", tracking_uri=uri, git_revision="abc123")
    mlflow.set_tracking_uri(uri)
    [run] = mlflow.search_runs(experiment_names=["lpdvae-exit"], output_format="list")
    assert run.info.status == "FAILED"
    assert run.data.tags["lpdvae.pipeline_error"] == "train: TrainJob ns/x failed: DeadlineExceeded"
    assert run.data.tags["lpdvae.pipeline_run"].endswith("run-7") and run.data.tags["lpdvae.git_revision"] == "abc123"


def test_the_exit_handler_records_nothing_for_a_run_that_succeeded(tmp_path):
    from components import record_status_op

    record_status_op.python_func(status=final_status("SUCCEEDED"), experiment="lpdvae-exit",
                                 tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", git_revision="")
    assert not (tmp_path / "mlflow.db").exists(), "MLflow was not touched"
