"""Voices drawn jointly vs independently: what trained models reconstruct and generate.

For each trained model folder (`--model NAME=DIR`, e.g. one trained with `model.voice_chain=false`
and one with `true`, same data and steps) it measures on one tensor folder: val and test note F1
of the reconstruction (posterior mean, decided voice by voice), and of the phrases generated at
the evaluation's own temperature (chosen on val, as `lpdvae evaluate` does) and at 1.0: tonal
distance, pitch classes per bar (all voices together), MuseGAN's per-track pitch classes, and the
parallel fifths/octaves rate, each beside the data's (val and test). With `--copy` it adds the
copy baseline: each val/test phrase replaced by the training phrase closest to it in note F1,
best over transpositions -k..+k (`train.transpose`), the lookup table the model has to beat.

Not a test and not timed: `python -m benchmarks.voice_chain_report --tensors DIR --model a=DIR
[--model b=DIR ...] [--copy] --out benchmarks/results/voice_chain.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from lpdvae.data.shards import load_split
from lpdvae.evaluation.evalset import measure
from lpdvae.evaluation.metrics import (
    aggregate_metrics,
    musegan_per_phrase,
    note_prf,
    pairwise_note_f1,
)
from lpdvae.io import atomic_write_json
from lpdvae.params import EvaluateParams, RepresentationParams, load_params

HERE = Path(__file__).resolve().parent
STATS = ("tonal_distance", "n_pitch_classes_used", "qualified_note_rate")


def sounding_pitches(phrases: np.ndarray) -> np.ndarray:
    """`[N, T, B, S, P]` codes -> `[N, T, B*S]` the highest sounding pitch per step, -1 silent."""
    n, t, b, s, p = phrases.shape
    on = phrases.reshape(n, t, b * s, p) > 0
    top = p - 1 - on[..., ::-1].argmax(-1)
    return np.where(on.any(-1), top, -1)


def parallel_rate(phrases: np.ndarray) -> float:
    """Parallel fifths and octaves (unisons too) per step where two voices both move to a new
    pitch: both move the same way and keep a perfect fifth or an octave (mod 12) between them."""
    pit = sounding_pitches(phrases)
    parallels = moves = 0
    for u in range(pit.shape[1]):
        for v in range(u + 1, pit.shape[1]):
            a0, a1, b0, b1 = pit[:, u, :-1], pit[:, u, 1:], pit[:, v, :-1], pit[:, v, 1:]
            both = (np.minimum.reduce([a0, a1, b0, b1]) >= 0) & (a1 != a0) & (b1 != b0)
            same_way = np.sign(a1 - a0) == np.sign(b1 - b0)
            before, after = (a0 - b0) % 12, (a1 - b1) % 12
            parallels += int((both & same_way & (before == after) & np.isin(after, (0, 7))).sum())
            moves += int(both.sum())
    return parallels / moves if moves else 0.0


def pitch_classes_per_bar(phrases: np.ndarray) -> float:
    """Distinct pitch classes sounding in a bar, all voices together, averaged over non-empty bars."""
    n, t, b, s, p = phrases.shape
    sounding = (phrases > 0).any(axis=(1, 3))  # [N, B, P]
    classes = np.zeros((n, b, 12), dtype=bool)
    for pc in range(12):
        classes[..., pc] = sounding[..., pc::12].any(-1)
    counts = classes.sum(-1)
    return float(counts[counts > 0].mean()) if (counts > 0).any() else 0.0


def statistics(phrases: np.ndarray, names: list[str], rep: RepresentationParams) -> dict[str, float]:
    per = aggregate_metrics(musegan_per_phrase(phrases, names, [False] * len(names), rep))
    return {**{k: round(per[k], 4) for k in STATS if k in per},
            "pitch_classes_per_bar": round(pitch_classes_per_bar(phrases), 4),
            "parallel_5_8_rate": round(parallel_rate(phrases), 4)}


def transposed(phrases: np.ndarray, k: int) -> np.ndarray:
    """Phrases shifted by k semitones (notes pushed out of the range dropped), like training's."""
    out = np.zeros_like(phrases)
    if k >= 0:
        out[..., k:] = phrases[..., : phrases.shape[-1] - k]
    else:
        out[..., :k] = phrases[..., -k:]
    return out


def copy_baseline(query: np.ndarray, train: np.ndarray, shift: int) -> float:
    """Micro note F1 of replacing each query phrase by its closest training phrase (best over
    transpositions -shift..+shift)."""
    best = np.full(len(query), -1.0)
    chosen = np.zeros_like(query)
    for k in range(-shift, shift + 1):
        moved = transposed(train, k)
        f1 = pairwise_note_f1(query, moved)
        idx, top = f1.argmax(1), f1.max(1)
        better = top > best
        chosen[better], best[better] = moved[idx[better]], top[better]
    return round(note_prf(chosen, query)["f1"], 4)


def model_report(model_dir: Path, tensors: Path, ev: EvaluateParams) -> dict[str, Any]:
    import torch

    from lpdvae.evaluation.evalset import reconstruct
    from lpdvae.model.files import load_model
    from lpdvae.training.outputs import METRICS_FILE

    torch.set_num_threads(1)
    train = json.loads((model_dir / METRICS_FILE).read_text())
    vae = load_model(model_dir)
    rep = RepresentationParams(**vae.meta["representation"])
    names = [t["name"] for t in vae.meta["tracks"]]
    m = measure(vae, tensors, ev)
    test = load_split(tensors, "test")  # measure() reads no test (test is sealed); this report does
    at_one = vae.sample(ev.n_generated, ev.seed, 1.0).numpy()
    return {
        "voice_chain": bool(vae.meta["model"].get("voice_chain", False)),
        "steps": train["steps"], "train_time_s": round(train["train_time_s"], 1),
        "val_recon_nll": round(train.get("val_recon", float("nan")), 2),
        "val_note_f1": round(note_prf(reconstruct(vae, m.val), m.val)["f1"], 4),
        "test_note_f1": round(note_prf(reconstruct(vae, test), test)["f1"], 4),
        "temperature": m.temperature,
        "generated": statistics(m.generated, names, rep),
        "generated_at_1.0": statistics(at_one, names, rep),
        "data_val": statistics(m.val, names, rep),
        "data_test": statistics(test, names, rep),
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.voice_chain_report", description=__doc__)
    parser.add_argument("--tensors", type=Path, required=True)
    parser.add_argument("--model", action="append", default=[], help="NAME=DIR, repeatable")
    parser.add_argument("--copy", action="store_true", help="also the copy baseline on val and test")
    parser.add_argument("--params", type=Path, default=HERE.parent / "params.yaml")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "voice_chain.json")
    args = parser.parse_args()
    params = load_params(args.params)
    result: dict[str, Any] = {"tensors": str(args.tensors), "models": {}}
    if args.out.exists():  # models measured earlier stay (one model per call keeps runs short)
        result = {**json.loads(args.out.read_text()), "tensors": str(args.tensors)}
    for spec in args.model:
        name, _, folder = spec.partition("=")
        result["models"][name] = model_report(Path(folder), args.tensors, params.evaluate)
        print(name, json.dumps(result["models"][name]), flush=True)
    if args.copy:
        train = load_split(args.tensors, "train")
        k = params.train.transpose
        result["copy_baseline"] = {"transpose": k, **{
            f"{split}_note_f1": copy_baseline(load_split(args.tensors, split), train, k) for split in ("val", "test")}}
        print("copy", json.dumps(result["copy_baseline"]), flush=True)
    atomic_write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
