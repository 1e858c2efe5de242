"""`s3://bucket/prefix`: objects under a prefix (boto3; `LPDVAE_DATA_AWS_*` or `AWS_*` settings,
AWS_ENDPOINT_URL for MinIO or moto).

Each manifest row of an object records its `source_token` (ETag:size of the object as it was
read); the next run reads them back from the previous output (`base.previous_tokens`), so an
object listed with the same token is not downloaded again when the previous file still hashes
to the recorded sha256. The record travels with the output (DVC tracks it), so a rerun on a
fresh pod starts warm; a stale or missing record costs downloads, never a wrong file. Objects
are fetched from several threads (`data.ingest_concurrency`); boto3's clients are thread-safe.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse

from lpdvae.data.redact import redact_uri
from lpdvae.data.sources.base import Entry, Skipped, copy_capped, previous_tokens, safe_rel
from lpdvae.errors import DataError
from lpdvae.params import Params

S3_PAGE_SIZE = 1000  # keys per ListObjectsV2 page (the S3 maximum)


def s3_client(connections: int = 10):
    """boto3 S3 client with the data source's credentials (`LPDVAE_DATA_AWS_*`, else boto3's
    defaults: `lpdvae.host.s3auth`), transient errors retried with exponential backoff by botocore,
    a connection per fetching thread (botocore keeps 10 by default and warns past them)."""
    from lpdvae.host.s3auth import retrying
    from lpdvae.host.s3auth import s3_client as purpose_client

    return purpose_client("data", retrying(connections=max(10, connections)))


@contextlib.contextmanager
def s3_entries(uri: str, out_dir: Path, params: Params) -> Iterator[Iterator[Entry | Skipped]]:
    """Entries of the objects under the prefix, tokens of the previous output trusted (see the
    module doc)."""
    from botocore.exceptions import BotoCoreError, ClientError

    label = redact_uri(uri)
    parsed = urlparse(uri)
    bucket, prefix = parsed.hostname or "", parsed.path.lstrip("/")
    if not bucket:
        raise DataError(f"{label}: no bucket (expected s3://bucket/prefix)")
    if prefix and not prefix.endswith("/"):
        prefix += "/"  # s3://b/songs must not match s3://b/songs2/...
    client = s3_client(params.data.ingest_concurrency)
    limit = params.data.max_file_bytes
    old = previous_tokens(out_dir, label)
    placed: dict[str, str] = {}  # key -> token of what this run placed (one thread per key)

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
            placed[key] = f"{resp['ETag']}:{resp['ContentLength']}"
            return sha
        return run

    def known(key: str, rel: str, token: str) -> Callable[[], str | None]:
        def run() -> str | None:
            if old.get(rel, ("", ""))[0] != token:
                return None
            placed[key] = token
            return old[rel][1]
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
            yield Entry(rel, int(obj["Size"]), fetch(key), known(key, rel, token),
                        lambda key=key: placed.get(key), threadsafe=True)

    yield entries()
