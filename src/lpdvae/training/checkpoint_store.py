"""Where checkpoint files live: a local folder, or an S3 prefix (the cluster's TrainJob nodes).

Both stores hold `step-XXXXXXXX.pt` objects and make a new one visible only when it is whole: a
folder by write-then-rename, S3 by a single upload (a PUT, or a multipart upload completed at
once). The S3 store also writes a small `latest` object holding the newest name, last: a
checkpoint newer than `latest` (a writer killed between the two) is not offered, so every rank of
a relaunched job finds the same newest complete checkpoint, even on a store whose listings lag.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from lpdvae.errors import LpdvaeError
from lpdvae.io import atomic_write_bytes

log = logging.getLogger(__name__)

CKPT_RE = re.compile(r"^step-(\d{8})\.pt$")
LATEST = "latest"


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}.pt"


class Store(Protocol):
    def names(self) -> list[str]: ...  # complete checkpoints, oldest first
    def size(self, name: str) -> int: ...
    def put(self, name: str, data: bytes) -> None: ...
    def fetch(self, name: str) -> contextlib.AbstractContextManager[Path]: ...
    def delete(self, name: str) -> None: ...
    def clear(self) -> None: ...


class LocalStore:
    """`step-XXXXXXXX.pt` files in a folder (`<out>.checkpoints/` by default)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __str__(self) -> str:
        return str(self.root)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if CKPT_RE.match(p.name))

    def size(self, name: str) -> int:
        return (self.root / name).stat().st_size

    def put(self, name: str, data: bytes) -> None:
        atomic_write_bytes(self.root / name, data)

    @contextlib.contextmanager
    def fetch(self, name: str) -> Iterator[Path]:
        yield self.root / name

    def delete(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)

    def clear(self) -> None:
        for name in self.names():
            self.delete(name)


class S3Store:
    """`step-XXXXXXXX.pt` objects and a `latest` pointer under `s3://bucket/prefix`, with the
    pipeline root's credentials (`LPDVAE_ARTIFACTS_*`, `lpdvae.host.s3auth`). Downloads go to a
    private temp file in `scratch` (disk, not memory: checkpoints can be large)."""

    def __init__(self, uri: str, scratch: Path, client: Any = None) -> None:
        self.uri = uri.rstrip("/")
        self.bucket, _, prefix = self.uri.removeprefix("s3://").partition("/")
        self.prefix = prefix.strip("/")
        self.scratch = Path(scratch)
        if not self.bucket:
            raise LpdvaeError(f"{uri}: a checkpoint location on S3 needs a bucket (s3://bucket/prefix)")
        self.s3 = client or _client()

    def __str__(self) -> str:
        return self.uri

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _listed(self) -> list[str]:
        with self._errors("list"):
            pages = self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key(""))
            keys = [o["Key"].rsplit("/", 1)[-1] for page in pages for o in page.get("Contents", [])]
        return sorted(k for k in keys if CKPT_RE.match(k))

    def latest(self) -> str | None:
        """The name `latest` points to; None when there is no (usable) pointer."""
        with self._errors("read the latest pointer of"):
            try:
                body = self.s3.get_object(Bucket=self.bucket, Key=self._key(LATEST), Range="bytes=0-63")
            except self.s3.exceptions.NoSuchKey:
                return None
            name = body["Body"].read(64).decode("utf-8", "replace").strip()
        if not CKPT_RE.match(name):
            log.warning("%s/%s: not a checkpoint name (%r); ignoring the pointer", self.uri, LATEST, name[:40])
            return None
        return name

    def names(self) -> list[str]:
        listed, latest = self._listed(), self.latest()
        return listed if latest is None else [n for n in listed if n <= latest]

    def size(self, name: str) -> int:
        with self._errors("read"):
            return int(self.s3.head_object(Bucket=self.bucket, Key=self._key(name))["ContentLength"])

    def put(self, name: str, data: bytes) -> None:
        with self._errors("write"):
            self.s3.upload_fileobj(io.BytesIO(data), self.bucket, self._key(name))
            self.s3.put_object(Bucket=self.bucket, Key=self._key(LATEST), Body=name.encode())

    @contextlib.contextmanager
    def fetch(self, name: str) -> Iterator[Path]:
        self.scratch.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".checkpoint-", suffix=".pt", dir=self.scratch)
        os.close(fd)
        try:
            with self._errors("read"):
                self.s3.download_file(self.bucket, self._key(name), tmp)
            yield Path(tmp)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def delete(self, name: str) -> None:
        with self._errors("prune"):
            self.s3.delete_object(Bucket=self.bucket, Key=self._key(name))

    def clear(self) -> None:
        for name in [*self._listed(), LATEST]:
            self.delete(name)

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """boto's errors as one line naming the location (the client already retried)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            err = exc.response.get("Error", {})
            raise LpdvaeError(f"{self.uri}: cannot {what} checkpoints: {err.get('Code')} "
                              f"{err.get('Message', '')}".rstrip()) from None
        except BotoCoreError as exc:
            raise LpdvaeError(f"{self.uri}: cannot {what} checkpoints: {exc}") from None


def _client() -> Any:
    from botocore.config import Config

    from lpdvae.host.s3auth import s3_client

    # a lost connection mid-run is retried, not a failed job
    return s3_client("artifacts", config=Config(retries={"mode": "standard", "max_attempts": 10}))


def open_store(where: str | Path, scratch: Path) -> Store:
    """`s3://bucket/prefix` -> S3Store, anything else a local folder."""
    if str(where).startswith("s3://"):
        return S3Store(str(where), scratch)
    if "://" in str(where):
        raise LpdvaeError(f"{where}: checkpoints go to a local folder or s3://bucket/prefix")
    return LocalStore(Path(where))
