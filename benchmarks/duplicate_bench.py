"""What validate's duplicate search costs on a dense tune group, against comparing every pair.

A tune group whose songs all share one rhythm grid (one genre's drum loop, a cover set) is the
search's worst case: every song has a note on every grid slot, only the pitches differ. The
benchmark plants such a group (`--songs` songs, 4 tracks x 128 slots, random pitches, every
tenth song a near-copy of the song before it with 5 pitches changed) and measures, in one run:
- `tune_groups.duplicates` (prefix filter per transposition, each candidate verified only at
  the shifts that met) on the whole group and on its first `--brute` songs,
- the reference on those `--brute` songs: every pair at every transposition within an octave
  (what the search did before the prefix filter on a group on one rhythm grid),
and checks that both find the same duplicates. `ratio` is the reference's time over the
search's on the same songs; `candidate_fraction` the share of pairs the filter leaves.

    python -m benchmarks.duplicate_bench [--songs 2000] [--brute 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from functools import partial
from pathlib import Path

import numpy as np

from lpdvae.io import atomic_write_json
from lpdvae.params import load_params
from lpdvae.validation import tune_groups
from lpdvae.validation.tune_groups import SongContent

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "duplicates.json"
TRACKS, STEPS = 4, np.arange(0, 256, 2)  # every song has a note on each track's every other step


def planted_group(n: int, seed: int = 3) -> list[SongContent]:
    """`n` songs on one rhythm grid; song 10k + 9 repeats song 10k + 8 but for 5 pitches."""
    rng = np.random.default_rng(seed)
    songs: list[SongContent] = []
    slots = TRACKS * len(STEPS)
    last = np.zeros(slots, np.int64)  # the pitches of the song before
    for k in range(n):
        p = rng.integers(36, 84, slots)
        if k % 10 == 9:
            p = last.copy()
            p[rng.choice(slots, 5, replace=False)] = rng.integers(36, 84, 5)
        last = p
        onsets = [np.c_[STEPS, track] for track in p.reshape(TRACKS, len(STEPS))]
        songs.append(SongContent(f"group/{k:05d}", str(k), "", np.zeros(0, np.int64),
                                 tune_groups.note_keys(onsets, 1.0)))
    return songs


def every_pair(songs: list[SongContent], similarity: float) -> dict[str, tuple[str, float]]:
    """The reference: each song against every song before it (path order) at every shift."""
    out: dict[str, tuple[str, float]] = {}
    for i, song in enumerate(songs):
        for twin in songs[:i]:
            if twin.path in out:
                continue
            score = tune_groups.note_similarity(twin.notes, song.notes)
            if score >= similarity:
                out[song.path] = (twin.path, score)
                break
    return out


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median seconds of `repeats` calls, and the last call's result."""
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def measure(n: int, brute: int, repeats: int, similarity: float) -> dict:
    songs = planted_group(n)
    small = songs[:brute]
    groups = {s.path: "g" for s in songs}
    t_small, found_small = timed(partial(tune_groups.duplicates, small, groups, similarity), repeats)
    t_ref, found_ref = timed(partial(every_pair, small, similarity), 1 if brute > 200 else repeats)
    t_all, found_all = timed(partial(tune_groups.duplicates, songs, groups, similarity), repeats)
    pairs = len(tune_groups._candidate_pairs([s.notes for s in songs], similarity))
    if found_small != found_ref:
        raise SystemExit(f"duplicate_bench: the search and every-pair disagree on {brute} songs")
    return {"similarity": similarity, "songs": n, "brute_songs": brute, "repeats": repeats,
            "search_s": round(t_all, 4), "duplicates": len(found_all), "planted": n // 10,
            "candidate_pairs": pairs, "all_pairs": n * (n - 1) // 2,
            "candidate_fraction": round(pairs / max(1, n * (n - 1) // 2), 5),
            "small": {"search_s": round(t_small, 4), "every_pair_s": round(t_ref, 4),
                      "ratio": round(t_ref / max(t_small, 1e-9), 1), "duplicates": len(found_small)}}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.duplicate_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--songs", type=int, default=2000, help="songs in the planted group (default %(default)s)")
    parser.add_argument("--brute", type=int, default=300,
                        help="of them, how many the every-pair reference compares (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls of the search (default %(default)s)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON result (default %(default)s)")
    args = parser.parse_args()
    if not 2 <= args.brute <= args.songs:
        parser.error("--brute must be between 2 and --songs")
    similarity = load_params(HERE.parent / "params.yaml").validate.duplicate_similarity
    result = measure(args.songs, args.brute, args.repeats, similarity)
    atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
