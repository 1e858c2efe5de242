"""A loaded song, the error a song that cannot be used raises, and which files are songs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from lpdvae.errors import DataError

if TYPE_CHECKING:
    import numpy as np
    import pypianoroll

FORMATS = {".mid": "midi", ".midi": "midi", ".npz": "npz"}


class SongError(DataError):
    """A song that cannot be used: `reason` is a short code (the quarantine reason), `detail`
    says why in words."""

    def __init__(self, path: str | Path, reason: str, detail: str) -> None:
        super().__init__(f"{path}: {detail} [{reason}]")
        self.path = str(path)
        self.reason = reason
        self.detail = detail


def song_format(rel: str | Path) -> str | None:
    """"midi"/"npz" from the file name, or None for files that are not songs (other types,
    hidden files, and macOS `__MACOSX/._x.mid` resource forks, which carry a song suffix)."""
    path = PurePosixPath(Path(rel).as_posix())
    if any(p.startswith(".") or p == "__MACOSX" for p in path.parts):
        return None
    return FORMATS.get(path.suffix.lower())


@dataclass
class Song:
    """A loaded song at its source resolution, with what the file said about its meter."""

    path: Path
    format: str
    multitrack: pypianoroll.Multitrack
    time_signatures: tuple[str, ...]  # distinct "n/d" in order of appearance; () when unknown
    time_signature_source: str  # "midi" | "midi-default" | "downbeat" | "none"
    parser: str
    min_velocity: float
    max_velocity: float
    # per source track, int [n, 2] (step at the multitrack's resolution, pitch) of note starts;
    # None (LPD .npz, which stores no onsets): an onset is the start of each run of active cells
    onsets: tuple[np.ndarray, ...] | None = None

    @property
    def time_signature(self) -> str:
        """"4/4", "mixed(4/4,3/4)" or "" when the file does not say."""
        if len(self.time_signatures) > 1:
            return f"mixed({','.join(self.time_signatures)})"
        return self.time_signatures[0] if self.time_signatures else ""
