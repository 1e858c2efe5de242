"""The song-level train/val/test split and its report.

A song's place comes from a salted hash of its id alone: `u = int(sha256(split_seed + song_id)
[:8 bytes]) / 2**64`; u < train_fraction -> train, < train + val -> val, else test. So adding
songs never moves old ones. A small corpus can hash every song into one split, though (3 songs
at 0.8/0.1/0.1 leave val or test empty half the time), so `assign_splits` gives each empty split
one song from the largest one as soon as there are 3 songs: songs are ranked by `u` and only the
songs at the split boundaries move, deterministically. Only then can an old song move when songs
are added (it moves back once the hash fills that split on its own).

`split_report` reads an index.json's split sizes: a split with fewer phrases than
`tensorize.min_split_phrases` is a warning (written into the index and logged), an empty one a
DataError saying how to get a usable split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from lpdvae.errors import DataError
from lpdvae.params import Params
from lpdvae.data.shards import SPLITS


def unit(song_id: str, split_seed: str) -> float:
    """The song's place in [0, 1): a salted hash of its id."""
    digest = hashlib.sha256(f"{split_seed}{song_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(song_id: str, params: Params) -> str:
    """"train" | "val" | "test" from the salted hash of the song id alone (no small-corpus fix)."""
    t = params.tensorize
    u = unit(song_id, t.split_seed)
    if u < t.train_fraction:
        return "train"
    return "val" if u < t.train_fraction + t.val_fraction else "test"


def assign_splits(song_ids: Iterable[str], params: Params) -> dict[str, str]:
    """{song id: split} for a whole corpus: `split_of` for each, except that from 3 songs up no
    split is left empty (the boundary songs of the hash order move, see the module doc)."""
    seed = params.tensorize.split_seed
    order = sorted(set(song_ids), key=lambda s: (unit(s, seed), s))
    splits = {s: split_of(s, params) for s in order}
    counts = {k: sum(v == k for v in splits.values()) for k in SPLITS}
    if len(order) < len(SPLITS) or min(counts.values()) > 0:
        return splits
    want = {k: max(1, n) for k, n in counts.items()}
    while sum(want.values()) > len(order):
        largest = max(SPLITS, key=lambda k: want[k])  # ties: the first (train)
        want[largest] -= 1
    # the hash order is train < val < test, so refilling by rank moves only boundary songs
    out, start = {}, 0
    for k in SPLITS:
        out.update({s: k for s in order[start : start + want[k]]})
        start += want[k]
    return out


def split_report(index: dict[str, Any], params: Params, where: str) -> list[str]:
    """Warnings for splits smaller than `tensorize.min_split_phrases`; DataError for an empty one.

    `index` is an index.json mapping (splits with phrase counts, songs with their split)."""
    minimum = params.tensorize.min_split_phrases
    songs = index.get("songs", {})
    n_songs = {k: sum(1 for s in songs.values() if s.get("split") == k) for k in SPLITS}
    n_phrases = {k: int(index["splits"].get(k, {}).get("n", 0)) for k in SPLITS}
    empty = [k for k in SPLITS if n_phrases[k] == 0]
    if empty:
        sizes = ", ".join(f"{k} {n_songs[k]} songs / {n_phrases[k]} phrases" for k in SPLITS)
        raise DataError(
            f"{where}: the {' and '.join(empty)} split{'s are' if len(empty) > 1 else ' is'} empty "
            f"({sizes}; {len(songs)} accepted songs): training needs train and val phrases and "
            "evaluation test phrases. Ingest more songs (from 3 songs up every split gets at least "
            "one) or change tensorize.train_fraction / tensorize.val_fraction.")
    return [f"{k} split has {n_phrases[k]} phrases from {n_songs[k]} songs, fewer than "
            f"tensorize.min_split_phrases = {minimum}: too small for a reliable "
            f"{'training' if k == 'train' else 'evaluation'}; ingest more songs or change "
            "tensorize.train_fraction / tensorize.val_fraction"
            for k in SPLITS if n_phrases[k] < minimum]
