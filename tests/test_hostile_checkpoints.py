"""The hostile-input suite: one case per thing an attacker or a careless user can hand the
pipeline, each with its expected verdict. Cases are built by code here (small), never downloaded.
Each section owns its helpers, so sections stay independent."""

from __future__ import annotations

from pathlib import Path

import pytest

# --- checkpoints ---
# `lpdvae train --resume` reads the newest checkpoint (a folder, or the S3 prefix a TrainJob's
# nodes resume from). A file planted there must not run: checkpoints load with
# torch.load(weights_only=True), and a refused file is named in one line with the reason.


class _Marker:
    """Unpickling this runs `touch <path>`: the marker proves whether a load ran code."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        import os
        import shlex

        return (os.system, (f"touch {shlex.quote(str(self.path))}",))


def _plant_torch_pickle(path: Path, marker: Path) -> None:
    import torch

    torch.save({"state": {}, "model": _Marker(marker)}, path)  # torch's zip format, pickled payload


def _plant_raw_pickle(path: Path, marker: Path) -> None:
    import pickle

    path.write_bytes(pickle.dumps({"model": _Marker(marker)}, protocol=2))  # torch's legacy format


def _plant_oversized(path: Path, marker: Path) -> None:
    with open(path, "wb") as fh:  # sparse: 64 GiB on paper, nothing on disk
        fh.truncate(64 << 30)


def _plant_not_a_checkpoint(path: Path, marker: Path) -> None:
    import torch

    torch.save([1, 2, 3], path)


CHECKPOINT_CASES = [  # (case, plant the newest checkpoint, what the one line says after the file name)
    ("pickle that calls os.system, torch zip", _plant_torch_pickle, "refused: loading it would call posix.system"),
    ("pickle that calls os.system, raw protocol 2", _plant_raw_pickle, "refused: loading it would call posix.system"),
    ("64 GiB file for a tiny model", _plant_oversized, "refused: 68719476736 bytes, more than a checkpoint"),
    ("a list, not a checkpoint", _plant_not_a_checkpoint, "refused: not an lpdvae checkpoint"),
]


def _resume(tmp_path: Path, checkpoints: str, capsys) -> tuple[int, list[str]]:
    """`lpdvae train --resume --checkpoints <checkpoints>` in this process: its exit code and
    stderr lines."""
    import torch
    import yaml

    from lpdvae.cli import main
    from tests.test_train import make_tensors, tiny_params

    tensors = make_tensors(tmp_path / "tensors", n_train=16, n_val=0)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_params(f"sqlite:///{tmp_path}/mlflow.db").to_dict()))
    threads = torch.get_num_threads()
    capsys.readouterr()
    try:
        rc = main(["--params", str(params), "train", "--tensors", str(tensors), "--out", str(tmp_path / "model"),
                   "--checkpoints", checkpoints, "--resume"])
    finally:
        torch.set_num_threads(threads)
    return rc, capsys.readouterr().err.splitlines()


@pytest.mark.parametrize(("case", "plant", "says"), CHECKPOINT_CASES, ids=[c[0] for c in CHECKPOINT_CASES])
def test_a_planted_checkpoint_is_refused_in_one_line_and_never_run(tmp_path, capsys, case, plant, says):
    from lpdvae.training.checkpoints import checkpoint_dir

    ckpts, marker = checkpoint_dir(tmp_path / "model"), tmp_path / "PWNED"
    ckpts.mkdir()
    newest = ckpts / "step-00000099.pt"
    plant(newest, marker)
    rc, err = _resume(tmp_path, str(ckpts), capsys)
    assert not marker.exists(), f"{case}: the checkpoint ran code"
    assert rc == 1 and err == [err[0]] and err[0].startswith(f"lpdvae train: {newest}: {says}"), err
    assert "Traceback" not in err[0] and not (tmp_path / "model").exists()


@pytest.mark.slow
def test_a_checkpoint_planted_in_the_s3_prefix_a_trainjob_resumes_from_is_refused(tmp_path, capsys, s3_bucket):
    import boto3

    marker, prefix = tmp_path / "PWNED", "v2/artifacts/run-1/train-trainjob-op/model.checkpoints"
    local = tmp_path / "planted.pt"
    _plant_torch_pickle(local, marker)
    s3 = boto3.client("s3")
    s3.upload_file(str(local), s3_bucket, f"{prefix}/step-00000099.pt")
    s3.put_object(Bucket=s3_bucket, Key=f"{prefix}/latest", Body=b"step-00000099.pt")
    rc, err = _resume(tmp_path, f"s3://{s3_bucket}/{prefix}", capsys)
    assert not marker.exists(), "the checkpoint ran code"
    assert rc == 1 and err == [err[0]], err
    assert err[0].startswith(f"lpdvae train: s3://{s3_bucket}/{prefix}/step-00000099.pt: refused: loading it "
                             "would call posix.system"), err
