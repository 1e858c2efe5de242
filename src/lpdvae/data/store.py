"""Part of a stored folder, read where it lies: an object-store prefix (`s3://`, or `minio://` as
KFP names MinIO artifacts) or a local folder (kfp.local, the tests).

A fanned-out data task gets the location of ingest's output, not the output itself (KFP would
download every file of an input artifact into every pod): `fetch_songs` pulls only the manifest
rows it is given, each checked against its manifest sha256, into a folder laid out like ingest's
(`files/...` + `manifest.jsonl` of those rows), which the steps read unchanged. `dvc_dir_hash` gives
DVC's hash of the whole folder from the listing's ETags (an object's md5 when it was uploaded in
one part), so register records the raw data's version without downloading a song.

S3 credentials are the pipeline root's (`LPDVAE_ARTIFACTS_*`, `lpdvae.host.s3auth`) unless the
caller names another purpose. Memory per file is one 1 MiB block per fetching thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from lpdvae.data.redact import redact_uri
from lpdvae.data.sources.base import MANIFEST, copy_capped, safe_rel
from lpdvae.errors import DataError
from lpdvae.io import CHUNK, atomic_dir, atomic_write_jsonl

SCHEMES = ("s3://", "minio://")
FETCH_THREADS = 8  # GETs in flight per task: latency-bound, each holds one CHUNK
MANIFEST_MAX_BYTES = 1 << 30  # a manifest row is ~200 bytes: millions of songs fit
_PLAIN_MD5 = re.compile(r"[0-9a-f]{32}")  # a single-part upload's ETag; multipart ones end in -N


@dataclass(frozen=True)
class Location:
    """Where a stored folder lies: a bucket and key prefix ("" or ending in "/"), or a folder."""

    uri: str
    bucket: str = ""
    prefix: str = ""

    @property
    def remote(self) -> bool:
        return bool(self.bucket)

    @property
    def label(self) -> str:
        return redact_uri(self.uri)

    def key(self, rel: str) -> str:
        return self.prefix + safe_rel(rel, self.label)

    def local(self, rel: str) -> Path:
        return Path(self.uri) / safe_rel(rel, self.label)


def locate(uri: str) -> Location:
    """The Location of an artifact URI or folder path; other schemes (gs://, http) refused."""
    uri = str(uri)
    for scheme in SCHEMES:
        if uri.startswith(scheme):
            bucket, _, prefix = uri[len(scheme):].partition("/")
            if not bucket:
                raise DataError(f"{redact_uri(uri)}: no bucket (expected {scheme}bucket/prefix)")
            prefix = prefix.strip("/")
            return Location(uri, bucket, prefix + "/" if prefix else "")
    if "://" in uri:
        raise DataError(f"{redact_uri(uri)}: not an s3:// or minio:// prefix or a folder: "
                        "the pipeline root must be S3 or MinIO")
    return Location(uri)


def s3_client(purpose: str) -> Any:
    """boto3 client with `purpose`'s credentials, transient errors retried by botocore."""
    from lpdvae.host.s3auth import retrying
    from lpdvae.host.s3auth import s3_client as purpose_client

    return purpose_client(purpose, retrying())


@contextlib.contextmanager
def _opened(loc: Location, rel: str, client: Any):
    """A readable stream of `rel` under `loc`; a missing or unreadable object is one DataError line."""
    if not loc.remote:
        try:
            with open(loc.local(rel), "rb") as fh:
                yield fh
        except OSError as exc:
            raise DataError(f"{loc.label}/{rel}: cannot read: {exc.strerror}") from None
        return
    from botocore.exceptions import BotoCoreError, ClientError

    where = f"{loc.label}/{rel}"
    try:
        body = client.get_object(Bucket=loc.bucket, Key=loc.key(rel))["Body"]
    except (ClientError, BotoCoreError) as exc:
        raise DataError(f"{where}: cannot download: {redact_uri(str(exc))}") from None
    with contextlib.closing(body):
        yield body


def fetch_file(loc: Location, rel: str, dest: Path, limit: int, client: Any = None) -> str:
    """`rel` under `loc` written to `dest` (at most `limit` bytes); returns its sha256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _opened(loc, rel, client) as src:
        return copy_capped(src, dest, limit, f"{loc.label}/{rel}")


def fetch_songs(loc: Location, rows: Sequence[dict[str, Any]], dest: Path, limit: int,
                purpose: str = "artifacts") -> int:
    """The files of these manifest rows (only these) into `dest/<path>`, each checked against its
    row's sha256, and `dest/manifest.jsonl` of the rows: an ingest folder of just these songs.
    `dest` is replaced atomically; returns the number of files fetched."""
    client = s3_client(purpose) if loc.remote else None
    with atomic_dir(Path(dest)) as tmp:
        with ThreadPoolExecutor(FETCH_THREADS) as pool:
            futures = [pool.submit(_fetch_checked, loc, row, tmp, limit, client) for row in rows]
            try:
                for future in futures:
                    future.result()
            except BaseException:  # the first failure ends the fetch: the rest are not started
                pool.shutdown(cancel_futures=True)
                raise
        atomic_write_jsonl(tmp / MANIFEST, rows)
    return len(rows)


def _fetch_checked(loc: Location, row: dict[str, Any], folder: Path, limit: int, client: Any) -> None:
    rel = safe_rel(row["path"], loc.label)  # before any folder is made: nothing lands outside `folder`
    sha = fetch_file(loc, rel, folder / rel, limit, client)
    if sha != row["sha256"]:
        raise DataError(f"{loc.label}/{row['path']}: sha256 {sha[:12]}… is not the manifest's "
                        f"{str(row['sha256'])[:12]}… (the stored data changed after ingest)")


def fetch_one(loc: Location, rel: str, dest: Path, limit: int = MANIFEST_MAX_BYTES,
              purpose: str = "artifacts") -> Path:
    """One file of `loc` (a manifest, `accepted.jsonl`) copied to `dest` (one GET); returns `dest`."""
    fetch_file(loc, rel, Path(dest), limit, s3_client(purpose) if loc.remote else None)
    return Path(dest)


def listing(loc: Location, purpose: str = "artifacts") -> list[tuple[str, str, int]]:
    """(relative path, ETag without quotes, size) of every object under a remote `loc`."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = s3_client(purpose)
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=loc.prefix)
        objects = [o for page in pages for o in page.get("Contents", [])]
    except (ClientError, BotoCoreError) as exc:
        raise DataError(f"{loc.label}: cannot list: {redact_uri(str(exc))}") from None
    if not objects:
        raise DataError(f"{loc.label}: no objects under this prefix")
    return sorted((o["Key"][len(loc.prefix):], str(o["ETag"]).strip('"'), int(o["Size"]))
                  for o in objects if not o["Key"].endswith("/"))


def _md5(src: IO[bytes]) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    for block in iter(lambda: src.read(CHUNK), b""):
        digest.update(block)
    return digest.hexdigest()


def dvc_dir_hash(loc: Location, purpose: str = "artifacts") -> str:
    """DVC's `<md5>.dir` of the folder stored under `loc`, as `lineage.dvc_hash` gives for a local
    copy: each object's md5 is its ETag when that is one (a single-part upload without KMS);
    only objects whose ETag is not (multipart, encrypted) are read to hash them."""
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.meta import Meta
    from dvc_data.hashfile.tree import Tree

    client = s3_client(purpose)
    tree = Tree()
    for rel, etag, size in listing(loc, purpose):
        if not _PLAIN_MD5.fullmatch(etag):
            with _opened(loc, rel, client) as body:
                etag = _md5(body)
        tree.add(tuple(rel.split("/")), Meta(size=size), HashInfo("md5", etag))
    tree.digest()
    return tree.hash_info.value

