"""Tune groups and near-identical songs: which songs must share a split, which are one song.

A song's *group* joins every song that shares its tune, so the split (`lpdvae.data.splits`, which
hashes the group, not the song) never puts one tune on both sides. Two songs are joined when
- their metadata names the same piece: the title (MIDI sequence name, an npz's name; a
  trailing "(...)" such as "(BWV 279, Riemenschneider 261)" or "(Remix)" is left out), or
- their top lines are one melody up to transposition: the Jaccard similarity of the sets of
  `MELODY_NGRAM` successive intervals of the top line (`top_line`: the highest non-drum
  track's highest note at each onset, repeated pitches merged) is at least
  `validate.tune_similarity`.
Groups are the connected components (union-find) of these pairs, so the test never depends on
the order of the songs. A group is named after its smallest member key: the title key of a
titled member (`title:...`), else a song id (the sha256 itself, so a song that shares no tune
is split exactly as it was before songs were grouped); adding a song changes a group's name
only when it joins that group (and sorts first).

A song is a *duplicate* when another song of its group has (nearly) the same notes: the
Jaccard similarity of their (track, onset step on the tensor grid, pitch) sets, times taken
from each song's first onset and pitches under the best transposition within an octave, is at
least `validate.duplicate_similarity`. Of such a pair the song with the smaller path stays.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

MELODY_NGRAM = 6  # intervals per n-gram: shorter ones (5) chain unrelated chorales into one group
COMMON_NGRAM_SONGS = 1000  # an n-gram in more songs proposes no pairs (cost); still counts in the score
MAX_SHIFT = 12  # transpositions tried when comparing two songs' notes
# placeholder sequence names that say nothing about the piece
GENERIC_TITLES = frozenset({"", "untitled", "unnamed", "noname", "title", "track", "track1", "sequence",
                            "sequence1", "song", "midi", "conductor", "tempo", "tempotrack", "copyright"})


@dataclass(frozen=True)
class SongContent:
    """What grouping needs of one song (validate's stats worker computes it)."""

    path: str
    song_id: str
    title: str  # metadata title; "" when the file names none
    melody: np.ndarray  # int, top-line pitches at successive onsets
    notes: np.ndarray  # int64 sorted keys of (track, step, pitch), see `note_keys`


def title_key(title: str) -> str:
    """The title as a comparison key: lower case, accents and punctuation dropped, a trailing
    parenthesized part left out; "" for placeholder names."""
    text = re.sub(r"\s*\([^()]*\)\s*$", "", title)
    text = unicodedata.normalize("NFKD", text.casefold())
    key = "".join(c for c in text if c.isalnum())
    return "" if key in GENERIC_TITLES else key


def top_line(onsets: Sequence[np.ndarray]) -> np.ndarray:
    """The top voice's line: of the track (int [n, 2] of (step, pitch) per track) whose median
    pitch is highest, the highest pitch at each onset step in time order, repeated pitches
    merged. One track, because across tracks a lower voice moving under a held top note
    would enter the line."""
    tracks = [np.asarray(o, dtype=np.int64).reshape(-1, 2) for o in onsets]
    tracks = [t for t in tracks if len(t)]
    if not tracks:
        return np.zeros(0, np.int64)
    top = max(tracks, key=lambda t: float(np.median(t[:, 1])))  # ties: the first track
    order = np.lexsort((-top[:, 1], top[:, 0]))
    steps, pitches = top[order, 0], top[order, 1]
    pitches = pitches[np.r_[True, steps[1:] != steps[:-1]]]
    return pitches[np.r_[True, pitches[1:] != pitches[:-1]]]


def note_keys(onsets: Sequence[np.ndarray], steps_per_source_step: float) -> np.ndarray:
    """Sorted unique int64 keys of (track, onset step on the tensor grid from the first onset,
    pitch + 64) over `onsets` (per track, int [n, 2] at the source resolution)."""
    rows = [np.c_[np.full(len(o), k), np.asarray(o, dtype=np.int64).reshape(-1, 2)]
            for k, o in enumerate(onsets)]
    notes = np.concatenate(rows or [np.zeros((0, 3), np.int64)]).astype(np.int64)
    if not len(notes):
        return np.zeros(0, np.int64)
    steps = np.round((notes[:, 1] - notes[:, 1].min()) * steps_per_source_step).astype(np.int64)
    return np.unique((notes[:, 0] << 40) | (steps << 9) | (notes[:, 2] + 64))


def melody_ngrams(melody: np.ndarray) -> set[bytes]:
    intervals = np.diff(np.asarray(melody, dtype=np.int64)).astype(np.int8)
    return {intervals[i:i + MELODY_NGRAM].tobytes() for i in range(len(intervals) - MELODY_NGRAM + 1)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def _find(parent: dict[str, str], x: str) -> str:
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


def _melody_pairs(grams: dict[str, set[bytes]], threshold: float) -> set[tuple[str, str]]:
    """Pairs of paths whose melody n-gram sets have Jaccard >= threshold. Candidates share an
    n-gram held by at most COMMON_NGRAM_SONGS songs; the counts are sparse matrix products,
    since a loop over pairs grows with the square of the corpus."""
    paths = sorted(grams)
    vocab: dict[bytes, int] = {}
    rows = [i for i, p in enumerate(paths) for _ in grams[p]]
    cols = [vocab.setdefault(g, len(vocab)) for p in paths for g in grams[p]]
    songs = sparse.csr_matrix((np.ones(len(rows), np.int32), (rows, cols)), shape=(len(paths), len(vocab)))
    held = np.asarray(songs.sum(axis=0)).ravel()
    rare, common = songs[:, held <= COMMON_NGRAM_SONGS], songs[:, held > COMMON_NGRAM_SONGS]
    candidates = sparse.triu(rare @ rare.T, k=1).tocoo()
    i, j = candidates.row, candidates.col
    shared = candidates.data + np.asarray(common[i].multiply(common[j]).sum(axis=1)).ravel()
    sizes = np.asarray(songs.sum(axis=1)).ravel()
    keep = shared >= threshold * (sizes[i] + sizes[j] - shared)
    return {(paths[a], paths[b]) for a, b in zip(i[keep].tolist(), j[keep].tolist(), strict=True)}


def song_groups(songs: Sequence[SongContent], tune_similarity: float) -> dict[str, str]:
    """{path: group name} over `songs` (see the module doc)."""
    base = {s.path: (f"title:{k}" if (k := title_key(s.title)) else s.song_id) for s in songs}
    parent = {s.path: s.path for s in songs}
    by_title: dict[str, str] = {}
    pairs = _melody_pairs({s.path: melody_ngrams(s.melody) for s in songs}, tune_similarity)
    for s in sorted(songs, key=lambda s: s.path):
        if base[s.path].startswith("title:"):
            pairs.add((by_title.setdefault(base[s.path], s.path), s.path))
    for a, b in sorted(pairs):
        parent[_find(parent, a)] = _find(parent, b)
    members: dict[str, list[str]] = defaultdict(list)
    for path in parent:
        members[_find(parent, path)].append(path)
    out = {}
    for paths in members.values():
        name = min((base[p] for p in paths), key=lambda b: (not b.startswith("title:"), b))
        out.update(dict.fromkeys(paths, name))
    return out


def note_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two songs' `note_keys` under the best transposition of `b`."""
    if not len(a) or not len(b):
        return 0.0
    best = max(len(np.intersect1d(a, b + shift, assume_unique=True))
               for shift in range(-MAX_SHIFT, MAX_SHIFT + 1))
    return best / (len(a) + len(b) - best)


def duplicates(songs: Sequence[SongContent], groups: dict[str, str],
               similarity: float) -> dict[str, tuple[str, float]]:
    """{path: (twin path, similarity)} for each song whose notes (nearly) repeat those of a song
    with a smaller path in its group; the twin is itself kept."""
    by_group: dict[str, list[SongContent]] = defaultdict(list)
    for s in sorted(songs, key=lambda s: s.path):
        by_group[groups[s.path]].append(s)
    out: dict[str, tuple[str, float]] = {}
    for members in by_group.values():
        for i, song in enumerate(members):
            for twin in members[:i]:
                if twin.path in out or not _comparable(song.notes, twin.notes, similarity):
                    continue
                score = note_similarity(twin.notes, song.notes)
                if score >= similarity:
                    out[song.path] = (twin.path, score)
                    break
    return out


def _comparable(a: np.ndarray, b: np.ndarray, similarity: float) -> bool:
    """False when the note counts alone rule out a Jaccard of `similarity` (min/max < it)."""
    return min(len(a), len(b)) >= similarity * max(len(a), len(b), 1)
