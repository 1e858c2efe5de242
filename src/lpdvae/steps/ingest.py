"""ingest: copy song files from a source URI into `out_dir/files/` and write `manifest.jsonl`.

The new output is built in a sibling temp folder (`io.atomic_dir`) and swapped in at the end,
so a crash or a refused file leaves the previous ingest untouched. Files whose content did not
change are hard-linked from the previous output instead of rewritten: same inode, same mtime,
so DVC and downstream caches see them as unchanged. S3 objects whose ETag and size match the
last run are not even downloaded. Archives are checked member by member before a single byte
is extracted, and members are streamed out by hand (never `extractall`), so nothing in an
archive decides where a file lands.

Staging data that is not part of the output (demo renders, downloaded archives, the S3 ETag
index) lives in `<out_dir>.cache/`, beside the output and never inside it.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import logging
import os
import re
import shutil
import tarfile
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs, urlparse

from tqdm import tqdm

from lpdvae.errors import DataError
from lpdvae.io import (
    CHUNK,
    atomic_dir,
    atomic_write_json,
    atomic_write_jsonl,
    read_jsonl,
    sha256_file,
)
from lpdvae.music.song import song_format
from lpdvae.params import Params

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
MANIFEST = "manifest.jsonl"
FILES = "files"
S3_PAGE_SIZE = 1000  # keys per ListObjectsV2 page (the S3 maximum)
S3_MAX_ATTEMPTS = 5  # botocore "standard" retries: throttling, 5xx, connection errors
HTTP_RETRIES = 5  # urllib3 retries of connection errors and 429/5xx before the body starts
HTTP_BODY_ATTEMPTS = 3  # whole-download restarts when the connection drops mid-body
HTTP_BACKOFF_S = 0.5
ARCHIVE_READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile)


@dataclass(frozen=True)
class IngestResult:
    manifest: Path
    n_files: int
    n_bytes: int
    n_copied: int
    n_ignored: int


def _unknown() -> str | None:
    return None


@dataclass(frozen=True)
class Entry:
    """One file of a source.

    `fetch` writes the content to a path and returns its sha256 (hashed while streaming).
    `known_sha256` gives the digest without fetching when the source can (a local file, an S3
    object unchanged since the last run); it is trusted only when the previous output file
    hashes to the same value, and then that file is linked instead of fetched.
    """

    rel: str
    size: int
    fetch: Callable[[Path], str]
    known_sha256: Callable[[], str | None] = _unknown


# ---------------------------------------------------------------------------------- helpers


def safe_rel(name: str, where: str) -> str:
    """A member/key name as a relative POSIX path, or DataError: absolute paths and `..` could
    write outside `files/`."""
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"[A-Za-z]:(/|$)", norm):
        raise DataError(f"{where}: {name!r}: absolute path refused")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DataError(f"{where}: {name!r}: path traversal ('..') refused")
    if not parts:
        raise DataError(f"{where}: {name!r}: empty path refused")
    return "/".join(parts)


def copy_capped(src: IO[bytes], dest: Path, limit: int, where: str) -> str:
    """Stream src to dest, refusing more than `limit` bytes (declared sizes can lie); returns
    the sha256 of what was written, so nothing is read twice."""
    n = 0
    digest = hashlib.sha256()
    with open(dest, "wb") as out:
        for block in iter(lambda: src.read(CHUNK), b""):
            n += len(block)
            if n > limit:
                raise DataError(f"{where}: larger than data.max_file_bytes={limit}")
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


def _link_or_copy(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def cache_dir(out_dir: Path) -> Path:
    """Sibling of out_dir for staging (demo renders, downloads, S3 index); never a DVC output."""
    return out_dir.with_name(f"{out_dir.name}.cache")


# ---------------------------------------------------------------------------------- sources


def local_entries(root: Path, limit: int, files: list[Path] | None = None) -> Iterator[Entry]:
    """Files under root (or just `files`, all under root), sorted by relative path."""
    if not root.is_dir():
        raise DataError(f"{root}: source folder does not exist")
    paths = files if files is not None else [p for p in root.rglob("*") if p.is_file()]
    for path in sorted(paths, key=lambda p: p.relative_to(root).as_posix()):
        rel = path.relative_to(root).as_posix()

        def fetch(dest: Path, p: Path = path) -> str:
            with open(p, "rb") as src:
                return copy_capped(src, dest, limit, str(p))

        yield Entry(rel, path.stat().st_size, fetch, lambda p=path: sha256_file(p))


def _refuse_overlap(root: Path, out_dir: Path) -> None:
    """Ingesting a folder into itself would list its own output (or the temp folder)."""
    src, out = root.resolve(), out_dir.resolve()
    if src == out or src in out.parents or out in src.parents:
        raise DataError(f"{root}: source folder and output folder {out_dir} overlap")


@contextlib.contextmanager
def demo_entries(uri: str, out_dir: Path, params: Params) -> Iterator[Iterator[Entry]]:
    from lpdvae.demo import render_demo_corpus

    parsed = urlparse(uri)
    if parsed.netloc != "bach-chorales":
        raise DataError(f"{uri}: unknown demo corpus (only demo://bach-chorales?songs=N)")
    try:
        songs = int(parse_qs(parsed.query).get("songs", ["120"])[0])
    except ValueError:
        raise DataError(f"{uri}: songs must be an integer") from None
    if songs < 1:
        raise DataError(f"{uri}: songs must be >= 1")
    # One staging folder for every N: the selection is the first N in a fixed order, so a
    # smaller corpus is a prefix of a larger one and reuses its renders.
    staging = cache_dir(out_dir) / "demo-bach-chorales"
    files = render_demo_corpus(staging, songs)
    yield local_entries(staging, params.data.max_file_bytes, files)


def s3_client():
    """boto3 S3 client: endpoint/region/credentials from the environment (AWS_ENDPOINT_URL for
    MinIO or moto), transient errors retried with exponential backoff by botocore."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None,
        config=Config(retries={"max_attempts": S3_MAX_ATTEMPTS, "mode": "standard"}),
    )


def _load_index(path: Path) -> dict[str, dict[str, str]]:
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return index if isinstance(index, dict) else {}


@contextlib.contextmanager
def s3_entries(uri: str, out_dir: Path, params: Params) -> Iterator[Iterator[Entry]]:
    """Objects under an S3 prefix. A per-source index {key: {etag:size token, sha256}} from the
    last successful run lets unchanged objects skip the download; it is rewritten only after
    the output was swapped in, so a stale index costs downloads, never a wrong file."""
    from botocore.exceptions import BotoCoreError, ClientError

    parsed = urlparse(uri)
    bucket, prefix = parsed.netloc, parsed.path.lstrip("/")
    if not bucket:
        raise DataError(f"{uri}: no bucket (expected s3://bucket/prefix)")
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
                raise DataError(f"{where}: cannot download: {exc}") from None
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
        raise DataError(f"{uri}: cannot list: {exc}") from None

    def entries() -> Iterator[Entry]:
        for obj in sorted(objects, key=lambda o: o["Key"]):
            key = obj["Key"]
            if key.endswith("/"):
                continue  # folder marker
            rel = safe_rel(key[len(prefix):], f"s3://{bucket}/{key}")
            token = f"{obj['ETag']}:{obj['Size']}"
            yield Entry(rel, int(obj["Size"]), fetch(key), known(key, token))

    yield entries()
    atomic_write_json(index_path, new_index)


def http_session():
    """requests session retrying connection errors and 429/5xx with backoff."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    retry = Retry(total=HTTP_RETRIES, backoff_factor=HTTP_BACKOFF_S,
                  status_forcelist=(429, 500, 502, 503, 504), allowed_methods=("GET", "HEAD"))
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    return session


class _BodyInterrupted(Exception):
    """The connection dropped after the response started: worth restarting the download."""


def _download_once(session: Any, uri: str, dest: Path) -> str:
    import requests

    with open(dest, "wb") as out, session.get(uri, stream=True, timeout=60) as resp:
        resp.raise_for_status()
        total = int(resp.headers.get("content-length") or 0) or None
        digest = hashlib.sha256()
        with tqdm(total=total, unit="B", unit_scale=True, desc="download") as bar:
            try:
                for block in resp.iter_content(CHUNK):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
            except (requests.exceptions.ChunkedEncodingError, requests.ConnectionError) as exc:
                raise _BodyInterrupted(str(exc)) from exc
    return digest.hexdigest()


def download(uri: str, expected_sha256: str, cache: Path) -> Path:
    """The archive at `uri`, verified against `expected_sha256`; cached by hash for reruns."""
    import requests

    expected = expected_sha256.strip().lower()
    suffix = next(s for s in ARCHIVE_SUFFIXES if urlparse(uri).path.lower().endswith(s))
    final = cache / f"{expected}{suffix}"
    if final.exists() and sha256_file(final) == expected:
        log.info("using cached %s for %s", final, uri)
        return final
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".download.", suffix=".part", dir=cache)
    os.close(fd)
    tmp = Path(tmp_name)
    session = http_session()
    try:
        for attempt in range(1, HTTP_BODY_ATTEMPTS + 1):
            try:
                actual = _download_once(session, uri, tmp)
                break
            except _BodyInterrupted as exc:
                if attempt == HTTP_BODY_ATTEMPTS:
                    raise DataError(f"{uri}: download failed after {attempt} attempts: {exc}") from None
                log.warning("%s: connection dropped (%s); retry %d/%d", uri, exc, attempt,
                            HTTP_BODY_ATTEMPTS - 1)
                time.sleep(HTTP_BACKOFF_S * 2 ** (attempt - 1))
        if actual != expected:
            raise DataError(f"{uri}: sha256 mismatch: expected {expected} (data.sha256), got {actual}")
        os.replace(tmp, final)
    except requests.RequestException as exc:
        raise DataError(f"{uri}: download failed: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    for stale in cache.iterdir():  # archives of earlier data.sha256 values: can be GBs each
        if stale != final and stale.name.endswith(ARCHIVE_SUFFIXES):
            stale.unlink(missing_ok=True)
    return final


def check_members(archive: str, members: list[tuple[str, str, int]], params: Params) -> list[str]:
    """Refuse the whole archive on the first unsafe member; returns the safe relative names.

    `members` are (name, kind, size) with kind in file/dir/symlink/hardlink/device. Every link
    is refused (simplest rule that cannot be tricked); the size caps use declared sizes here
    and are enforced again while streaming.
    """
    d = params.data
    if len(members) > d.max_archive_members:
        raise DataError(f"{archive}: more than data.max_archive_members={d.max_archive_members} members")
    total = 0
    rels = []
    for name, kind, size in members:
        where = f"{archive}: member {name!r}"
        rel = safe_rel(name, archive)
        if kind in ("symlink", "hardlink", "device"):
            raise DataError(f"{where}: {kind} members are refused")
        if kind == "dir":
            continue
        if kind != "file":
            raise DataError(f"{where}: unsupported member type {kind}")
        if size > d.max_file_bytes and song_format(rel) is not None:
            raise DataError(f"{where}: {size} bytes is larger than data.max_file_bytes={d.max_file_bytes}")
        total += size
        if total > d.max_archive_bytes:
            raise DataError(f"{archive}: unpacked size is larger than data.max_archive_bytes={d.max_archive_bytes}")
        rels.append(rel)
    if len(set(rels)) != len(rels):
        dup = next(r for r in rels if rels.count(r) > 1)
        raise DataError(f"{archive}: member {dup!r} appears twice")
    return rels


def _tar_kind(m: tarfile.TarInfo) -> str:
    if m.issym():
        return "symlink"
    if m.islnk():
        return "hardlink"
    if m.ischr() or m.isblk() or m.isfifo():
        return "device"
    if m.isdir():
        return "dir"
    return "file" if m.isreg() else f"type {m.type!r}"


def _zip_kind(info: zipfile.ZipInfo) -> str:
    mode = (info.external_attr >> 16) & 0o170000
    if mode == 0o120000:
        return "symlink"
    if mode in (0o020000, 0o060000, 0o010000):
        return "device"
    return "dir" if info.is_dir() else "file"


@contextlib.contextmanager
def archive_entries(path: Path, label: str, params: Params) -> Iterator[Iterator[Entry]]:
    """Entries streamed out of a checked tar/zip archive, in archive order (for a .tar.gz that
    is one rewind after the header scan, then forward reads only)."""
    limit = params.data.max_file_bytes
    with contextlib.ExitStack() as stack:
        try:
            if path.name.lower().endswith(".zip"):
                zf = stack.enter_context(zipfile.ZipFile(path))
                infos = zf.infolist()
                rels = check_members(label, [(i.filename, _zip_kind(i), i.file_size) for i in infos], params)
                files = [i for i in infos if not i.is_dir()]
                entries = _member_entries(label, rels, files, zf.open, lambda i: i.file_size, limit)
            else:
                tf = stack.enter_context(tarfile.open(path, "r:*"))
                members = []
                for m in tf:  # stop early on a member bomb instead of loading every header
                    members.append(m)
                    if len(members) > params.data.max_archive_members:
                        break
                rels = check_members(label, [(m.name, _tar_kind(m), m.size) for m in members], params)
                files = [m for m in members if m.isreg()]
                entries = _member_entries(label, rels, files, tf.extractfile, lambda m: m.size, limit)
        except ARCHIVE_READ_ERRORS as exc:
            raise DataError(f"{label}: not a readable archive: {exc}") from None
        yield entries


def _member_entries(label: str, rels: list[str], members: list, opener: Callable[[Any], IO[bytes]],
                    size_of: Callable[[Any], int], limit: int) -> Iterator[Entry]:
    for rel, member in zip(rels, members, strict=True):
        def fetch(dest: Path, m: Any = member, r: str = rel) -> str:
            where = f"{label}: member {r!r}"
            try:
                with opener(m) as src:
                    return copy_capped(src, dest, limit, where)
            except ARCHIVE_READ_ERRORS as exc:  # corrupt data shows only when it is read
                raise DataError(f"{where}: cannot extract: {exc}") from None
        yield Entry(rel, int(size_of(member)), fetch)


@contextlib.contextmanager
def open_source(source: str, out_dir: Path, params: Params) -> Iterator[Iterator[Entry]]:
    """Dispatch on the URI scheme; the entries are valid inside the `with` block only."""
    scheme = urlparse(source).scheme.lower()
    if scheme == "demo":
        with demo_entries(source, out_dir, params) as entries:
            yield entries
    elif scheme == "s3":
        with s3_entries(source, out_dir, params) as entries:
            yield entries
    elif scheme in ("http", "https"):
        if not urlparse(source).path.lower().endswith(ARCHIVE_SUFFIXES):
            raise DataError(f"{source}: expected a .tar.gz, .tgz, .tar or .zip archive")
        if not params.data.sha256:
            raise DataError(f"{source}: data.sha256 is required for downloads (pin the archive)")
        archive = download(source, params.data.sha256, cache_dir(out_dir) / "downloads")
        with archive_entries(archive, source, params) as entries:
            yield entries
    elif scheme in ("", "file"):
        root = Path(urlparse(source).path if scheme == "file" else source)
        if root.is_file() and root.name.lower().endswith(ARCHIVE_SUFFIXES):
            with archive_entries(root, source, params) as entries:
                yield entries
        else:
            if root.is_dir():
                _refuse_overlap(root, out_dir)
            yield local_entries(root, params.data.max_file_bytes)
    else:
        raise DataError(f"{source}: unsupported source (demo://, a folder, s3://, http(s)://…tar.gz)")


# ---------------------------------------------------------------------------------- the step


def _previous_sha(old: Path, size: int) -> str | None:
    """sha256 of the previous output file, hashed (not trusted from the old manifest)."""
    if old.is_file() and old.stat().st_size == size:
        return sha256_file(old)
    return None


def place(entry: Entry, dest: Path, old: Path) -> tuple[str, bool]:
    """Put entry's content at dest; returns (sha256, copied). Unchanged files are linked."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    old_sha = _previous_sha(old, entry.size)
    if old_sha is not None and entry.known_sha256() == old_sha:
        _link_or_copy(old, dest)
        return old_sha, False
    sha = entry.fetch(dest)
    if sha == old_sha:  # same bytes under a new name/ETag: keep the old inode and mtime
        dest.unlink()
        _link_or_copy(old, dest)
        return sha, False
    return sha, True


def write_manifest(path: Path, rows: list[dict], old: Path) -> None:
    """Write the manifest, or link the previous one when identical so a no-op run touches nothing."""
    atomic_write_jsonl(path, rows)
    if old.is_file() and old.read_bytes() == path.read_bytes():
        path.unlink()
        _link_or_copy(old, path)


def ingest(source: str, out_dir: Path, params: Params) -> IngestResult:
    """Mirror the song files of `source` into out_dir (see docs/architecture.md, ingest)."""
    out_dir = Path(out_dir)
    limit = params.data.max_file_bytes
    rows: list[dict] = []
    n_copied = n_ignored = n_bytes = 0
    with open_source(source, out_dir, params) as entries, atomic_dir(out_dir) as tmp:
        tmp.chmod(0o755)  # mkdtemp's 0700 would make the swapped-in output private
        entries = list(entries)
        log.info("%s: %d files listed", source, len(entries))
        bar = tqdm(entries, total=len(entries), unit="file", desc="ingest")
        for entry in bar:
            fmt = song_format(entry.rel)
            if fmt is None:
                log.debug("ignored (not a song file): %s", entry.rel)
                n_ignored += 1
                continue
            if entry.size > limit:
                raise DataError(f"{source}: {entry.rel}: {entry.size} bytes is larger than "
                                f"data.max_file_bytes={limit}")
            rel = f"{FILES}/{entry.rel}"
            sha, copied = place(entry, tmp / rel, out_dir / rel)
            n_copied += copied
            size = (tmp / rel).stat().st_size
            n_bytes += size
            rows.append({"path": rel, "sha256": sha, "bytes": size, "source": source, "format": fmt})
            bar.set_postfix(copied=n_copied, ignored=n_ignored, size=tqdm.format_sizeof(n_bytes, "B", 1024))
        bar.close()
        if not rows:
            raise DataError(f"{source}: no song files (.mid, .midi, .npz) found")
        rows.sort(key=lambda r: r["path"])
        write_manifest(tmp / MANIFEST, rows, out_dir / MANIFEST)
    result = IngestResult(out_dir / MANIFEST, len(rows), n_bytes, n_copied, n_ignored)
    log.info("ingested %s: %d files (%d bytes), %d copied, %d ignored",
             source, result.n_files, result.n_bytes, result.n_copied, result.n_ignored)
    return result


def read_manifest(out_dir: Path) -> list[dict]:
    path = Path(out_dir) / MANIFEST
    if not path.exists():
        raise DataError(f"{path}: no manifest; run `lpdvae ingest` first")
    return read_jsonl(path)


def _cmd(args: argparse.Namespace, params: Params) -> int:
    source = args.source or params.data.source
    r = ingest(source, Path(args.out), params)
    print(f"ingest: {r.n_files} files ({r.n_bytes} bytes), {r.n_copied} copied, "
          f"{r.n_ignored} ignored -> {r.manifest}")
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest", help="copy song files from a source into data/raw + manifest",
                       description="Copy .mid/.midi/.npz files from demo://bach-chorales?songs=N, a folder, "
                       "s3://bucket/prefix or an http(s) archive (needs data.sha256) into OUT/files and "
                       "write OUT/manifest.jsonl. Unchanged files are not copied again.")
    p.add_argument("--source", default=None, help="source URI (default: params data.source)")
    p.add_argument("--out", default="data/raw", help="output folder (default: %(default)s)")
    p.set_defaults(func=_cmd)
