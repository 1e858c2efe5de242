"""ingest: copy song files from a source URI into `out_dir/files/` and write `manifest.jsonl`.

The sources (demo, folder, S3, HTTP, archives) live in `lpdvae.data.sources`; this step places what
they list. The new output is built in a sibling temp folder (`io.atomic_dir`) and swapped in at
the end, so a crash or a refused file leaves the previous ingest untouched. Files whose content
did not change are hard-linked from the previous output instead of rewritten: same inode, same
mtime, so DVC and downstream caches see them as unchanged.

A member that cannot be placed safely (a symlink, a name that is not UTF-8 or longer than the
file system allows, a path that is both a file and a folder) is not copied: it is listed with its reason in `skipped.jsonl` and the
rest of the source is ingested. The source URI is recorded with its credentials redacted.
Staging data that is not part of the output lives in `<out_dir>.cache/`, beside it; what a rerun
needs to skip unchanged files (an S3 object's `source_token`) is in the manifest itself.

Files are placed by `data.ingest_concurrency` threads (S3 downloads wait on the network; an
archive's members, one stream, are read by one), at most twice that many in flight; the
manifest is written in path order whatever order they finish in.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from lpdvae.data.redact import redact_uri
from lpdvae.data.sources import Entry, Skipped, open_source
from lpdvae.data.sources.base import FILES_PREFIX, MANIFEST, ingest_format, name_too_long, printable
from lpdvae.errors import DataError
from lpdvae.io import atomic_dir, atomic_write_jsonl, sha256_file
from lpdvae.layout import CWD
from lpdvae.params import Params

log = logging.getLogger(__name__)

SKIPPED = "skipped.jsonl"
FILES = FILES_PREFIX.rstrip("/")


@dataclass(frozen=True)
class IngestResult:
    manifest: Path
    n_files: int
    n_bytes: int
    n_copied: int
    n_ignored: int
    n_skipped: int = 0


def _link_or_copy(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


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


def select(items: list[Entry | Skipped]) -> tuple[list[tuple[Entry, str]], list[Skipped], int]:
    """(entries to place with their format, skipped members, number ignored as not songs).

    Song files whose name is not valid UTF-8 are skipped (every later record is UTF-8), and so
    is a song under a path that another song occupies as a file (`x.npz` and `x.npz/y.npz`, in
    any order; the deeper one goes) or that differs only in case (it would clash on macOS)."""
    chosen: dict[str, tuple[Entry, str]] = {}
    skipped = [i for i in items if isinstance(i, Skipped)]
    n_ignored = 0
    for entry in (i for i in items if isinstance(i, Entry)):
        fmt = ingest_format(entry.rel)
        if fmt is None:
            log.debug("ignored (not a song file): %s", printable(entry.rel))
            n_ignored += 1
        elif printable(entry.rel) != entry.rel:
            skipped.append(Skipped(printable(entry.rel), "file name is not valid UTF-8"))
        elif too_long := name_too_long(entry.rel):
            skipped.append(Skipped(entry.rel, too_long))
        else:
            chosen[entry.rel] = (entry, fmt)
    folded: dict[str, str] = {}
    for rel in sorted(chosen, key=lambda r: (r.count("/"), r)):
        parent = next((str(p) for p in PurePosixPath(rel).parents if str(p) in chosen), None)
        if parent is not None:
            skipped.append(Skipped(rel, f"path is under {parent!r}, which is a file"))
        elif rel.lower() in folded:
            skipped.append(Skipped(rel, f"differs from {folded[rel.lower()]!r} only in case"))
        else:
            folded[rel.lower()] = rel
            continue
        del chosen[rel]
    skipped = sorted((Skipped(printable(s.rel), s.reason) for s in skipped), key=lambda s: s.rel)
    return [chosen[r] for r in sorted(chosen)], skipped, n_ignored


def placed(entries: list[tuple[Entry, str]], tmp: Path, out_dir: Path,
           workers: int) -> Iterator[tuple[Entry, str, str, bool]]:
    """(entry, format, sha256, copied) for each entry in order, `place`d by `workers` threads with
    at most 2 x workers in flight (bounded memory however long the list). On an error the
    fetches not yet started are cancelled and the running ones finish before it propagates, so
    nothing writes into the temp folder while atomic_dir removes it."""
    if not all(e.threadsafe for e, _ in entries):
        workers = 1
    pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="ingest")
    window: deque[tuple[Entry, str, Future]] = deque()
    try:
        for entry, fmt in entries:
            rel = f"{FILES}/{entry.rel}"
            window.append((entry, fmt, pool.submit(place, entry, tmp / rel, out_dir / rel)))
            if len(window) >= 2 * workers:
                entry, fmt, done = window.popleft()
                yield entry, fmt, *done.result()
        while window:
            entry, fmt, done = window.popleft()
            yield entry, fmt, *done.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def ingest(source: str, out_dir: Path, params: Params) -> IngestResult:
    """Mirror the song files of `source` into out_dir (see docs/architecture.md, ingest)."""
    out_dir = Path(out_dir)
    label = redact_uri(source)
    limit = params.data.max_file_bytes
    rows: list[dict] = []
    n_copied = n_bytes = 0
    with open_source(source, out_dir, params) as items, atomic_dir(out_dir) as tmp:
        tmp.chmod(0o755)  # mkdtemp's 0700 would make the swapped-in output private
        entries, skipped, n_ignored = select(list(items))
        log.info("%s: %d song files listed, %d ignored, %d skipped", label, len(entries), n_ignored, len(skipped))
        for s in skipped:
            log.warning("%s: skipped %r: %s", label, s.rel, s.reason)
        if big := next((e for e, _ in entries if e.size > limit), None):  # before any transfer
            raise DataError(f"{label}: {big.rel}: {big.size} bytes is larger than data.max_file_bytes={limit}")
        bar = tqdm(total=len(entries), unit="file", desc="ingest")
        with contextlib.closing(placed(entries, tmp, out_dir, params.data.ingest_concurrency)) as results:
            for entry, fmt, sha, copied in results:
                n_copied += copied
                rel = f"{FILES}/{entry.rel}"
                size = (tmp / rel).stat().st_size
                n_bytes += size
                rows.append(_row(rel, sha, size, label, fmt, entry.token()))
                bar.update()
                bar.set_postfix(copied=n_copied, ignored=n_ignored, size=tqdm.format_sizeof(n_bytes, "B", 1024),
                                refresh=False)  # redraw at tqdm's interval, not per file (a pod log of 174k lines)
        bar.close()
        if not rows:
            raise DataError(f"{label}: no song files (.mid, .midi, .npz) found"
                            + (f" ({len(skipped)} skipped: {skipped[0].reason}, ...)" if skipped else ""))
        write_manifest(tmp / MANIFEST, rows, out_dir / MANIFEST)
        write_manifest(tmp / SKIPPED, [{"path": s.rel, "reason": s.reason, "source": label} for s in skipped],
                       out_dir / SKIPPED)
    result = IngestResult(out_dir / MANIFEST, len(rows), n_bytes, n_copied, n_ignored, len(skipped))
    log.info("ingested %s: %d files (%d bytes), %d copied, %d ignored, %d skipped",
             label, result.n_files, result.n_bytes, result.n_copied, result.n_ignored, result.n_skipped)
    return result


def _row(rel: str, sha: str, size: int, label: str, fmt: str, token: str | None) -> dict:
    """A manifest row; `source_token` only where the source versions its files (S3), so other
    sources' manifests are as before."""
    row = {"path": rel, "sha256": sha, "bytes": size, "source": label, "format": fmt}
    return row if token is None else {**row, "source_token": token}


def _cmd(args: argparse.Namespace, params: Params) -> int:
    source = args.source or params.data.source
    r = ingest(source, Path(args.out), params)
    skipped = f", {r.n_skipped} skipped (see {r.manifest.parent / SKIPPED})" if r.n_skipped else ""
    print(f"ingest: {r.n_files} files ({r.n_bytes} bytes), {r.n_copied} copied, "
          f"{r.n_ignored} ignored{skipped} -> {r.manifest}")
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest", help="copy song files from a source into data/raw + manifest",
                       description="Copy .mid/.midi/.npz files from demo://bach-chorales?songs=N, a folder, "
                       "s3://bucket/prefix or an http(s) archive (needs data.sha256) into OUT/files and "
                       "write OUT/manifest.jsonl. Unchanged files are not copied again.")
    p.add_argument("--source", default=None, help="source URI (default: params data.source)")
    p.add_argument("--out", default=str(CWD.raw), help="output folder (default: %(default)s)")
    p.set_defaults(func=_cmd)
