"""The train step for real: a tiny tensor dir, a real MLflow server on loopback, real `torchrun`
with 2 gloo processes, and a real SIGKILL in the middle of a run followed by `resume=True`."""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lpdvae.data.shards import ShardWriter, write_index
from lpdvae.errors import LpdvaeError
from lpdvae.io import read_csv
from lpdvae.model.files import load_model
from lpdvae.params import Params, load_params
from lpdvae.registry import lineage
from lpdvae.steps.train import TrainResult, launch, train
from lpdvae.training.checkpoints import checkpoint_dir
from lpdvae.training.outputs import HISTORY_FILE
from lpdvae.training.schedules import lr_factor

from .conftest import REPO
from .project import small_model_dotted

TRACKS = ["lead", "bass"]
SHAPE = (2, 2, 16, 24)  # tracks, bars, steps per bar, pitches


def make_tensors(root: Path, n_train: int = 48, n_val: int = 12, seed: int = 0) -> Path:
    """A tensorize-shaped folder of random sparse note codes (several shards per split)."""
    rng = np.random.default_rng(seed)
    writer = ShardWriter(root, SHAPE, shard_size=20)
    for split, n in (("train", n_train), ("val", n_val)):
        cells = rng.random((n, *SHAPE))
        writer.add(split, np.where(cells < 0.025, 2, np.where(cells < 0.05, 1, 0)).astype(np.uint8))
    shards = writer.close()
    splits = {k: {"shards": v, "n": sum(e["n"] for e in v)} for k, v in shards.items()}
    write_index(root, {"shape": list(SHAPE), "tracks": TRACKS, "packed": True, "splits": splits,
                       "songs": {}, "params_digest": "test"})
    return root


def tiny_params(tracking_uri: str, **overrides: object) -> Params:
    return load_params(REPO / "params.yaml", {
        # both decoder heads: a categorical (monophonic) and Bernoulli onset + sustain (polyphonic)
        "tracks": [{"name": n, "kind": kind, "program": 0, "is_drum": False, "names": [n], "programs": []}
                   for n, kind in zip(TRACKS, ("monophonic", "polyphonic"), strict=True)],
        "representation.source_resolution": 16, "representation.beat_resolution": 16,
        "representation.beats_per_bar": 1, "representation.n_bars": 2,
        "representation.n_pitches": 24,
        **small_model_dotted(),
        "train.epochs": 3, "train.batch_size": 8, "train.checkpoint_every_steps": 4,
        "train.warmup_steps": 3, "train.beta_warmup_steps": 6, "train.free_nats": 0.5,
        "train.early_stopping_patience": 0,
        "mlflow.tracking_uri": tracking_uri, "mlflow.experiment": "test-train",
        **overrides,
    })


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Every run here (in-process and subprocess) uses one intra-op thread, so weights compare
    bit for bit, and a shared 2-core machine does not thrash."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@dataclass
class Run:
    tensors: Path
    out: Path
    params: Params
    result: TrainResult


@pytest.fixture(scope="module")
def reference(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One uninterrupted single-process run that the other tests compare against."""
    root = tmp_path_factory.mktemp("train-ref")
    tensors = make_tensors(root / "tensors")
    params = tiny_params(mlflow_server)
    torch.set_num_threads(1)
    result = train(tensors, root / "model", params)
    return Run(tensors, root / "model", params, result)


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo",
            "MASTER_ADDR": "127.0.0.1"}


def state_dict(model_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(model_dir / "model.pt", weights_only=True)


@pytest.mark.slow
def test_outputs_and_mlflow_run(reference: Run, mlflow_server: str) -> None:
    import mlflow

    out, res = reference.out, reference.result
    assert {"model.pt", "model.json", "train_metrics.json", "mlflow_run.json",
            "history.csv", "epochs.csv"} <= {p.name for p in out.iterdir()}
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert metrics["steps"] == res.steps == 3 * (48 // 8)
    assert metrics["epochs"] == 3 and metrics["samples_per_s"] > 0
    assert len(metrics["kl_per_dim"]) == 4 and 0 <= metrics["active_units"] <= 4
    assert np.isfinite(metrics["val_loss"]) and res.val_loss == metrics["val_loss"]
    history = read_csv(out / HISTORY_FILE)
    assert [r["step"] for r in history] == list(range(1, 19))
    assert history[-1]["beta"] == pytest.approx(0.5) and history[0]["beta"] == 0.0
    epochs = read_csv(out / "epochs.csv")  # the per-epoch curve dvc.yaml plots
    assert [r["epoch"] for r in epochs] == [0, 1, 2] and all(np.isfinite(r["val_loss"]) for r in epochs)
    vae = load_model(out)
    assert vae.meta["tracks"][0]["name"] == "lead" and not vae.training
    assert (checkpoint_dir(out) / "step-00000018.pt").exists()

    run_info = json.loads((out / "mlflow_run.json").read_text())
    assert run_info["tracking_uri"] == mlflow_server and run_info["run_id"] == res.run_id
    client = mlflow.MlflowClient(mlflow_server)
    run = client.get_run(res.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.lr"] == str(reference.params.train.lr)
    assert run.data.params["train.batch_size"] == "8"
    assert run.data.params["model.latent_dim"] == "4"
    assert run.data.tags["lpdvae.dataset_dvc_hash"] == lineage.dvc_hash(reference.tensors)
    assert run.data.tags["lpdvae.params_digest"] == reference.params.digest()
    assert "lpdvae.git_revision" in run.data.tags
    assert len(client.get_metric_history(res.run_id, "train_loss")) == 18
    assert len(client.get_metric_history(res.run_id, "val_loss")) == 3
    for key in ("train_recon", "train_kl", "beta", "lr", "active_units", "samples_per_s",
                "val_active_units", "kl_dim/000"):
        assert key in run.data.metrics, key

    mlflow.set_tracking_uri(mlflow_server)
    model = mlflow.pyfunc.load_model(run_info["model_uri"])
    assert model.metadata.get_input_schema().inputs[0].shape == (-1, *SHAPE)
    cells = np.random.default_rng(1).random((3, *SHAPE))
    x = np.where(cells < 0.025, 2, np.where(cells < 0.05, 1, 0)).astype(np.float32)  # codes as floats
    recon = model.predict(x)  # the logged view: codes in, the reconstructed codes out
    assert recon.shape == (3, *SHAPE) and set(np.unique(recon)) <= {0.0, 1.0, 2.0}
    np.testing.assert_array_equal(recon, vae.reconstruct(torch.from_numpy(x).to(torch.uint8)).numpy())


@pytest.mark.slow
def test_the_runs_logged_model_holds_no_pickle(reference: Run, mlflow_server: str, tmp_path: Path) -> None:
    """A loader-module pyfunc over model.pt + model.json: loading it unpickles nothing (issue 24)."""
    import mlflow
    import yaml
    from mlflow.artifacts import download_artifacts

    mlflow.set_tracking_uri(mlflow_server)
    model_uri = json.loads((reference.out / "mlflow_run.json").read_text())["model_uri"]
    local = Path(download_artifacts(artifact_uri=model_uri, dst_path=str(tmp_path)))
    flavors = yaml.safe_load((local / "MLmodel").read_text())["flavors"]
    assert list(flavors) == ["python_function"] and flavors["python_function"]["loader_module"] == "lpdvae.training.run_log"
    assert sorted(p.name for p in (local / flavors["python_function"]["data"]).iterdir()) == ["model.json", "model.pt"]
    assert not [p for p in local.rglob("*") if p.suffix in (".pkl", ".pickle", ".pth")]


@pytest.fixture(scope="module")
def ddp_reference(reference: Run, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One uninterrupted run of 2 gloo processes under torchrun, on the reference's tensors."""
    root = tmp_path_factory.mktemp("train-ddp")
    params = tiny_params(reference.params.mlflow.tracking_uri, **{"train.nproc": 2})
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    return Run(reference.tensors, root / "model", params, launch(reference.tensors, root / "model", params))


@pytest.mark.slow
def test_torchrun_two_processes_follow_the_single_process_curve(reference: Run, ddp_reference: Run) -> None:
    result = ddp_reference.result
    assert result.metrics["world_size"] == 2 and result.steps == reference.result.steps
    ddp, single = read_csv(ddp_reference.out / HISTORY_FILE), read_csv(reference.out / HISTORY_FILE)
    assert [r["step"] for r in ddp] == [r["step"] for r in single]
    for key in ("loss", "recon", "kl"):
        np.testing.assert_allclose([r[key] for r in ddp], [r[key] for r in single],
                                   rtol=1e-4, atol=1e-4, err_msg=key)
    assert result.val_loss == pytest.approx(reference.result.val_loss, rel=1e-4)
    ref, got = state_dict(reference.out), state_dict(ddp_reference.out)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], atol=1e-4, rtol=1e-3)


DYING_RANK = textwrap.dedent("""
    import os, sys, torch
    from lpdvae.training import worker
    step, calls = torch.optim.AdamW.step, [0]
    def dying_step(self, *a, **k):  # the test's fault: rank 1 dies before its Kth update
        calls[0] += 1
        if os.environ["RANK"] == "1" and calls[0] == int(os.environ["DIE_AT_STEP"]):
            os._exit(17)
        return step(self, *a, **k)
    torch.optim.AdamW.step = dying_step
    sys.exit(worker.main(sys.argv[1:]))
""")


@pytest.mark.slow
def test_a_rank_killed_mid_epoch_resumes_from_s3_checkpoints_to_identical_weights(
        ddp_reference: Run, tmp_path: Path, s3_bucket: str, capfd: pytest.CaptureFixture[str]) -> None:
    """What a TrainJob restart does: 2 gloo ranks checkpoint to S3 (moto on loopback), rank 1 dies
    at step 10 (epoch 2 of 3, after the step-8 checkpoint), torchrun ends the job, and a relaunch
    with --resume continues from S3 to the weights of the uninterrupted run, bit for bit."""
    import boto3

    uri, out, driver = f"s3://{s3_bucket}/run-1/model.checkpoints", tmp_path / "model", tmp_path / "die.py"
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(ddp_reference.params.to_dict()))
    driver.write_text(DYING_RANK)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(driver),
           "--params", str(params_file), "--tensors", str(ddp_reference.tensors), "--out", str(out),
           "--checkpoints", uri]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "DIE_AT_STEP": "10"}
    died = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert died.returncode != 0 and "exitcode: 17" in died.stderr, died.stderr[-3000:]
    s3 = boto3.client("s3")
    listed = s3.list_objects_v2(Bucket=s3_bucket, Prefix="run-1/model.checkpoints/")["Contents"]
    assert sorted(o["Key"].rsplit("/", 1)[1] for o in listed) == ["latest", "step-00000004.pt", "step-00000008.pt"]
    assert not out.exists(), "died mid-run: no final output yet"

    capfd.readouterr()
    result = launch(ddp_reference.tensors, out, ddp_reference.params, resume=True, checkpoints=uri)
    assert "resumed from step 8 (epoch 2, batch 2)" in capfd.readouterr().err, "not a fresh start"
    assert result.steps == ddp_reference.result.steps
    ref, got = state_dict(ddp_reference.out), state_dict(out)
    assert ref.keys() == got.keys()
    assert not [k for k in ref if not torch.equal(ref[k], got[k])], "weights differ after the relaunch"
    resumed, straight = read_csv(out / HISTORY_FILE), read_csv(ddp_reference.out / HISTORY_FILE)
    assert [r["loss"] for r in resumed] == [r["loss"] for r in straight]
    latest = s3.get_object(Bucket=s3_bucket, Key="run-1/model.checkpoints/latest")["Body"].read()
    assert latest == b"step-00000018.pt", "the relaunch kept checkpointing to S3"


DRIVER = textwrap.dedent("""
    import sys, time, torch
    from lpdvae.cli import main
    torch.set_num_threads(1)
    step = torch.optim.AdamW.step
    def slow_step(self, *a, **k):  # the test's throttle: room to kill between two checkpoints
        time.sleep(0.25)
        return step(self, *a, **k)
    torch.optim.AdamW.step = slow_step
    sys.exit(main(sys.argv[1:]))
""")


@pytest.mark.slow
def test_sigkill_then_resume_gives_identical_weights(reference: Run, tmp_path: Path) -> None:
    out = tmp_path / "model"
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(reference.params.to_dict()))
    cli = ["--params", str(params_file), "train", "--tensors", str(reference.tensors),
           "--out", str(out)]  # `lpdvae train`, throttled
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, *cli], env=subprocess_env(), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = checkpoint_dir(out) / "step-00000004.pt"
    deadline = time.monotonic() + 240
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    assert first.exists() and not out.exists()  # died mid-run: no final output yet
    done = [p.name for p in checkpoint_dir(out).iterdir() if p.suffix == ".pt"]
    assert "step-00000018.pt" not in done

    result = train(reference.tensors, out, reference.params, resume=True)
    assert result.steps == reference.result.steps
    ref, got = state_dict(reference.out), state_dict(out)
    assert ref.keys() == got.keys()
    different = [k for k in ref if not torch.equal(ref[k], got[k])]
    assert not different, f"weights differ after resume: {different}"
    resumed, straight = read_csv(out / HISTORY_FILE), read_csv(reference.out / HISTORY_FILE)
    assert [r["loss"] for r in resumed] == [r["loss"] for r in straight]


@pytest.mark.slow
def test_resume_without_checkpoints_starts_fresh_and_fresh_run_clears_them(
        reference: Run, tmp_path: Path) -> None:
    tensors = make_tensors(tmp_path / "tensors", n_train=16, n_val=0)
    params = tiny_params(reference.params.mlflow.tracking_uri, **{"train.epochs": 1})
    stale = checkpoint_dir(tmp_path / "model") / "step-00000999.pt"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"not a checkpoint")
    result = train(tensors, tmp_path / "model", params)  # no resume: stale files go
    assert not stale.exists() and result.steps == 2 and result.val_loss is None
    again = train(tensors, tmp_path / "model", params, resume=True)  # resumes the finished run
    assert again.steps == 2
    assert torch.equal(state_dict(tmp_path / "model")["to_stats.weight"],
                       load_model(tmp_path / "model").state_dict()["to_stats.weight"])


@pytest.mark.slow
def test_resume_refuses_checkpoints_of_another_model_format(reference: Run, tmp_path: Path) -> None:
    tensors = make_tensors(tmp_path / "tensors", n_train=16, n_val=0)
    params = tiny_params(reference.params.mlflow.tracking_uri, **{"train.epochs": 1})
    train(tensors, tmp_path / "model", params)
    newest = sorted(checkpoint_dir(tmp_path / "model").glob("*.pt"))[-1]
    ckpt = torch.load(newest, weights_only=True)
    ckpt["model_format"] = 1  # written by an lpdvae whose network had other layers
    torch.save(ckpt, newest)
    with pytest.raises(LpdvaeError, match=r"model format 1, .* without --resume"):
        train(tensors, tmp_path / "model", params, resume=True)


def test_lr_schedule_shapes() -> None:
    assert [lr_factor(s, 2, 10, "constant") for s in (0, 1, 2, 9)] == [0.5, 1.0, 1.0, 1.0]
    cos = [lr_factor(s, 2, 10, "cosine") for s in range(10)]
    assert cos[:3] == [0.5, 1.0, 1.0] and all(a >= b for a, b in zip(cos[2:], cos[3:], strict=False))
    assert lr_factor(10, 2, 10, "cosine") == pytest.approx(0.0)


def test_nothing_under_training_imports_the_steps() -> None:
    """The step (`lpdvae.steps.train`) calls down into `lpdvae.training`, never the reverse."""
    upward = []
    for path in sorted((REPO / "src" / "lpdvae" / "training").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            upward += [f"{path.name}: {n}" for n in names if n == "lpdvae.steps" or n.startswith("lpdvae.steps.")]
    assert upward == []



@pytest.mark.slow
def test_an_s3_checkpoint_newer_than_the_latest_pointer_is_not_offered(s3_bucket: str, tmp_path: Path) -> None:
    import boto3

    from lpdvae.training.checkpoint_store import S3Store

    store = S3Store(f"s3://{s3_bucket}/run-1/model.checkpoints", tmp_path)
    store.put("step-00000004.pt", b"a")
    store.put("step-00000008.pt", b"b")
    boto3.client("s3").put_object(Bucket=s3_bucket, Key="run-1/model.checkpoints/step-00000012.pt",
                                  Body=b"c")  # a writer killed after the upload, before the pointer
    assert store.names() == ["step-00000004.pt", "step-00000008.pt"]


def test_training_with_track_presence_keeps_the_training_arrangements_rates(
        mlflow_server: str, tmp_path: Path) -> None:
    from lpdvae.data.shards import load_split
    from lpdvae.model.heads import TrackPresence, tracks_playing

    tensors = make_tensors(tmp_path / "tensors")
    params = tiny_params(mlflow_server, **{"train.epochs": 1, "model.track_presence": True})
    train(tensors, tmp_path / "model", params)
    vae = load_model(tmp_path / "model")
    patterns = TrackPresence.pattern(tracks_playing(torch.from_numpy(load_split(tensors, "train"))))
    expected = torch.bincount(patterns, minlength=vae.presence.rates.numel()).float() / len(patterns)
    assert vae.presence.fitted and torch.allclose(vae.presence.rates, expected)


def test_training_with_a_bar_density_fits_it_and_chooses_its_bandwidth_on_validation(
        mlflow_server: str, tmp_path: Path) -> None:
    from lpdvae.model.prior import KernelDensity

    tensors = make_tensors(tmp_path / "tensors")
    params = tiny_params(mlflow_server, **{"train.epochs": 1, "model.bar_prior": "kde", "model.bar_latent_dim": 2})
    train(tensors, tmp_path / "model", params)
    vae = load_model(tmp_path / "model")
    assert vae.bar_kde is not None and bool(vae.bar_kde.fitted)
    assert int(vae.bar_kde.count) == 48 * 4  # every training phrase's posterior draws, under FIT_PHRASES
    assert round(float(vae.bar_kde.bandwidth), 3) in KernelDensity.BANDWIDTHS


def test_training_with_a_latent_density_keeps_the_posteriors_and_chooses_its_width_on_validation(
        mlflow_server: str, tmp_path: Path) -> None:
    from lpdvae.model.prior import KernelDensity

    tensors = make_tensors(tmp_path / "tensors")
    params = tiny_params(mlflow_server, **{"train.epochs": 1, "model.prior": "kde"})
    train(tensors, tmp_path / "model", params)
    vae = load_model(tmp_path / "model")
    assert vae.latent_kde is not None and int(vae.latent_kde.count) == 48 * 4  # every training phrase's draws
    assert round(float(vae.latent_kde.bandwidth), 3) in KernelDensity.BANDWIDTHS
    assert not bool(vae.prior.fitted)  # the mixture is not what generation draws from
