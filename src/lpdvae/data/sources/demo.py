"""`demo://bach-chorales?songs=N|all`: music21's chorales rendered by `lpdvae.data.demo`, as a folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from lpdvae.data.sources.base import Entry, Skipped, cache_dir
from lpdvae.data.sources.folder import local_entries
from lpdvae.errors import DataError
from lpdvae.params import Params


def demo_song_count(uri: str) -> int | None:
    """`songs=N` of a demo URI: N >= 1, or None for `songs=all` (every usable chorale)."""
    text = parse_qs(urlparse(uri).query).get("songs", ["120"])[0]
    if text == "all":
        return None
    try:
        songs = int(text)
    except ValueError:
        raise DataError(f"{uri}: songs must be an integer or all") from None
    if songs < 1:
        raise DataError(f"{uri}: songs must be >= 1")
    return songs


def demo_entries(uri: str, out_dir: Path, params: Params) -> Iterator[Entry | Skipped]:
    from lpdvae.data.demo import render_demo_corpus

    parsed = urlparse(uri)
    if parsed.netloc != "bach-chorales":
        raise DataError(f"{uri}: unknown demo corpus (only demo://bach-chorales?songs=N|all)")
    songs = demo_song_count(uri)
    # One staging folder for every N: the selection is the first N in a fixed order, so a
    # smaller corpus is a prefix of a larger one and reuses its renders. "-named": renders
    # from before the files carried their chorale's title are not reused.
    staging = cache_dir(out_dir) / "demo-bach-chorales-named"
    files = render_demo_corpus(staging, songs)
    return local_entries(staging, params.data.max_file_bytes, files)
