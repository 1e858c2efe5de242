"""The hostile-input suite (issue 24): one case per hostile input or fault, with its expected verdict.

Each section is one family of cases; every case names what it does and what must happen.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lpdvae.data.pool import WORKER_CRASHED, map_songs
from lpdvae.io import atomic_dir, process_owner
from tests import faultkit

# --- faults and idempotency ---
# Killed steps, crashing workers, a killed train's MLflow run, reruns of register, no-op registry
# actions, a broken MLflow store. The MLflow cases use a sqlite store in a temp folder (no server).

FAULTS_REPO = Path(__file__).resolve().parents[1]


def _faults_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(FAULTS_REPO / "src"), str(FAULTS_REPO)]),
            "MLFLOW_DISABLE_TELEMETRY": "true"}


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children, ...), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _running(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) not in ("Z", "X")
    except OSError:
        return False


def _dead_pid() -> int:
    """The pid of a process that has ended (and was reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# A step's shape: the pool runs inside the step's temp folder (atomic_dir), as validate and
# tensorize do; a thread first makes the pool use the forkserver (as a step that imported torch).
POOL_STEP = textwrap.dedent("""
    import sys, threading, time
    from lpdvae.data.pool import map_songs
    from lpdvae.io import atomic_dir
    if __name__ == "__main__":
        if sys.argv[1] == "forkserver":
            threading.Thread(target=time.sleep, args=(300,), daemon=True).start()
        with atomic_dir(sys.argv[2]):
            results = map_songs(time.sleep, [300] * 4, 4, 2, {}, crashed=lambda job, why: why)
            print("started", flush=True)
            next(results)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux's")
@pytest.mark.parametrize("start_method", ["fork", "forkserver"])
def test_pool_workers_die_when_their_step_is_killed(tmp_path, start_method):
    step = subprocess.Popen([sys.executable, "-c", POOL_STEP, start_method, str(tmp_path / "out")],
                            stdout=subprocess.PIPE, text=True, env=_faults_env())
    try:
        assert step.stdout.readline().strip() == "started"
        deadline = time.monotonic() + 30
        while len(_descendants(step.pid)) < 2 and time.monotonic() < deadline:  # the workers are up
            time.sleep(0.1)
        workers = _descendants(step.pid)
        assert len(workers) >= 2, workers
    finally:
        step.kill()
        step.wait()
    deadline = time.monotonic() + 5
    while any(map(_running, workers)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in workers if _running(p)], "pool workers outlived their SIGKILLed step"


STALE_TEMP_CASES = {  # owner of a temp folder still locked (by an orphan) -> removed by the next run?
    "owner pid ended, an orphan holds the lock": (lambda: {"pid": _dead_pid()}, True),
    "owner pid reused by another process": (lambda: {"started": "1"}, True),
    "owner alive (a concurrent run)": (lambda: {}, False),
    "owner on another host (shared disk)": (lambda: {"host": "elsewhere.invalid", "pid": _dead_pid()}, False),
}


@pytest.mark.parametrize("case", list(STALE_TEMP_CASES))
def test_a_stale_temp_folder_goes_even_when_a_dead_owners_lock_remains(tmp_path, case):
    owner_change, removed = STALE_TEMP_CASES[case]
    stale = tmp_path / ".step.abcd1234.tmp"
    (stale / "shards").mkdir(parents=True)
    (tmp_path / ".step.abcd1234.tmp.owner").write_text(json.dumps({**process_owner(), **owner_change()}))
    orphan_lock = os.open(stale, os.O_RDONLY | os.O_DIRECTORY)  # what a forked worker inherits
    fcntl.flock(orphan_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        with atomic_dir(tmp_path / "step") as tmp:
            (tmp / "a").write_text("1")
    finally:
        os.close(orphan_lock)
    assert (tmp_path / "step" / "a").exists()
    assert stale.exists() is not removed, case
    assert (tmp_path / ".step.abcd1234.tmp.owner").exists() is not removed, case


@pytest.mark.parametrize("how", sorted(faultkit.CRASH))
def test_a_worker_that_dies_on_one_job_answers_that_job_only(how):
    jobs = [(n, how if n == 5 else "") for n in range(12)]
    results = list(map_songs(faultkit.double_or_crash, jobs, len(jobs), 2, {},
                             crashed=lambda job, why: (WORKER_CRASHED, job[0], why)))
    assert results[:5] + results[6:] == [2 * n for n in range(12) if n != 5]
    reason, n, why = results[5]
    assert (reason, n) == (WORKER_CRASHED, 5) and why.startswith("the worker process reading it died ("), why


UNSTARTABLE_WORKERS = textwrap.dedent("""
    import threading, time
    from lpdvae.data.pool import map_songs
    from lpdvae.errors import LpdvaeError
    def job(n):  # lives in this -c script: a forkserver's child cannot import it
        return n
    if __name__ == "__main__":
        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()  # -> forkserver
        try:
            list(map_songs(job, range(4), 4, 2, {}, crashed=lambda job, why: "worker_crashed"))
        except LpdvaeError as exc:
            print(exc)
""")


def test_workers_that_cannot_start_stop_the_step_instead_of_quarantining_every_song():
    out = subprocess.run([sys.executable, "-c", UNSTARTABLE_WORKERS], capture_output=True, text=True,
                         env=_faults_env(), timeout=120)
    assert out.stdout.strip().startswith("a worker process died before it could start (exited with status 1)"), \
        (out.stdout, out.stderr[-1000:])


VALIDATE_CRASH = textwrap.dedent("""
    import json, os, signal, sys
    from pathlib import Path
    from lpdvae.validation import song_stats
    from tests import songkit
    raw = Path(sys.argv[1])
    rows = songkit.good_corpus(raw, n_midi=3, n_npz=1)
    real = song_stats.read_song
    def read_song(path, *args, **kwargs):  # a parser that segfaults on one file
        if path.endswith("song001.mid"):
            os.kill(os.getpid(), signal.SIGSEGV)
        return real(path, *args, **kwargs)
    song_stats.read_song = read_song  # workers fork from here: they have it
    params = songkit.params(**{"tensorize.workers": 2})
    table = song_stats.stats_table(rows, song_stats.stats_rows(raw, rows, params))
    print(json.dumps({p: e if isinstance(e, str) else None for p, e in zip(table["path"], table["load_error"])}))
""")


def test_a_song_that_crashes_its_worker_is_quarantined_as_worker_crashed(tmp_path):
    out = subprocess.run([sys.executable, "-c", VALIDATE_CRASH, str(tmp_path / "raw")], capture_output=True,
                         text=True, env=_faults_env(), cwd=FAULTS_REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    errors = json.loads(out.stdout.strip().splitlines()[-1])
    assert errors == {"files/midi/song000.mid": None, "files/midi/song001.mid": WORKER_CRASHED,
                      "files/midi/song002.mid": None, "files/npz/song000.npz": None}


# MLflow: one sqlite store for this section's cases (creating its tables takes seconds).

@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('faults-store') / 'mlflow.db'}"


@pytest.fixture
def store_params(sqlite_store, monkeypatch):
    from lpdvae.params import load_params
    from tests.evalkit import TINY, on_server

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return on_server(load_params(FAULTS_REPO / "params.yaml", dict(TINY)), sqlite_store, "faults")


def _owner_tags(**change: object) -> dict[str, str]:
    me = {**process_owner(), **change}
    return {"lpdvae.owner": f"{me['host']}:{me['pid']}", "lpdvae.owner_started": str(me["started"])}


RUNNING_RUN_CASES = {  # the owner a RUNNING run names -> its status after the next train starts
    "owner process ended (a SIGKILLed train)": (lambda: _owner_tags(pid=_dead_pid()), "KILLED"),
    "owner pid reused by another process": (lambda: _owner_tags(started="1"), "KILLED"),
    "owner alive (a train running now)": (lambda: _owner_tags(), "RUNNING"),
    "owner on another host": (lambda: _owner_tags(host="elsewhere.invalid", pid=_dead_pid()), "RUNNING"),
    "no owner recorded (older runs)": (lambda: {}, "RUNNING"),
}


def test_a_killed_trains_running_run_is_marked_killed_when_the_next_train_starts(tmp_path, store_params):
    from mlflow import MlflowClient

    from lpdvae.registry.tracking import setup_mlflow
    from lpdvae.training.run_log import RunLog
    from tests.evalkit import make_tensors

    client = MlflowClient(store_params.mlflow.tracking_uri)
    exp = setup_mlflow(store_params)
    runs = {case: client.create_run(exp, tags=tags()).info.run_id for case, (tags, _) in RUNNING_RUN_CASES.items()}
    log = RunLog(store_params, make_tensors(tmp_path / "tensors", store_params, n=2))
    log.start(None, {})
    log.fail()
    status = {case: client.get_run(run_id).info.status for case, run_id in runs.items()}
    assert status == {case: expected for case, (_, expected) in RUNNING_RUN_CASES.items()}
    assert client.get_run(log.run_id).data.tags["lpdvae.owner"] == f"{socket.gethostname()}:{os.getpid()}"
    killed = client.get_run(runs["owner process ended (a SIGKILLed train)"]).data.tags["lpdvae.killed_reason"]
    assert "ended without closing the run; marked KILLED" in killed


def _register(tmp_path: Path, params, model: Path, name: str):
    from lpdvae.steps.register import register
    from tests.evalkit import make_tensors, write_eval

    tensors = tmp_path / "tensors"
    if not tensors.exists():
        make_tensors(tensors, params, n=4)
    return register(model, write_eval(tmp_path / f"{name}-eval", True, 0.5), tmp_path / f"{name}.json", params,
                    lineage={"lpdvae.dvc.tensors": "abc.dir"}, tensor_dir=tensors, report_dir=tmp_path / "report")


def _versions(params) -> list[str]:
    from lpdvae.registry.aliases import client

    name = params.register.model_name
    return sorted(str(mv.version) for mv in client(params).search_model_versions(f"name='{name}'"))


def test_register_twice_for_one_training_run_reuses_its_version(tmp_path, store_params, caplog):
    from tests.evalkit import make_model

    model = make_model(tmp_path / "model", store_params)
    first = _register(tmp_path, store_params, model, "first")
    (tmp_path / "report").rename(tmp_path / "first-report")
    again = _register(tmp_path, store_params, model, "again")  # e.g. dvc repro after validate reran
    assert _versions(store_params) == ["1"]
    assert (again.version, again.reused, first.reused) == ("1", True, False)
    assert (again.aliases, again.verdict) == (first.aliases, first.verdict)
    assert (tmp_path / "report" / "model_card.md").is_file()  # the rerun's output folder, from the run
    assert json.loads((tmp_path / "again.json").read_text())["reused"] is True
    assert "is already registered as" in caplog.text and "reused it, no new version" in caplog.text


def test_register_finishes_the_version_a_killed_register_left_without_a_second_one(tmp_path, store_params):
    from mlflow import MlflowClient

    from lpdvae.registry.aliases import CHALLENGER, CHAMPION, client
    from tests.evalkit import make_model

    model = make_model(tmp_path / "model", store_params)
    run_id = json.loads((model / "mlflow_run.json").read_text())["run_id"]
    name = store_params.register.model_name
    raw = MlflowClient(store_params.mlflow.tracking_uri)
    raw.create_registered_model(name)  # killed right after register_model: no tags, alias or card
    raw.create_model_version(name, f"runs:/{run_id}/generator", run_id)
    result = _register(tmp_path, store_params, model, "rerun")
    assert _versions(store_params) == ["1"] and result.version == "1" and not result.reused
    mv = client(store_params).get_model_version(name, "1")
    assert mv.tags["lpdvae.model_card"].endswith("model_card.md") and mv.tags["lpdvae.dvc.tensors"] == "abc.dir"
    assert sorted(mv.aliases) == sorted([CHALLENGER, CHAMPION])


def _cli(argv: list[str], capsys) -> tuple[int, list[str]]:
    from lpdvae import cli

    rc = cli.main(["--params", str(FAULTS_REPO / "params.yaml"), *argv])
    out = capsys.readouterr()
    return rc, [line for line in (out.out + out.err).splitlines() if line.strip()]


@pytest.fixture
def registry_cli(store_params):
    """The store with two blessed versions of a fresh model; the CLI's --set options reaching it."""
    from mlflow import MlflowClient

    from lpdvae.registry.tracking import setup_mlflow

    name, uri = store_params.register.model_name, store_params.mlflow.tracking_uri
    raw = MlflowClient(uri)
    exp = setup_mlflow(store_params)
    raw.create_registered_model(name)
    for _ in range(2):
        run_id = raw.create_run(exp).info.run_id
        raw.create_model_version(name, f"runs:/{run_id}/generator", run_id, tags={"lpdvae.blessed": "true"})
    return ["--set", f"mlflow.tracking_uri={uri}", "--set", f"register.model_name={name}"]


NO_OP_REGISTRY_CASES = {  # (registry actions before, the action) -> (exit code, its last line)
    "promote the champion onto itself": ([["promote", "1"]], ["promote", "1"], 1,
                                         "lpdvae registry: {name} version 1 is already champion: nothing to promote"),
    "rollback with no champion": ([], ["rollback"], 1, "lpdvae registry: {name} has no champion: nothing to roll back"),
    "rollback from the first champion": ([["promote", "1"]], ["rollback"], 1,
                                         "lpdvae registry: {name} version 1 is the only champion there has been "
                                         "(no previous champion recorded): nothing to roll back"),
    "rollback after a refused self-promotion": ([["promote", "1"], ["promote", "2"], ["promote", "2"]],
                                                ["rollback"], 0,
                                                "{name}: champion rolled back from version 2 to 1"),
}


@pytest.mark.parametrize("case", list(NO_OP_REGISTRY_CASES))
def test_a_no_op_promotion_or_rollback_is_refused_in_one_line(case, registry_cli, store_params, capsys):
    before, action, rc, line = NO_OP_REGISTRY_CASES[case]
    for step in before:
        _cli([*registry_cli, "registry", *step], capsys)
    got_rc, lines = _cli([*registry_cli, "registry", *action], capsys)
    assert (got_rc, lines[-1]) == (rc, line.format(name=store_params.register.model_name))
    assert len([x for x in lines if x.startswith("lpdvae registry:")]) <= 1


def _not_sqlite(db: Path) -> None:
    db.write_bytes(os.urandom(5000))


def _pages_overwritten(db: Path) -> None:
    """A real store whose middle pages were overwritten (a disk or copy gone wrong)."""
    from mlflow import MlflowClient

    MlflowClient(f"sqlite:///{db}").search_experiments()  # creates the tables
    with open(db, "r+b") as fh:
        fh.seek(db.stat().st_size // 3)
        fh.write(b"\xff" * (db.stat().st_size // 3))


BROKEN_STORES = {"not an SQLite file": (_not_sqlite, "not an SQLite database"),
                 "pages overwritten": (_pages_overwritten, "database disk image is malformed")}
STORE_COMMANDS = [["registry", "list"], ["registry", "promote", "1"], ["registry", "rollback"],
                  ["registry", "describe", "1"], ["registry", "card", "1"], ["status"], ["status", "--registry"],
                  ["audit", "models:/lpdvae/1"], ["audit", "--dataset", "abc.dir"]]


@pytest.mark.parametrize("store", list(BROKEN_STORES))
def test_a_broken_mlflow_store_is_one_line_in_every_registry_command(store, tmp_path, monkeypatch, capsys):
    breaks, why = BROKEN_STORES[store]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    breaks(tmp_path / "mlflow.db")
    for argv in STORE_COMMANDS:
        rc, lines = _cli(argv, capsys)
        problem = [line for line in lines if "mlflow.db is unusable" in line]
        assert rc == 1 and len(problem) == 1, (argv, lines)
        assert f"MLflow store {tmp_path / 'mlflow.db'} is unusable (" in problem[0] and why in problem[0], problem
        assert "move it aside" in problem[0] and not any("Traceback" in line for line in lines), argv


def test_a_store_that_breaks_past_the_upfront_check_is_still_one_line(tmp_path, monkeypatch, capsys):
    from lpdvae.registry import tracking

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(tracking, "check_store", lambda uri: None)  # as if the damage were where it did not read
    _not_sqlite(tmp_path / "mlflow.db")
    rc, lines = _cli(["registry", "list"], capsys)
    assert rc == 1 and lines[-1].startswith(f"lpdvae registry: MLflow store {tmp_path / 'mlflow.db'} is unusable ("), lines


def test_a_model_card_whose_artifacts_are_gone_is_one_line(registry_cli, store_params, capsys):
    from mlflow import MlflowClient

    name = store_params.register.model_name
    raw = MlflowClient(store_params.mlflow.tracking_uri)
    run_id = raw.get_model_version(name, "1").run_id
    raw.set_model_version_tag(name, "1", "lpdvae.model_card", f"runs:/{run_id}/model_card/model_card.md")
    rc, lines = _cli([*registry_cli, "registry", "card", "1"], capsys)
    assert rc == 1 and lines[-1].startswith(f"lpdvae registry: {name} version 1: its model card runs:/{run_id}/"), lines
    assert "the run's artifacts are gone; restore the artifact store" in lines[-1]
