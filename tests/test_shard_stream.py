"""Training input streamed from an s3:// tensor prefix (issue 23): the same phrases and batches as
the folder it was uploaded from, and each torchrun rank fetching only its own shards, against a
real moto S3 server on loopback and real torchrun ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml

from lpdvae.data.shard_stream import KEEP, S3PhraseDataset, rank_shards
from lpdvae.data.shards import PhraseDataset
from lpdvae.io import read_csv
from lpdvae.steps.train import train
from lpdvae.training.outputs import HISTORY_FILE

from .conftest import REPO
from .test_train import make_tensors, tiny_params

pytestmark = pytest.mark.slow

N_TRAIN, N_VAL = 80, 24  # 4 train shards of 20 (2 per rank of 2), 2 val shards


@pytest.fixture(scope="module")
def tensors(tmp_path_factory: pytest.TempPathFactory, s3_server: str) -> tuple[Path, str]:
    """A tensor folder and its copy under an S3 prefix, as the tensors artifact lies in the pipeline root."""
    import boto3

    folder = make_tensors(tmp_path_factory.mktemp("stream") / "tensors", N_TRAIN, N_VAL)
    s3, s3_bucket = boto3.client("s3"), "shard-stream"
    s3.create_bucket(Bucket=s3_bucket)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        s3.upload_file(str(path), s3_bucket, f"run-1/tensors/{path.relative_to(folder).as_posix()}")
    return folder, f"s3://{s3_bucket}/run-1/tensors"


def test_an_s3_tensor_prefix_holds_the_same_phrases_as_its_folder_with_two_shards_in_memory(tensors) -> None:
    folder, uri = tensors
    for split in ("train", "val"):
        local, remote = PhraseDataset(folder, split), S3PhraseDataset(uri, split)
        assert len(remote) == len(local)
        for i in range(len(local)):
            assert torch.equal(remote[i], local[i]), (split, i)
            assert len(remote._maps) <= KEEP


def test_training_from_s3_gives_the_batches_of_its_folder_read_by_shard(tensors, mlflow_server, tmp_path) -> None:
    folder, uri = tensors
    torch.set_num_threads(1)
    params = tiny_params(mlflow_server, **{"train.data_order": "shards", "train.epochs": 2})
    from_folder = train(folder, tmp_path / "folder", params)
    from_s3 = train(uri, tmp_path / "s3", params)
    assert from_s3.metrics["steps"] == from_folder.metrics["steps"] == 2 * N_TRAIN // 8
    got, want = read_csv(tmp_path / "s3" / HISTORY_FILE), read_csv(tmp_path / "folder" / HISTORY_FILE)
    assert [r["loss"] for r in got] == [r["loss"] for r in want], "same batches, same noise: same curve"
    assert from_s3.val_loss == from_folder.val_loss


COUNTING_RANK = textwrap.dedent("""
    import os, sys
    from lpdvae.data import shard_stream
    from lpdvae.training import worker
    get = shard_stream.S3Shards._get
    def counted(self, name, limit):  # the test's meter: one line per GET this rank makes
        with open(os.path.join(os.environ["GETS_DIR"], "rank-" + os.environ["RANK"]), "a") as f:
            f.write(name + "\\n")
        return get(self, name, limit)
    shard_stream.S3Shards._get = counted
    sys.exit(worker.main(sys.argv[1:]))
""")


def test_each_torchrun_rank_fetches_only_its_own_shards_at_most_once_per_epoch(tensors, mlflow_server, tmp_path) -> None:
    folder, uri = tensors
    epochs = 2
    params = tiny_params(mlflow_server, **{"train.epochs": epochs, "train.nproc": 2,
                                           "train.checkpoint_every_steps": 0})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params.to_dict()))
    (tmp_path / "count.py").write_text(COUNTING_RANK)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(tmp_path / "count.py"), "--params", str(tmp_path / "params.yaml"), "--tensors", uri,
           "--out", str(tmp_path / "model")]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "GETS_DIR": str(tmp_path)}
    run = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    index = json.loads((folder / "index.json").read_text())["splits"]["train"]["shards"]
    offsets = [0, *(sum(e["n"] for e in index[:k + 1]) for k in range(len(index)))]
    for rank in (0, 1):
        gets = Counter((tmp_path / f"rank-{rank}").read_text().split())
        train_gets = {name: n for name, n in gets.items() if name.startswith("shards/train-")}
        own = {index[k]["file"] for k in rank_shards(offsets, rank, 2)}
        assert set(train_gets) == own, f"rank {rank} fetched {sorted(train_gets)}, owns {sorted(own)}"
        if rank == 1:  # rank 0 also reads its own shards after training: the prior, the logged example
            assert all(1 <= n <= epochs for n in train_gets.values()), f"rank 1: {train_gets}"
