"""Atomic writes and content hashes shared by every step.

A step either replaces its output completely or leaves the previous good one untouched:
files go through temp file + fsync + rename, whole output folders through a sibling temp
folder that is swapped in only when the step returns. A run killed outright (SIGKILL, OOM)
cannot clean up its temp folder, so each run first removes its step's stale ones: a temp folder
is locked (flock) for as long as its run lives, so an unlocked one is stale, and one a
concurrent live run is writing is left alone. A forked child inherits the lock, so a child that
outlived its killed run would keep the folder "live" forever: the folder's owner file
(`<folder>.owner`: host, pid, start time) names the run, and a folder whose owner on this host
is gone is stale whoever holds its lock.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import io
import json
import logging
import os
import re
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
CHUNK = 1 << 20


# What a path that is not a regular file is: reading one blocks (a FIFO), never ends (/dev/zero)
# or fails with a traceback (a folder); every reader of a named outside file checks first.
_FILE_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class NotRegularFile(ValueError):
    """The path exists but is not a regular file; `kind` says what it is ("a FIFO", ...)."""

    def __init__(self, path: str | Path, kind: str) -> None:
        super().__init__(f"{path}: not a regular file ({kind})")
        self.kind = kind


def regular_file_size(path: str | Path) -> int:
    """The size of `path` from one stat, or NotRegularFile; FileNotFoundError/OSError pass through."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _FILE_KINDS if test(st.st_mode)), "unknown type")
        raise NotRegularFile(path, kind)
    return st.st_size


def first_line(exc: BaseException) -> str:
    """An exception's first non-blank message line (at most 200 characters), else its type's name:
    library errors can be pages long, and a refusal is one line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:200] if lines else type(exc).__name__


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    text = "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows)
    return atomic_write_text(path, text)


def atomic_write_csv(path: str | Path, rows: Iterable[dict[str, Any]], columns: list[str]) -> Path:
    """A header + one line per row (DVC plots read CSV; values outside `columns` are dropped)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def read_csv(path: str | Path) -> list[dict[str, float]]:
    """Rows of a numeric CSV written by atomic_write_csv; empty cells become NaN."""
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    try:
        return [{k: float(v) if v != "" else float("nan") for k, v in r.items()} for r in rows]
    except ValueError as exc:
        raise ValueError(f"{path}: not a numeric CSV: {exc}") from None


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON: {exc}") from None
    return rows


def _try_lock(folder: Path) -> int | None:
    """An fd holding an exclusive flock on `folder`, or None when another open file holds it."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


OWNER_SUFFIX = ".owner"  # beside a temp folder: which process is writing it


def process_owner() -> dict[str, Any]:
    """This process as an owner record: host, pid and start time (a reused pid has another)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": process_started(os.getpid())}


def process_started(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, /proc/<pid>/stat), "unknown" where
    there is no /proc but the pid is in use, None when no such process is running."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "unknown"
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return None if fields[0] in ("Z", "X") else fields[19]  # zombie or dead: gone; field 22 = starttime


def owner_gone(owner: dict[str, Any]) -> bool:
    """Whether the process an owner record names has ended: known on its own host only."""
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return False
    started = process_started(owner["pid"])
    return started is None or started not in (owner.get("started"), "unknown")


def _owner_file(folder: Path) -> Path:
    return folder.with_name(folder.name + OWNER_SUFFIX)


def _owner_gone(folder: Path) -> bool:
    """Whether `folder`'s owner file names a process that has ended (no or bad file: not known)."""
    try:
        owner = json.loads(_owner_file(folder).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(owner, dict) and owner_gone(owner)


def remove_stale_temp_dirs(final: str | Path) -> list[Path]:
    """Remove the temp folders `atomic_dir(final)` left behind in runs that were killed: only
    folders named like its own (`.<name>.<8 random chars>.tmp`, beside `final`) that no live
    run holds locked or whose owner is gone (see the module doc), and their owner files.
    Returns the folders removed."""
    final = Path(final)
    pattern = re.compile(rf"\.{re.escape(final.name)}\.[A-Za-z0-9_]{{8}}\.tmp")
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in final.parent.iterdir():
            if entry.name.endswith(OWNER_SUFFIX) and pattern.fullmatch(entry.name[:-len(OWNER_SUFFIX)]):
                if not entry.with_name(entry.name[:-len(OWNER_SUFFIX)]).exists():  # its folder went
                    entry.unlink(missing_ok=True)
                continue
            if not pattern.fullmatch(entry.name) or entry.is_symlink() or not entry.is_dir():
                continue
            fd = _try_lock(entry)
            if fd is None and not _owner_gone(entry):
                continue
            try:
                shutil.rmtree(entry, ignore_errors=True)
                _owner_file(entry).unlink(missing_ok=True)
                removed.append(entry)
            finally:
                if fd is not None:
                    os.close(fd)
    return removed


@contextlib.contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield an empty temp folder beside `final`; on success it replaces `final` in one rename.

    On any exception the temp folder is removed and `final` keeps its previous content. Stale
    temp folders of `final` from killed runs are removed first (`remove_stale_temp_dirs`).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_temp_dirs(final):
        log.warning("removed %s, the temp folder of an earlier run that was killed", stale)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    lock = _try_lock(tmp)  # held until this run ends: released by the kernel if it is killed
    _owner_file(tmp).write_text(json.dumps(process_owner()))
    try:
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        old = None
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        _owner_file(tmp).unlink(missing_ok=True)
        if lock is not None:
            os.close(lock)
