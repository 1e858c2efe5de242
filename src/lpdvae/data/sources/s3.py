"""`s3://bucket/prefix`: objects under a prefix (boto3; `LPDVAE_DATA_AWS_*` or `AWS_*` settings,
AWS_ENDPOINT_URL for MinIO or moto).

A per-source index {key: {token: etag:size, sha256}} from the last successful run lets
unchanged objects skip the download; it is rewritten only after the output was swapped in, so
a stale index costs downloads, never a wrong file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse

from lpdvae.data.redact import redact_uri
from lpdvae.data.sources.base import Entry, Skipped, cache_dir, copy_capped, safe_rel
from lpdvae.errors import DataError
from lpdvae.io import atomic_write_json
from lpdvae.params import Params

S3_PAGE_SIZE = 1000  # keys per ListObjectsV2 page (the S3 maximum)
S3_MAX_ATTEMPTS = 5  # botocore "standard" retries: throttling, 5xx, connection errors


def s3_client():
    """boto3 S3 client with the data source's credentials (`LPDVAE_DATA_AWS_*`, else boto3's
    defaults: `lpdvae.host.s3auth`), transient errors retried with exponential backoff by botocore."""
    from botocore.config import Config

    from lpdvae.host.s3auth import s3_client as purpose_client

    return purpose_client("data", Config(retries={"max_attempts": S3_MAX_ATTEMPTS, "mode": "standard"}))


def _load_index(path: Path) -> dict[str, dict[str, str]]:
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return index if isinstance(index, dict) else {}


@contextlib.contextmanager
def s3_entries(uri: str, out_dir: Path, params: Params) -> Iterator[Iterator[Entry | Skipped]]:
    """Entries of the objects under the prefix; the index is saved when the block ends cleanly."""
    from botocore.exceptions import BotoCoreError, ClientError

    label = redact_uri(uri)
    parsed = urlparse(uri)
    bucket, prefix = parsed.hostname or "", parsed.path.lstrip("/")
    if not bucket:
        raise DataError(f"{label}: no bucket (expected s3://bucket/prefix)")
    if prefix and not prefix.endswith("/"):
        prefix += "/"  # s3://b/songs must not match s3://b/songs2/...
    client = s3_client()
    limit = params.data.max_file_bytes
    index_path = cache_dir(out_dir) / f"s3-index-{hashlib.sha256(uri.encode()).hexdigest()[:16]}.json"
    old_index = _load_index(index_path)
    new_index: dict[str, dict[str, str]] = {}

    def fetch(key: str) -> Callable[[Path], str]:
        def run(dest: Path) -> str:
            where = f"s3://{bucket}/{key}"
            try:
                resp = client.get_object(Bucket=bucket, Key=key)
                with contextlib.closing(resp["Body"]) as body:
                    sha = copy_capped(body, dest, limit, where)
            except (ClientError, BotoCoreError) as exc:
                raise DataError(f"{where}: cannot download: {redact_uri(str(exc))}") from None
            # The token of what was actually read (the object may change after listing).
            new_index[key] = {"token": f"{resp['ETag']}:{resp['ContentLength']}", "sha256": sha}
            return sha
        return run

    def known(key: str, token: str) -> Callable[[], str | None]:
        def run() -> str | None:
            old = old_index.get(key)
            if not isinstance(old, dict) or old.get("token") != token:
                return None
            new_index[key] = old
            return old.get("sha256")
        return run

    try:
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": S3_PAGE_SIZE})
        objects = [obj for page in pages for obj in page.get("Contents", [])]
    except (ClientError, BotoCoreError) as exc:
        raise DataError(f"{label}: cannot list: {redact_uri(str(exc))}") from None

    def entries() -> Iterator[Entry | Skipped]:
        for obj in sorted(objects, key=lambda o: o["Key"]):
            key = obj["Key"]
            if key.endswith("/"):
                continue  # folder marker
            rel = safe_rel(key[len(prefix):], f"s3://{bucket}/{key}")
            token = f"{obj['ETag']}:{obj['Size']}"
            yield Entry(rel, int(obj["Size"]), fetch(key), known(key, token))

    yield entries()
    atomic_write_json(index_path, new_index)
