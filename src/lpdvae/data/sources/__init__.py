"""Where songs come from: one module per kind of `data.source`, one dispatcher here.

demo:// (demo.py), a local folder (folder.py), s3:// (s3.py), http(s):// archives (http.py),
tar/zip safety (archive.py); the shared Entry/Skipped types and guards in base.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from lpdvae.data.redact import redact_uri
from lpdvae.data.sources.base import ARCHIVE_SUFFIXES, Entry, Skipped, cache_dir
from lpdvae.errors import DataError
from lpdvae.params import Params


@contextlib.contextmanager
def open_source(source: str, out_dir: Path, params: Params) -> Iterator[Iterator[Entry | Skipped]]:
    """Dispatch on the URI scheme; the entries are valid inside the `with` block only."""
    from lpdvae.data.sources.archive import archive_entries

    label = redact_uri(source)
    scheme = urlparse(source).scheme.lower()
    if scheme == "demo":
        from lpdvae.data.sources.demo import demo_entries

        yield demo_entries(source, out_dir, params)
    elif scheme == "s3":
        from lpdvae.data.sources.s3 import s3_entries

        with s3_entries(source, out_dir, params) as entries:
            yield entries
    elif scheme in ("http", "https"):
        from lpdvae.data.sources.http import download

        if not urlparse(source).path.lower().endswith(ARCHIVE_SUFFIXES):
            raise DataError(f"{label}: expected a .tar.gz, .tgz, .tar or .zip archive")
        if not params.data.sha256:
            raise DataError(f"{label}: data.sha256 is required for downloads (pin the archive)")
        archive = download(source, params.data.sha256, cache_dir(out_dir) / "downloads")
        with archive_entries(archive, label, params) as entries:
            yield entries
    elif scheme in ("", "file"):
        from lpdvae.data.sources.folder import local_entries, refuse_overlap

        root = Path(urlparse(source).path if scheme == "file" else source)
        if root.is_file() and root.name.lower().endswith(ARCHIVE_SUFFIXES):
            with archive_entries(root, label, params) as entries:
                yield entries
        else:
            if root.is_dir():
                refuse_overlap(root, out_dir)
            yield local_entries(root, params.data.max_file_bytes)
    else:
        raise DataError(f"{label}: unsupported source (demo://, a folder, s3://, http(s)://…tar.gz)")


__all__ = ["Entry", "Skipped", "open_source"]
