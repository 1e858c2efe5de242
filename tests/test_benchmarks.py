"""Every benchmark runs at a tiny size, so none can rot between the runs that measure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted(p.stem for p in (REPO / "benchmarks").glob("*_bench.py"))

# The smallest arguments that still run every code path of each benchmark (its own `--help` says
# what each one means); results go to a temp file, never benchmarks/results/.
TINY: dict[str, list[str]] = {
    "conv_block_bench": ["--steps", "1", "--batch", "4"],
    "demo_render_bench": ["--limit", "3"],
    "duplicate_bench": ["--songs", "30", "--brute", "20", "--repeats", "1"],
    "evaluate_bench": ["--phrases", "16", "--repeats", "1"],
    "fanout_bench": ["--songs", "6", "--chunks", "2"],
    "midi_parse_bench": ["--songs", "3"],
    "scale_bench": ["--songs", "4", "--small", "3"],  # 3 songs: every split gets one
    "startup_bench": ["--repeats", "1"],
    "tensorize_bench": ["--songs", "4", "--report-only"],
    "train_bench": ["--phrases", "64", "--repeats", "1", "--small"],
}


def test_every_benchmark_has_a_tiny_run() -> None:
    assert sorted(TINY) == BENCHMARKS


@pytest.mark.slow
@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_runs_at_a_tiny_size_and_writes_json(name: str, tmp_path: Path) -> None:
    out = tmp_path / f"{name}.json"
    extra = ["--work-dir", str(tmp_path / "work")] if name in ("scale_bench", "tensorize_bench") else []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", *TINY[name], *extra, "--out", str(out)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert isinstance(json.loads(out.read_text()), dict)


# --- train_bench's device sweep (issue 23): the GPU path runs on a GPU machine only
# (benchmarks/gpu_check.sh); every other part of it runs here on CPU at a tiny size.

SWEEP_TINY = ["--device", "cpu", "--small", "--batch", "4", "--steps", "1", "--warmup", "1", "--cpu-steps", "1",
              "--curve-steps", "4"]


@pytest.mark.slow
def test_train_bench_device_sweep_runs_on_cpu_at_a_tiny_size(tmp_path: Path) -> None:
    out = tmp_path / "train-cpu.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "benchmarks", "train_bench", *SWEEP_TINY, "--out", str(out)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["complete"] and list(result["configs"]) == ["fp32"]  # bf16 and compile: GPU only
    assert result["cpu_fp32"]["samples_per_s"] > 0
    assert result["loss_check"]["other"] == "fp32" and result["loss_check"]["passed"]


def test_gpu_check_without_a_gpu_fails_in_one_line(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: gpu_check.sh would run the sweep")
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    run = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        "train_bench: --device cuda, but torch sees no CUDA GPU on this machine (torch.cuda.is_available() "
        "is False); run it where one is, or use --device cpu"]
    assert not (tmp_path / "train-cuda.json").exists()


@pytest.fixture(scope="module")
def tiny_curve() -> tuple[object, list[float]]:
    """The train_bench module and a 20-step fp32 loss curve of the small model on CPU."""
    import torch

    from benchmarks import train_bench as tb
    from lpdvae.params import load_params

    params = load_params(REPO / "params.yaml", tb.SMALL)
    return tb, tb.loss_curve(params, torch.device("cpu"), False, 20, 4)


@pytest.mark.slow
def test_two_fp32_loss_curves_of_one_seed_pass_the_check(tiny_curve: tuple) -> None:
    import torch

    from lpdvae.params import load_params

    tb, ref = tiny_curve
    again = tb.loss_curve(load_params(REPO / "params.yaml", tb.SMALL), torch.device("cpu"), False, 20, 4)
    assert tb.compare_curves(ref, again)["passed"]


@pytest.mark.slow
@pytest.mark.parametrize("perturb", [
    lambda i, v: v * 1.05 if i >= 10 else v,  # a 5 % gap in the second window: over the 3 % tolerance
    lambda i, v: float("nan") if i == 7 else v,  # one non-finite loss
])
def test_a_perturbed_loss_curve_fails_the_check(tiny_curve: tuple, perturb) -> None:
    tb, ref = tiny_curve
    check = tb.compare_curves(ref, [perturb(i, v) for i, v in enumerate(ref)])
    assert not check["passed"]


def tiny_tensors(folder: Path, params, phrases: int = 12) -> Path:
    """Synthetic train/val/test shards of `params`' phrase shape, `phrases` in each split."""
    import numpy as np

    from benchmarks.train_bench import phrase_shape, synthetic_rolls
    from lpdvae.data.shards import SPLITS, ShardWriter, write_index

    shape, rng = phrase_shape(params), np.random.default_rng(0)
    writer = ShardWriter(folder, shape, shard_size=16)
    for split in SPLITS:
        writer.add(split, synthetic_rolls(rng, phrases, shape))
    shards = writer.close()
    write_index(folder, {"shape": list(shape), "tracks": params.track_names, "packed": True,
                         "songs": {}, "splits": {s: {"shards": shards[s], "n": phrases} for s in SPLITS}})
    return folder


# --- voice_chain_report (issue 20): it rotted once (measure() stopped reading test); run it here.

@pytest.mark.slow
def test_voice_chain_report_runs_at_a_tiny_size(tmp_path: Path, tiny_params) -> None:
    """Two untrained models (chain and independent voices) of the tiny params on synthetic
    train/val/test shards, with the copy baseline: every path of the report, no training."""
    import dataclasses

    import yaml

    from lpdvae.io import atomic_write_json
    from lpdvae.model.files import build_model, save_model

    tiny_tensors(tmp_path / "tensors", tiny_params)
    models = []
    for chain in (True, False):
        params = dataclasses.replace(tiny_params, model=dataclasses.replace(tiny_params.model, voice_chain=chain))
        folder = save_model(build_model(params), tmp_path / f"chain-{chain}", params)
        atomic_write_json(folder / "train_metrics.json", {"steps": 0, "train_time_s": 0.0, "val_recon": 1.0})
        models += ["--model", f"{'chain' if chain else 'independent'}={folder}"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params.to_dict(), sort_keys=False))
    out = tmp_path / "voice_chain.json"
    run = subprocess.run([sys.executable, "-m", "benchmarks.voice_chain_report", "--tensors", str(tmp_path / "tensors"),
                          *models, "--copy", "--params", str(tmp_path / "params.yaml"), "--out", str(out)],
                         cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    result = json.loads(out.read_text())
    assert {m: result["models"][m]["voice_chain"] for m in result["models"]} == {"chain": True, "independent": False}
    assert set(result["copy_baseline"]) == {"transpose", "val_note_f1", "test_note_f1"}
    assert "parallel_5_8_rate" in result["models"]["chain"]["data_test"]


# --- prior_report (issue 23): which latents decode into data-like music

@pytest.mark.slow
@pytest.mark.parametrize("bar_prior", ["normal", "kde"])
def test_prior_report_decodes_every_latent_source_at_a_tiny_size(tmp_path: Path, tiny_params, bar_prior: str) -> None:
    """An untrained model with bar latents and a fitted prior (with the bars' kernel density:
    over the phrase z alone), on synthetic shards: every source of the report is decoded and
    measured beside the validation data."""
    import dataclasses

    import torch

    from lpdvae.model.files import build_model, save_model

    params = dataclasses.replace(tiny_params, model=dataclasses.replace(tiny_params.model, bar_latent_dim=4,
                                                                         prior_components=2, bar_prior=bar_prior))
    tensors = tiny_tensors(tmp_path / "tensors", params)
    vae = build_model(params)
    z = torch.randn(32, vae.latent_dim, generator=torch.Generator().manual_seed(0))
    vae.prior.fit(z[:, :vae.prior.dim], 0)
    if vae.bar_kde is not None:
        vae.bar_kde.fit(z[:, vae.phrase_dim:], z[:4, vae.phrase_dim:], 0)
    folder = save_model(vae, tmp_path / "model", params)
    out = tmp_path / "prior.json"
    run = subprocess.run([sys.executable, "-m", "benchmarks.prior_report", "--model", str(folder), "--tensors",
                          str(tensors), "--phrases", "8", "--components", "2", "--out", str(out)],
                         cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    result = json.loads(out.read_text())
    assert {"prior", "posterior", "prior_refit_2", "posterior_phrase_prior_bars", "prior_phrase_per_bar_2"} <= set(result)
    assert ("prior_narrowed_0.5" in result) == (bar_prior == "normal")  # narrowed over the whole z only
    assert set(result["prior"]) == set(result["data_val"])
