"""A local folder as a source. Links are never followed: a symlink (to a file or a folder,
inside or outside the source) is skipped with a reason, and files are opened with O_NOFOLLOW
so one swapped for a link after listing is not read either."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from lpdvae.data.sources.base import LINK_REASON, Entry, Skipped, copy_capped
from lpdvae.errors import DataError
from lpdvae.io import sha256_file


def _walk(root: Path) -> Iterator[Path]:
    """Every file and every symlink under root, without descending into linked folders."""
    for folder, dirs, files in os.walk(root, followlinks=False):
        base = Path(folder)
        yield from (base / d for d in dirs if (base / d).is_symlink())
        yield from (base / f for f in files)


def _open_nofollow(path: Path):
    return os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)), "rb")


def local_entries(root: Path, limit: int, files: list[Path] | None = None) -> Iterator[Entry | Skipped]:
    """Files under root (or just `files`, all under root), sorted by relative path."""
    if not root.is_dir():
        raise DataError(f"{root}: source folder does not exist")
    paths = files if files is not None else list(_walk(root))
    for path in sorted(paths, key=lambda p: p.relative_to(root).as_posix()):
        rel = path.relative_to(root).as_posix()
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            yield Skipped(rel, LINK_REASON)
            continue
        if not stat.S_ISREG(st.st_mode):
            yield Skipped(rel, "not a regular file")
            continue

        def fetch(dest: Path, p: Path = path) -> str:
            try:
                src = _open_nofollow(p)
            except OSError as exc:  # ELOOP: replaced by a link since listing
                raise DataError(f"{p}: cannot read: {exc.strerror}") from None
            with src:
                return copy_capped(src, dest, limit, str(p))

        yield Entry(rel, st.st_size, fetch, lambda p=path: sha256_file(p), threadsafe=True)


def refuse_overlap(root: Path, out_dir: Path) -> None:
    """Ingesting a folder into itself would list its own output (or the temp folder)."""
    src, out = root.resolve(), out_dir.resolve()
    if src == out or src in out.parents or out in src.parents:
        raise DataError(f"{root}: source folder and output folder {out_dir} overlap")
