"""What every source yields, and the guards they share.

A source lists `Entry`s (files to place) and `Skipped`s (members refused one by one with a
reason, e.g. a symlink); anything that makes the whole source untrustworthy (path traversal,
size bombs) is a DataError instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from lpdvae.errors import DataError
from lpdvae.io import CHUNK

FORMATS = {".mid": "midi", ".midi": "midi", ".npz": "npz"}
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
NAME_MAX = 255  # bytes per path component on Linux file systems (ext4, xfs, btrfs, tmpfs)
LINK_REASON = "symbolic link: not followed (links could point outside the source)"
MANIFEST = "manifest.jsonl"  # the ingest output's file list (lpdvae.steps.ingest writes it)
FILES_PREFIX = "files/"  # where the songs lie in the output, as manifest paths spell it


def _unknown() -> str | None:
    return None


@dataclass(frozen=True)
class Entry:
    """One file of a source.

    `fetch` writes the content to a path and returns its sha256 (hashed while streaming).
    `known_sha256` gives the digest without fetching when the source can (a local file, an S3
    object unchanged since the last run); it is trusted only when the previous output file
    hashes to the same value, and then that file is linked instead of fetched.
    `token`, asked after `fetch` or a trusted `known_sha256`, is the source's version of what
    was placed (an S3 object's ETag:size as read), recorded in the manifest as `source_token`
    so the next run, even on another machine, can tell it unchanged (`previous_tokens`).
    `threadsafe`: entries may be fetched from several threads at once (not so for members of
    one archive stream).
    """

    rel: str
    size: int
    fetch: Callable[[Path], str]
    known_sha256: Callable[[], str | None] = _unknown
    token: Callable[[], str | None] = _unknown
    threadsafe: bool = False


@dataclass(frozen=True)
class Skipped:
    """A member not ingested, and why (listed in skipped.jsonl)."""

    rel: str
    reason: str


def ingest_format(rel: str) -> str | None:
    """"midi"/"npz" for the files ingest takes, None for those it ignores (other types, hidden
    files, and macOS `__MACOSX/._x.mid` resource forks, which carry a song suffix but are not
    songs). Name-based only; `music.song_format` is the loader's (content) view."""
    parts = PurePosixPath(rel).parts
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return None
    return FORMATS.get(PurePosixPath(rel).suffix.lower())


def printable(rel: str) -> str:
    """rel as valid UTF-8 text: undecodable bytes (surrogate-escaped) shown as \\xNN."""
    return rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def name_too_long(rel: str) -> str | None:
    """Why `rel` cannot be a file here (a component over NAME_MAX bytes: an archive or S3 key
    may hold one, open() would fail), or None."""
    sizes = [len(os.fsencode(part)) for part in rel.split("/")]
    if max(sizes, default=0) <= NAME_MAX:
        return None
    return f"a path component is {max(sizes)} bytes, longer than the file system allows (NAME_MAX {NAME_MAX})"


def safe_rel(name: str, where: str) -> str:
    """A member/key name as a relative POSIX path (`./` prefixes dropped), or DataError:
    absolute paths and `..` could write outside `files/`."""
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"[A-Za-z]:(/|$)", norm):
        raise DataError(f"{where}: {printable(name)!r}: absolute path refused")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DataError(f"{where}: {printable(name)!r}: path traversal ('..') refused")
    if not parts:
        raise DataError(f"{where}: {printable(name)!r}: empty path refused")
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


def cache_dir(out_dir: Path) -> Path:
    """Sibling of out_dir for staging (demo renders, downloads); never a DVC output, and lost
    with the pod on a cluster: what a rerun must find lives in the output (`previous_tokens`)."""
    return out_dir.with_name(f"{out_dir.name}.cache")


def previous_tokens(out_dir: Path, label: str) -> dict[str, tuple[str, str]]:
    """{rel: (source_token, sha256)} of the previous output's manifest rows from `label`; {} when
    there is none or it cannot be read (a lost or damaged record costs downloads, never a wrong
    file: a token is trusted only after the previous file hashes to its sha256)."""
    out: dict[str, tuple[str, str]] = {}
    try:
        with open(Path(out_dir) / MANIFEST, encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                token, sha, path = row.get("source_token"), row.get("sha256"), row.get("path")
                if row.get("source") == label and isinstance(token, str) and isinstance(sha, str) \
                        and isinstance(path, str) and path.startswith(FILES_PREFIX):
                    out[path[len(FILES_PREFIX):]] = (token, sha)
    except (OSError, ValueError, AttributeError):
        return {}
    return out
