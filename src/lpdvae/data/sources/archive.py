"""Tar and zip archives, checked member by member before a single byte is extracted.

Members are streamed out by hand (never `extractall`), so nothing in an archive decides where a
file lands. What makes the whole archive untrustworthy is refused (absolute or `..` paths,
too many members, too many bytes, more than `data.max_archive_ratio` times the archive's own
size, an oversized song, a name twice); a link or device member is
skipped with a reason; folder members (`.` and `./x/` from `tar -C dir .` included) are not
needed and ignored.
"""

from __future__ import annotations

import contextlib
import gzip
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from lpdvae.data.sources.base import Entry, Skipped, copy_capped, ingest_format, printable, safe_rel
from lpdvae.errors import DataError
from lpdvae.params import Params

ARCHIVE_READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile)
SKIP_REASONS = {"symlink": "symbolic link member: not followed", "hardlink": "hard link member: not followed",
                "device": "device or FIFO member: not a file"}


def check_members(archive: str, members: list[tuple[str, str, int]], params: Params,
                  archive_bytes: int) -> tuple[list[int], list[Skipped]]:
    """Indexes of the members to extract and the members skipped, or DataError for the whole
    archive. `members` are (name, kind, size), kind in file/dir/symlink/hardlink/device/other;
    the size caps use declared sizes here and are enforced again while streaming (zipfile and
    tarfile read no more than a member declares, so the ratio cap holds too)."""
    d = params.data
    if len(members) > d.max_archive_members:
        raise DataError(f"{archive}: more than data.max_archive_members={d.max_archive_members} members")
    total = 0
    keep: list[int] = []
    skipped: list[Skipped] = []
    seen: set[str] = set()
    for i, (name, kind, size) in enumerate(members):
        if kind == "dir":
            continue
        rel = safe_rel(name, archive)
        if kind != "file":
            skipped.append(Skipped(rel, SKIP_REASONS.get(kind, f"unsupported member type {kind}")))
            continue
        if rel in seen:
            raise DataError(f"{archive}: member {printable(rel)!r} appears twice")
        seen.add(rel)
        if size > d.max_file_bytes and ingest_format(rel) is not None:
            raise DataError(f"{archive}: member {printable(name)!r}: {size} bytes is larger than "
                            f"data.max_file_bytes={d.max_file_bytes}")
        total += size
        if total > d.max_archive_bytes:
            raise DataError(f"{archive}: unpacked size is larger than data.max_archive_bytes={d.max_archive_bytes}")
        keep.append(i)
    ratio = total / max(archive_bytes, 1)
    if ratio > d.max_archive_ratio:
        raise DataError(f"{archive}: unpacks to {total} bytes, {ratio:.0f}x its {archive_bytes} bytes "
                        f"(limit data.max_archive_ratio={d.max_archive_ratio:g}): a compression bomb?")
    return keep, skipped


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
def archive_entries(path: Path, label: str, params: Params) -> Iterator[Iterator[Entry | Skipped]]:
    """Entries streamed out of a checked tar/zip archive, in archive order (for a .tar.gz that
    is one rewind after the header scan, then forward reads only)."""
    limit = params.data.max_file_bytes
    with contextlib.ExitStack() as stack:
        try:
            if path.name.lower().endswith(".zip"):
                zf = stack.enter_context(zipfile.ZipFile(path))
                members: list[Any] = zf.infolist()
                listed = [(i.filename, _zip_kind(i), i.file_size) for i in members]
                opener: Callable[[Any], IO[bytes]] = zf.open
            else:
                tf = stack.enter_context(tarfile.open(path, "r:*"))
                members = []
                for m in tf:  # stop early on a member bomb instead of loading every header
                    members.append(m)
                    if len(members) > params.data.max_archive_members:
                        break
                listed = [(m.name, _tar_kind(m), m.size) for m in members]
                opener = tf.extractfile
        except ARCHIVE_READ_ERRORS as exc:
            raise DataError(f"{label}: not a readable archive: {exc}") from None
        keep, skipped = check_members(label, listed, params, path.stat().st_size)
        files = [(safe_rel(listed[i][0], label), members[i], listed[i][2]) for i in keep]
        yield _member_entries(label, files, skipped, opener, limit)


def _member_entries(label: str, files: list[tuple[str, Any, int]], skipped: list[Skipped],
                    opener: Callable[[Any], IO[bytes]], limit: int) -> Iterator[Entry | Skipped]:
    yield from skipped
    for rel, member, size in files:
        def fetch(dest: Path, m: Any = member, r: str = rel) -> str:
            where = f"{label}: member {printable(r)!r}"
            try:
                with opener(m) as src:
                    return copy_capped(src, dest, limit, where)
            except ARCHIVE_READ_ERRORS as exc:  # corrupt data shows only when it is read
                raise DataError(f"{where}: cannot extract: {exc}") from None
        yield Entry(rel, int(size), fetch)
