"""Data tasks read ingest's output where it is stored (moto's S3 server on loopback), not a whole
downloaded copy: a tensorize chunk fetches its own songs only, register hashes the raw data from
the listing. Each result is compared with today's path over a local copy of the same folder."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from components.sharding import chunk_rows, tensorize_chunk, validate_chunk, write_chunk
from lpdvae.data import store
from lpdvae.errors import DataError
from lpdvae.io import read_jsonl
from lpdvae.registry.lineage import lineage
from lpdvae.steps.ingest import ingest
from lpdvae.steps.tensorize import tensorize
from lpdvae.steps.validate import validate
from tests.test_components import seven_songs, tree

pytestmark = pytest.mark.slow  # every test talks to the moto server


@pytest.fixture(scope="module")
def local(tmp_path_factory) -> dict:
    """ingest + validate (today's steps) over 7 songs, on local disk."""
    root = tmp_path_factory.mktemp("store")
    params = seven_songs(root)
    ingest(params.data.source, root / "raw", params)
    validate(root / "raw", root / "validated", params, docs_dir=root / "docs")
    return {"root": root, "params": params}


@pytest.fixture
def stored(local, s3_server, s3_bucket) -> str:
    """The raw folder uploaded as KFP's launcher stores an artifact: one object per file."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server)
    raw = local["root"] / "raw"
    for path in sorted(p for p in raw.rglob("*") if p.is_file()):
        s3.put_object(Bucket=s3_bucket, Key=f"v2/artifacts/run-1/ingest-op/raw/{path.relative_to(raw)}",
                      Body=path.read_bytes())
    return f"s3://{s3_bucket}/v2/artifacts/run-1/ingest-op/raw"


@pytest.fixture
def gets(monkeypatch) -> Counter:
    """Keys the store's S3 clients GET, counted."""
    calls: Counter = Counter()
    real = store.s3_client

    def counting(purpose: str):
        client = real(purpose)
        client.meta.events.register("before-parameter-build.s3.GetObject",
                                    lambda params, **_: calls.update([params["Key"].split("/ingest-op/raw/")[1]]))
        return client

    monkeypatch.setattr(store, "s3_client", counting)
    return calls


def test_a_tensorize_chunk_fetches_exactly_its_own_songs(local, stored, gets, tmp_path):
    validated, params = local["root"] / "validated", local["params"]
    write_chunk(validated, 1, 3, tmp_path / "want", params)
    own = {r["path"] for r in read_jsonl(tmp_path / "want" / "accepted.jsonl")}
    tensorize_chunk(stored, str(validated), 1, 3, tmp_path / "tensors", params, tmp_path / "work")
    assert own and set(gets) == own and set(gets.values()) == {1}


def test_a_validate_chunk_fetches_the_manifest_and_exactly_its_own_songs(local, stored, gets, tmp_path):
    rows = read_jsonl(local["root"] / "raw" / "manifest.jsonl")
    own = {r["path"] for r in chunk_rows(rows, 2, 3)}
    assert validate_chunk(stored, 2, 3, tmp_path / "part", local["params"], tmp_path / "work") == len(own)
    assert set(gets) == own | {"manifest.jsonl"} and set(gets.values()) == {1}


def test_a_tensorize_chunk_from_the_store_equals_todays_chunk_over_the_whole_raw_folder(local, stored, tmp_path):
    root, params = local["root"], local["params"]
    for chunk in range(3):
        write_chunk(root / "validated", chunk, 3, tmp_path / f"subset{chunk}", params)
        tensorize(root / "raw", tmp_path / f"subset{chunk}", tmp_path / f"today{chunk}", params, part=True)
        tensorize_chunk(stored, str(root / "validated"), chunk, 3, tmp_path / f"now{chunk}", params,
                        tmp_path / f"work{chunk}")
        assert tree(tmp_path / f"now{chunk}") == tree(tmp_path / f"today{chunk}"), chunk


def test_a_stored_song_whose_bytes_differ_from_the_manifest_is_refused(local, stored, s3_server, tmp_path):
    import boto3

    bucket, prefix = stored.removeprefix("s3://").split("/", 1)
    row = read_jsonl(local["root"] / "raw" / "manifest.jsonl")[0]
    boto3.client("s3", endpoint_url=s3_server).put_object(Bucket=bucket, Key=f"{prefix}/{row['path']}", Body=b"MThd")
    with pytest.raises(DataError, match=rf"{row['path']}: sha256 .* is not the manifest's"):
        store.fetch_songs(store.locate(stored), [row], tmp_path / "raw", 1 << 20)
    assert not (tmp_path / "raw").exists(), "nothing half-fetched is left"


def test_register_hashes_the_stored_raw_data_without_reading_a_song(local, stored, gets):
    root = local["root"]
    (root / "tensors").mkdir(exist_ok=True)
    (root / "tensors" / "index.json").write_text(json.dumps({}))
    args = dict(git_revision="abc", params_digest="p", run_id="run-1")
    today = lineage(root / "raw", root / "validated", root / "tensors", **args)
    now = lineage(stored, root / "validated", root / "tensors", **args)
    assert now == today and today["lpdvae.dvc.raw"].endswith(".dir")
    assert not [k for k in gets if k.startswith("files/")], "no song was downloaded"
