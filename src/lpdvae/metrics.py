"""Evaluation metrics. MuseGAN's metrics come from pypianoroll.metrics (called, not rewritten);
this module lays phrases out as the full-range rolls those functions expect, and averages.

pypianoroll 1.0.4 has bugs that the hand-made-roll tests in tests/test_metrics.py expose; each
is worked around at the call, documented where it happens:
- empty_beat_rate returns the share of *non-empty* beats;
- the chroma folding behind n_pitch_classes_used / tonal_distance groups 10 adjacent pitches
  instead of octaves (fixed by re-laying pitch columns, `octave_layout`);
- qualified_note_rate pairs onsets and offsets across pitches (called per pitch column);
- tonal_distance projects a 3-D array with matmul and fails for more than one beat (computed
  per beat here with pypianoroll's own tonal matrix).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from pypianoroll import metrics as pm

from lpdvae.params import RepresentationParams


def full_roll(track_phrase: np.ndarray, rep: RepresentationParams) -> np.ndarray:
    """`[B, S, P]` -> `[B*S, 128]` bool, pitches back at their MIDI numbers (pitch classes matter)."""
    b, s, p = track_phrase.shape
    roll = np.zeros((b * s, 128), dtype=bool)
    roll[:, rep.lowest_pitch : rep.lowest_pitch + p] = track_phrase.reshape(b * s, p) > 0
    return roll


_OCTAVE_LAYOUT = np.array([12 * octave + pc for pc in range(12) for octave in range(10)])


def octave_layout(roll: np.ndarray) -> np.ndarray:
    """Re-lay pitches 0..119 so pypianoroll's `_to_chroma` (reshape to 12 groups of 10 adjacent
    columns) sums each pitch class over octaves: column 10*pc + octave holds pitch 12*octave + pc."""
    out = np.zeros((roll.shape[0], 128), dtype=roll.dtype)
    out[:, :120] = roll[:, _OCTAVE_LAYOUT]
    return out


def n_pitch_classes_used(roll: np.ndarray) -> int:
    return int(pm.n_pitch_classes_used(octave_layout(roll)))


def tonal_distance(a: np.ndarray, b: np.ndarray, resolution: int) -> float:
    """Mean over beats (where both tracks sound) of the distance between tonal centroids
    (Harte et al. 2006), using pypianoroll's tonal matrix and chroma folding."""
    matrix = pm._get_tonal_matrix(1.0, 1.0, 0.5)

    def centroids(roll: np.ndarray) -> np.ndarray:
        chroma = pm._to_chroma(octave_layout(roll).astype(np.float64)).reshape(-1, resolution, 12).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            chroma = chroma / chroma.sum(1, keepdims=True)
        return chroma @ matrix.T  # [beats, 6]

    ca, cb = centroids(a), centroids(b)
    both = np.isfinite(ca).all(1) & np.isfinite(cb).all(1)
    return float(np.linalg.norm(ca[both] - cb[both], axis=1).mean()) if both.any() else float("nan")


def track_metrics(roll: np.ndarray, rep: RepresentationParams, is_drum: bool) -> dict[str, float]:
    """MuseGAN metrics of one track of one phrase. EB comes from pypianoroll's empty_beat_rate
    with one "beat" = one bar; pypianoroll 1.0.4 counts the *non-empty* beats there
    (`reshaped.any(1)`), so EB = 1 - its value. UPC: pitch classes used per bar, bar mean."""
    spb = rep.steps_per_bar
    bars = [roll[i : i + spb] for i in range(0, len(roll), spb)]
    out = {
        "empty_bar_rate": 1.0 - pm.empty_beat_rate(roll, resolution=spb),
        "n_pitch_classes_used": float(np.mean([n_pitch_classes_used(b) for b in bars])),
    }
    if roll.any():
        out["qualified_note_rate"] = qualified_note_rate(roll, threshold=2)
        out["polyphonic_rate"] = pm.polyphonic_rate(roll, threshold=2)
        if is_drum:
            out["drum_in_pattern_rate"] = pm.drum_in_pattern_rate(roll, resolution=rep.beat_resolution)
    return {k: float(v) for k, v in out.items()}


def qualified_note_rate(roll: np.ndarray, threshold: int = 2) -> float:
    """pypianoroll's QN, called one pitch at a time.

    pypianoroll 1.0.4 flattens the roll time-major before pairing onsets with offsets, which
    mispairs overlapping notes of different pitches, and wraps around on uint8 input. Per pitch
    column (as int8) its pairing is exact; the per-pitch rates are weighted by onset counts.
    """
    qualified, onsets = 0.0, 0
    for pitch in np.flatnonzero(roll.any(axis=0)):
        col = roll[:, [pitch]].astype(np.int8)
        n = int(np.count_nonzero(np.diff(col[:, 0], prepend=0) > 0))
        qualified += pm.qualified_note_rate(col, threshold=threshold) * n
        onsets += n
    return qualified / onsets if onsets else float("nan")


def musegan_metrics(
    phrases: np.ndarray, track_names: Sequence[str], drum_flags: Sequence[bool], rep: RepresentationParams
) -> dict[str, float]:
    """Per-track means over phrases (`metric/track`), track means (`metric`), tonal distance per pair."""
    per: dict[str, list[float]] = {}
    for phrase in phrases:
        rolls = [full_roll(phrase[k], rep) for k in range(len(track_names))]
        for name, roll, drum in zip(track_names, rolls, drum_flags, strict=True):
            for key, value in track_metrics(roll, rep, drum).items():
                per.setdefault(f"{key}/{name}", []).append(value)
        for (i, a), (j, b) in itertools.combinations(enumerate(rolls), 2):
            if drum_flags[i] or drum_flags[j] or not a.any() or not b.any():
                continue
            td = tonal_distance(a, b, rep.beat_resolution)
            if np.isfinite(td):
                per.setdefault(f"tonal_distance/{track_names[i]}-{track_names[j]}", []).append(float(td))
    out = {k: float(np.mean(v)) for k, v in sorted(per.items())}
    for metric in {k.split("/")[0] for k in out}:
        values = [v for k, v in out.items() if k.startswith(metric + "/")]
        out[metric] = float(np.mean(values))
    return dict(sorted(out.items()))


def note_f1(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Cell-level precision / recall / F1 of a binarized reconstruction against the input."""
    pred, truth = pred.astype(bool), truth.astype(bool)
    tp = float(np.logical_and(pred, truth).sum())
    fp = float(np.logical_and(pred, ~truth).sum())
    fn = float(np.logical_and(~pred, truth).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}
