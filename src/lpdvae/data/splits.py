"""The group-level train/val/test split and its report.

Songs come in groups (validate's `group`, `lpdvae.validation.tune_groups`: the songs of one tune),
and every song of a group goes where its group goes, so no tune is on both sides of a split. A
group's place comes from a salted hash of its name alone: `u = int(sha256(split_seed + group)
[:8 bytes]) / 2**64`; u < train_fraction -> train, < train + val -> val, else test. So adding
songs never moves old ones, unless a new song joins (and renames) their group. A small corpus
can hash every group into one split, though (3 groups at 0.8/0.1/0.1 leave val or test empty
half the time), so `assign_splits` gives each empty split one group from the largest one as soon
as there are 3 groups: groups are ranked by `u` and only the groups at the split boundaries
move, deterministically. Only then can an old group move when groups are added (it moves back
once the hash fills that split on its own). A song without a group is a group of its own.

`split_report` reads an index.json's split sizes: a split with fewer phrases than
`tensorize.min_split_phrases` is a warning (written into the index and logged), an empty one a
DataError saying how to get a usable split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from lpdvae.data.shards import SPLITS
from lpdvae.errors import DataError
from lpdvae.params import Params


def unit(key: str, split_seed: str) -> float:
    """The place in [0, 1) of a group (or song) name: a salted hash of it."""
    digest = hashlib.sha256(f"{split_seed}{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(key: str, params: Params) -> str:
    """"train" | "val" | "test" from the salted hash of a group (or song) name alone (no
    small-corpus fix)."""
    t = params.tensorize
    u = unit(key, t.split_seed)
    if u < t.train_fraction:
        return "train"
    return "val" if u < t.train_fraction + t.val_fraction else "test"


def song_groups(rows: list[dict[str, Any]]) -> dict[str, str]:
    """{song id: group} of accepted.jsonl rows; a row without a group (written before validate
    grouped songs) is a group of its own."""
    return {r["song_id"]: r.get("group") or r["song_id"] for r in rows}


def assign_splits(songs: Mapping[str, str] | Iterable[str], params: Params) -> dict[str, str]:
    """{song id: split} for a whole corpus, from `songs` = {song id: group} (or song ids alone:
    each its own group): every song goes where `split_of` puts its group, except that from 3
    groups up no split is left empty (the boundary groups of the hash order move)."""
    groups = dict(songs) if isinstance(songs, Mapping) else {s: s for s in songs}
    by_group = _split_groups(set(groups.values()), params)
    return {song: by_group[group] for song, group in groups.items()}


def _split_groups(names: set[str], params: Params) -> dict[str, str]:
    """{group: split}: `split_of` for each, the small-corpus fix of the module doc applied."""
    seed = params.tensorize.split_seed
    order = sorted(names, key=lambda s: (unit(s, seed), s))
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
            "evaluation test phrases. Ingest more songs (from 3 song groups up, songs of one tune "
            "being one group, every split gets at least one) or change tensorize.train_fraction / "
            "tensorize.val_fraction.")
    return [f"{k} split has {n_phrases[k]} phrases from {n_songs[k]} songs, fewer than "
            f"tensorize.min_split_phrases = {minimum}: too small for a reliable "
            f"{'training' if k == 'train' else 'evaluation'}; ingest more songs or change "
            "tensorize.train_fraction / tensorize.val_fraction"
            for k in SPLITS if n_phrases[k] < minimum]
