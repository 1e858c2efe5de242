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

import math
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

MELODY_NGRAM = 6  # intervals per n-gram: shorter ones (5) chain unrelated chorales into one group
COMMON_NGRAM_SONGS = 1000  # an n-gram in more songs proposes no pairs (cost); still counts in the score
MAX_SHIFT = 12  # transpositions tried when comparing two songs' notes
PAIR_BLOCK = 2048  # songs per block of the pair search: its memory is one block's candidates, not the corpus's
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
    notes: np.ndarray  # int64 sorted keys of (track, step, pitch), see `note_keys` (validate's may
    # be a view of a memory-mapped file: only the songs compared are ever read back)


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


def ngram_keys(melody: np.ndarray) -> np.ndarray:
    """`melody_ngrams` as sorted unique int64 keys: the n-gram's interval bytes packed into one
    number (6 bytes), so equal keys are equal n-grams, without a Python object per n-gram."""
    steps = np.diff(np.asarray(melody, dtype=np.int64)).astype(np.int8).view(np.uint8).astype(np.int64)
    n = len(steps) - MELODY_NGRAM + 1
    if n <= 0:
        return np.zeros(0, np.int64)
    keys = np.zeros(n, np.int64)
    for k in range(MELODY_NGRAM):
        keys |= steps[k:k + n] << (8 * k)
    return np.unique(keys)


def _melody_pairs(grams: dict[str, np.ndarray], threshold: float) -> set[tuple[str, str]]:
    """Pairs of paths whose melody n-gram sets (`ngram_keys`) have Jaccard >= threshold.
    Candidates share an n-gram held by at most COMMON_NGRAM_SONGS songs, so there are at most
    COMMON_NGRAM_SONGS x (n-grams in all) of them: linear in the corpus. They are counted by
    sparse products (songs x n-grams) a block of PAIR_BLOCK songs at a time, so memory holds
    one block's candidates, not the corpus's."""
    paths = sorted(grams)
    sizes = np.array([len(grams[p]) for p in paths], dtype=np.int64)
    if not sizes.sum():
        return set()
    vocab, cols = np.unique(np.concatenate([grams[p] for p in paths]), return_inverse=True)
    songs = sparse.csr_matrix((np.ones(len(cols), np.int32), cols.ravel(), np.r_[0, np.cumsum(sizes)]),
                              shape=(len(paths), len(vocab)))
    held = np.bincount(cols.ravel(), minlength=len(vocab))
    rare, common = songs[:, held <= COMMON_NGRAM_SONGS], songs[:, held > COMMON_NGRAM_SONGS].tocsr()
    rare_t = rare.T.tocsr()
    out: set[tuple[str, str]] = set()
    for lo in range(0, len(paths), PAIR_BLOCK):
        block = (rare[lo:lo + PAIR_BLOCK] @ rare_t).tocoo()
        upper = block.col > block.row + lo
        i, j = block.row[upper] + lo, block.col[upper]
        shared = block.data[upper] + np.asarray(common[i].multiply(common[j]).sum(axis=1)).ravel()
        keep = shared >= threshold * (sizes[i] + sizes[j] - shared)
        out.update((paths[a], paths[b]) for a, b in zip(i[keep].tolist(), j[keep].tolist(), strict=True))
    return out


def song_groups(songs: Sequence[SongContent], tune_similarity: float) -> dict[str, str]:
    """{path: group name} over `songs` (see the module doc)."""
    base = {s.path: (f"title:{k}" if (k := title_key(s.title)) else s.song_id) for s in songs}
    parent = {s.path: s.path for s in songs}
    by_title: dict[str, str] = {}
    pairs = _melody_pairs({s.path: ngram_keys(s.melody) for s in songs}, tune_similarity)
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


SHIFTS = range(-MAX_SHIFT, MAX_SHIFT + 1)


def note_similarity(a: np.ndarray, b: np.ndarray, shifts: Iterable[int] = SHIFTS) -> float:
    """Jaccard similarity of two songs' `note_keys` under the best of `shifts` (transpositions
    of `b`; by default every one within an octave)."""
    if not len(a) or not len(b):
        return 0.0
    best = max(len(np.intersect1d(a, b + shift, assume_unique=True)) for shift in shifts)
    return best / (len(a) + len(b) - best)


def duplicates(songs: Sequence[SongContent], groups: dict[str, str],
               similarity: float) -> dict[str, tuple[str, float]]:
    """{path: (twin path, similarity)} for each song whose notes (nearly) repeat those of a song
    with a smaller path in its group; the twin is itself kept. A song alone in its group (most
    songs) is never compared, so its notes are never read."""
    by_group: dict[str, list[SongContent]] = defaultdict(list)
    for s in sorted(songs, key=lambda s: s.path):
        by_group[groups[s.path]].append(s)
    out: dict[str, tuple[str, float]] = {}
    for members in by_group.values():
        if len(members) > 1:
            out.update(_group_duplicates(members, similarity))
    return out


def _group_duplicates(members: list[SongContent], similarity: float) -> dict[str, tuple[str, float]]:
    """`duplicates` within one group (`members` in path order): each song against the songs
    before it, in path order, that `_candidate_pairs` leaves (the others cannot reach it)."""
    twins_of: dict[int, list[tuple[int, list[int]]]] = defaultdict(list)
    for (a, b), shifts in sorted(_candidate_pairs([m.notes for m in members], similarity).items()):
        twins_of[b].append((a, sorted(shifts)))
    out: dict[str, tuple[str, float]] = {}
    for i, song in enumerate(members):
        for k, shifts in twins_of.get(i, ()):
            twin = members[k]
            if twin.path in out or not _comparable(song.notes, twin.notes, similarity):
                continue
            score = note_similarity(twin.notes, song.notes, shifts)
            if score >= similarity:
                out[song.path] = (twin.path, score)
                break
    return out


def _candidate_pairs(notes: list[np.ndarray], similarity: float) -> dict[tuple[int, int], set[int]]:
    """{(a, b), a < b: the transpositions s of b} under which songs a and b may reach a note
    similarity of `similarity`: every pair and shift that does is here. Prefix filtering (as in
    set-similarity joins), once per shift: with the notes ordered rarest first, A and B + s of
    Jaccard >= t share a note among their first |x| - ceil(t |x|) + 1. A group of many songs,
    even on one rhythm grid, then costs far less than the square of its size times 25 shifts."""
    n = len(notes)
    if similarity <= 0 or n < 3:  # everything may qualify / one pair: nothing to filter
        return {(a, b): set(SHIFTS) for b in range(n) for a in range(b)}
    vocab, counts = np.unique(np.concatenate(notes), return_counts=True)
    if not len(vocab):  # no song has a note: none is anyone's duplicate
        return {}
    rank = np.empty(len(vocab), np.int64)
    rank[np.lexsort((vocab, counts))] = np.arange(len(vocab))
    unshifted = _prefixes(notes, 0, vocab, rank, similarity)
    pairs: dict[tuple[int, int], set[int]] = defaultdict(set)
    for shift in SHIFTS:  # a hit (i, j): A_i meets A_j + shift, that is A_j meets A_i - shift
        hits = (unshifted @ _prefixes(notes, shift, vocab, rank, similarity).T).tocoo()
        for i, j in zip(hits.row.tolist(), hits.col.tolist(), strict=True):
            if i != j:
                pairs[(i, j) if i < j else (j, i)].add(shift if i < j else -shift)
    return pairs


def _prefixes(notes: list[np.ndarray], shift: int, vocab: np.ndarray, rank: np.ndarray,
              similarity: float) -> sparse.csr_matrix:
    """Songs x note ranks: each song's notes + `shift` in the prefix that `_candidate_pairs`
    compares. A shifted note that no song has ranks first (rarest): it fills a prefix slot and
    matches nothing, which keeps the order one total order over every set compared."""
    rows, cols = [], []
    for k, keys in enumerate(notes):
        size = len(keys)
        keep = size - math.ceil(similarity * size - 1e-6) + 1  # the slack only lengthens the prefix
        at = np.searchsorted(vocab, keys + shift).clip(0, len(vocab) - 1)
        known = vocab[at] == keys + shift
        cols.append(np.sort(rank[at[known]])[:max(0, keep - int((~known).sum()))])
        rows.append(np.full(len(cols[-1]), k))
    return sparse.csr_matrix((np.ones(sum(map(len, cols)), np.int32), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(len(notes), len(vocab)))


def _comparable(a: np.ndarray, b: np.ndarray, similarity: float) -> bool:
    """False when the note counts alone rule out a Jaccard of `similarity` (min/max < it)."""
    return min(len(a), len(b)) >= similarity * max(len(a), len(b), 1)
