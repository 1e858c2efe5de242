"""How much a tune leaks across splits: for each data folder given (validated/ + tensors/ of
one `lpdvae validate` + `tensorize` run), the split sizes (songs / phrases), how many test (and
val) songs share a tune with a train song, and how many test phrases have a top line equal to a
train phrase's under some transposition.

Two songs "share a tune" when their titles match or their top lines' interval n-grams reach
`validate.tune_similarity` (`lpdvae.validation.tune_groups`), judged on the songs of `--raw`
(a raw folder whose files carry their titles, matched to each run's songs by path), so runs
split before the songs were grouped are judged by the same rule. The phrase check is
independent of that rule: the top track's (onset step, pitch - first pitch) sequence.

    python -m benchmarks.split_leak --raw NEW/data/raw OLD/data NEW/data
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from lpdvae.data.music.load import read_song
from lpdvae.data.shards import SPLITS, load_split, read_index
from lpdvae.io import read_jsonl
from lpdvae.params import Params, load_params
from lpdvae.validation.song_stats import song_melody_notes, song_title
from lpdvae.validation.tune_groups import jaccard, melody_ngrams, title_key

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "split_leak.json"


def tune_keys(raw: Path, paths: set[str], params: Params) -> dict[str, tuple[str, set[bytes]]]:
    """{path: (title key, melody n-grams)} of the songs at `paths` under `raw`."""
    out = {}
    for path in sorted(paths):
        song = read_song(raw / path, params.representation, max_beats=params.validate.max_song_beats)
        out[path] = (title_key(song_title(song)), melody_ngrams(song_melody_notes(song, params)[0]))
    return out


def shares_tune(a: tuple[str, set[bytes]], b: tuple[str, set[bytes]], threshold: float) -> bool:
    return bool(a[0]) and a[0] == b[0] or jaccard(a[1], b[1]) >= threshold


def phrase_lines(phrases: np.ndarray) -> list[bytes | None]:
    """Per phrase, the top track's (onset step, pitch - first pitch) sequence; None if silent."""
    out: list[bytes | None] = []
    for phrase in phrases:
        steps, pitches = np.nonzero(phrase[0].reshape(-1, phrase.shape[-1]) == 2)
        if not len(steps):
            out.append(None)
            continue
        top = {s: p for s, p in zip(steps.tolist(), pitches.tolist(), strict=True)}  # ascending: highest last
        line = np.array(sorted(top.items()), dtype=np.int64)
        line[:, 1] -= line[0, 1]
        out.append(line.tobytes())
    return out


def measure(data: Path, keys: dict[str, tuple[str, set[bytes]]], params: Params) -> dict[str, Any]:
    index = read_index(data / "tensors")
    path_of = {r["song_id"]: r["path"] for r in read_jsonl(data / "validated" / "accepted.jsonl")}
    split = {path_of[s]: v["split"] for s, v in index["songs"].items()}
    train = [p for p, s in split.items() if s == "train" and p in keys]
    t = params.validate.tune_similarity
    sharing = {k: sum(any(shares_tune(keys[p], keys[q], t) for q in train) for p, s in split.items()
                      if s == k and p in keys) for k in ("val", "test")}
    train_lines = {x for x in phrase_lines(load_split(data / "tensors", "train")) if x is not None}
    test_lines = phrase_lines(load_split(data / "tensors", "test"))
    return {"data": str(data),
            "songs": {k: sum(s == k for s in split.values()) for k in SPLITS},
            "phrases": {k: index["splits"][k]["n"] for k in SPLITS},
            "songs_sharing_a_tune_with_train": sharing,
            "test_phrases_top_line_in_train": sum(x is not None and x in train_lines for x in test_lines),
            "test_phrases": len(test_lines)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", type=Path, required=True, help="raw folder whose files carry titles")
    parser.add_argument("--params", type=Path, default=HERE.parent / "params.yaml")
    parser.add_argument("data", type=Path, nargs="+", help="data folders (validated/, tensors/)")
    args = parser.parse_args()
    params = load_params(args.params)
    paths = {r["path"] for d in args.data for r in read_jsonl(d / "validated" / "accepted.jsonl")}
    keys = tune_keys(args.raw, {p for p in paths if (args.raw / p).exists()}, params)
    results = [measure(d, keys, params) for d in args.data]
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
