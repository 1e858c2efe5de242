"""`http(s)://…tar.gz|.zip`: one archive, pinned by `data.sha256`, downloaded with retries and
cached by hash beside the output; its members then come from `sources.archive`."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tqdm import tqdm

from lpdvae.data.redact import redact_uri
from lpdvae.data.sources.base import ARCHIVE_SUFFIXES
from lpdvae.errors import DataError
from lpdvae.io import CHUNK, sha256_file

log = logging.getLogger(__name__)

HTTP_RETRIES = 5  # urllib3 retries of connection errors and 429/5xx before the body starts
HTTP_BODY_ATTEMPTS = 3  # whole-download restarts when the connection drops mid-body
HTTP_BACKOFF_S = 0.5


class _RedactFilter(logging.Filter):
    """urllib3 logs each request line (query string included) at DEBUG: mask credentials."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact_uri(record.getMessage()), ()
        return True


def http_session():
    """requests session retrying connection errors and 429/5xx with backoff."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    retry = Retry(total=HTTP_RETRIES, backoff_factor=HTTP_BACKOFF_S,
                  status_forcelist=(429, 500, 502, 503, 504), allowed_methods=("GET", "HEAD"))
    pool_log = logging.getLogger("urllib3.connectionpool")
    if not any(isinstance(f, _RedactFilter) for f in pool_log.filters):
        pool_log.addFilter(_RedactFilter())
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

    label = redact_uri(uri)
    expected = expected_sha256.strip().lower()
    suffix = next(s for s in ARCHIVE_SUFFIXES if urlparse(uri).path.lower().endswith(s))
    final = cache / f"{expected}{suffix}"
    if final.exists() and sha256_file(final) == expected:
        log.info("using cached %s for %s", final, label)
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
                reason = redact_uri(str(exc))
                if attempt == HTTP_BODY_ATTEMPTS:
                    raise DataError(f"{label}: download failed after {attempt} attempts: {reason}") from None
                log.warning("%s: connection dropped (%s); retry %d/%d", label, reason, attempt,
                            HTTP_BODY_ATTEMPTS - 1)
                time.sleep(HTTP_BACKOFF_S * 2 ** (attempt - 1))
        if actual != expected:
            raise DataError(f"{label}: sha256 mismatch: expected {expected} (data.sha256), got {actual}")
        os.replace(tmp, final)
    except requests.RequestException as exc:
        raise DataError(f"{label}: download failed: {redact_uri(str(exc))}") from None
    finally:
        tmp.unlink(missing_ok=True)
    for stale in cache.iterdir():  # archives of earlier data.sha256 values: can be GBs each
        if stale != final and stale.name.endswith(ARCHIVE_SUFFIXES):
            stale.unlink(missing_ok=True)
    return final
