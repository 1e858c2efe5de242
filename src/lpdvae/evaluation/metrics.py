"""Evaluation metrics. MuseGAN's metrics come from pypianoroll.metrics (called, not rewritten);
this module lays phrases out as the full-range rolls those functions expect, and averages.

pypianoroll 1.0.4 has bugs that the hand-made-roll tests in tests/test_metrics.py expose; each
is worked around at the call, documented where it happens:
- empty_beat_rate returns the share of *non-empty* beats;
- the chroma folding behind n_pitch_classes_used / tonal_distance groups 10 adjacent pitches
  instead of octaves (fixed by re-laying pitch columns, `octave_layout`);
- qualified_note_rate pairs onsets and offsets across pitches (called on the pitch columns laid
  end to end, a silent step between them);
- drum_in_pattern_rate multiplies a one-beat mask with the whole roll (called one beat at a time);
- tonal_distance projects a 3-D array with matmul and fails for more than one beat (computed
  per beat here with pypianoroll's own tonal matrix).

Reconstruction is scored per note (`note_prf`: onsets of one pitch at one step, the way
transcription is scored onset-only) and per cell (`frame_prf`); the same note F1 between phrases
measures diversity and copying, and `fit_cell_baseline` is the average-cell baseline.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lpdvae.data.codes import onsets_np
from lpdvae.params import RepresentationParams


def full_roll(track_phrase: np.ndarray, rep: RepresentationParams) -> np.ndarray:
    """`[B, S, P]` -> `[B*S, 128]` bool, pitches back at their MIDI numbers (pitch classes matter)."""
    b, s, p = track_phrase.shape
    roll = np.zeros((b * s, 128), dtype=bool)
    roll[:, rep.lowest_pitch : rep.lowest_pitch + p] = track_phrase.reshape(b * s, p) > 0
    return roll


_OCTAVE_LAYOUT = np.array([12 * octave + pc for pc in range(12) for octave in range(10)])
_TOP_OCTAVE = np.arange(120, 128)  # pitches 120..127 = pitch classes 0..7 of octave 10


def octave_layout(roll: np.ndarray) -> np.ndarray:
    """Re-lay pitches so pypianoroll's `_to_chroma` (reshape to 12 groups of 10 adjacent columns)
    sums each pitch class over octaves: column 10*pc + octave holds pitch 12*octave + pc.

    Octave 10 (pitches 120..127) has no column of its own; it is merged into octave 9's column
    (its own handling in `_to_chroma` would add it to every pitch class)."""
    out = np.zeros((roll.shape[0], 128), dtype=roll.dtype)
    out[:, :120] = roll[:, _OCTAVE_LAYOUT]
    octave9 = 10 * (_TOP_OCTAVE % 12) + 9
    out[:, octave9] = np.maximum(out[:, octave9], roll[:, _TOP_OCTAVE])
    return out


def n_pitch_classes_used(roll: np.ndarray, layout: np.ndarray | None = None) -> int:
    """`layout`: the roll's `octave_layout`, when the caller has it already."""
    return int(_pm().n_pitch_classes_used(octave_layout(roll) if layout is None else layout))


@functools.cache
def _pm():
    """pypianoroll.metrics, imported on first use: register's first run only aggregates
    per-phrase records, and pypianoroll's import (matplotlib with it) would be most of its time."""
    from pypianoroll import metrics

    return metrics


@functools.cache
def _tonal_matrix() -> np.ndarray:
    return _pm()._get_tonal_matrix(1.0, 1.0, 0.5)


def tonal_centroids(roll: np.ndarray, resolution: int, layout: np.ndarray | None = None) -> np.ndarray:
    """`[beats, 6]` tonal centroids (Harte et al. 2006) of a roll, from pypianoroll's tonal matrix
    and chroma folding; NaN rows at silent beats. `layout`: the roll's `octave_layout`, when the
    caller has it already (a track's centroids serve all its pairs)."""
    layout = octave_layout(roll) if layout is None else layout
    chroma = _pm()._to_chroma(layout.astype(np.float64)).reshape(-1, resolution, 12).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        chroma = chroma / chroma.sum(1, keepdims=True)
    return chroma @ _tonal_matrix().T


def centroid_distance(ca: np.ndarray, cb: np.ndarray) -> float:
    """Mean over beats where both tracks sound of the distance between their `tonal_centroids`."""
    both = np.isfinite(ca).all(1) & np.isfinite(cb).all(1)
    return float(np.linalg.norm(ca[both] - cb[both], axis=1).mean()) if both.any() else float("nan")


def tonal_distance(a: np.ndarray, b: np.ndarray, resolution: int) -> float:
    """Mean over beats (where both tracks sound) of the distance between tonal centroids
    (Harte et al. 2006), using pypianoroll's tonal matrix and chroma folding."""
    return centroid_distance(tonal_centroids(a, resolution), tonal_centroids(b, resolution))


def track_metrics(roll: np.ndarray, rep: RepresentationParams, is_drum: bool,
                  layout: np.ndarray | None = None) -> dict[str, float]:
    """MuseGAN metrics of one track of one phrase. EB comes from pypianoroll's empty_beat_rate
    with one "beat" = one bar; pypianoroll 1.0.4 counts the *non-empty* beats there
    (`reshaped.any(1)`), so EB = 1 - its value. UPC: pitch classes used per bar, bar mean.
    A drum track gets EB and DP only, as in MuseGAN: its "pitches" are instruments, so pitch
    classes, qualified notes (hits are short) and polyphony would average noise into the
    pitched tracks' figures. `layout`: the roll's `octave_layout` when the caller has it."""
    spb = rep.steps_per_bar
    out = {"empty_bar_rate": 1.0 - _pm().empty_beat_rate(roll, resolution=spb)}
    if is_drum:
        if roll.any():
            out["drum_in_pattern_rate"] = drum_in_pattern_rate(roll, rep.beat_resolution)
        return {k: float(v) for k, v in out.items()}
    layout = octave_layout(roll) if layout is None else layout
    upc = [n_pitch_classes_used(roll[i : i + spb], layout[i : i + spb]) for i in range(0, len(roll), spb)]
    out["n_pitch_classes_used"] = float(np.mean(upc))
    if roll.any():
        out["qualified_note_rate"] = qualified_note_rate(roll, threshold=2)
        out["polyphonic_rate"] = _pm().polyphonic_rate(roll, threshold=2)
    return {k: float(v) for k, v in out.items()}


def drum_in_pattern_rate(roll: np.ndarray, resolution: int, tolerance: float = 0.1) -> float:
    """pypianoroll's DP, called one beat at a time and weighted by the beat's active cells.

    pypianoroll 1.0.4 multiplies its one-beat pattern mask (`resolution` steps) with the per-step
    note counts of the whole roll, which only broadcasts for a roll one beat long.
    """
    beats = roll[: len(roll) // resolution * resolution].reshape(-1, resolution, roll.shape[1])
    in_pattern, total = 0.0, 0
    for beat in beats:
        n = int(np.count_nonzero(beat))
        if n:
            in_pattern += _pm().drum_in_pattern_rate(beat, resolution, tolerance) * n
            total += n
    return in_pattern / total if total else float("nan")


def qualified_note_rate(roll: np.ndarray, threshold: int = 2) -> float:
    """pypianoroll's QN over all pitches, each note paired with its own offset.

    pypianoroll 1.0.4 flattens the roll time-major before pairing onsets with offsets, which
    mispairs overlapping notes of different pitches, and wraps around on uint8 input. So it is
    called on one int8 column: the active pitch columns end to end, a silent step after each, so
    every note starts and ends inside its own pitch's stretch and the pairing is exact. Its rate
    (qualified notes / notes) is the onset-weighted mean of the per-pitch rates; the per-pitch
    form (`qualified_note_rate_per_pitch`) is used when that weighted sum would not round to the
    same float (a pitch with an onset count `n` where `q / n * n != q`, e.g. 22 onsets).
    """
    cols = roll[:, np.flatnonzero(roll.any(axis=0))].astype(np.int8).T  # [pitches, steps]
    if not cols.size:
        return float("nan")
    onsets = np.count_nonzero(cols[:, 1:] > cols[:, :-1], axis=1) + (cols[:, 0] > 0)
    if not all(_weight_is_exact(n) for n in set(onsets.tolist())):
        return qualified_note_rate_per_pitch(roll, threshold)
    chained = np.zeros((len(cols), roll.shape[0] + 1), dtype=np.int8)  # a silent step after each
    chained[:, :-1] = cols
    return float(_pm().qualified_note_rate(chained.reshape(-1, 1), threshold=threshold))


def qualified_note_rate_per_pitch(roll: np.ndarray, threshold: int = 2) -> float:
    """pypianoroll's QN called one pitch column (as int8) at a time, the per-pitch rates
    weighted by onset counts: the definition `qualified_note_rate` reproduces in one call."""
    qualified, onsets = 0.0, 0
    for pitch in np.flatnonzero(roll.any(axis=0)):
        col = roll[:, [pitch]].astype(np.int8)
        n = int(np.count_nonzero(np.diff(col[:, 0], prepend=0) > 0))
        qualified += _pm().qualified_note_rate(col, threshold=threshold) * n
        onsets += n
    return qualified / onsets if onsets else float("nan")


@functools.cache
def _weight_is_exact(n: int) -> bool:
    """Whether `(q / n) * n == q` in floats for every count `q <= n` of qualified notes: then the
    per-pitch weighted sum is an exact integer and one call gives the same float."""
    q = np.arange(n + 1)
    return n == 0 or bool(np.all(q / n * n == q))


def musegan_per_phrase(
    phrases: np.ndarray, track_names: Sequence[str], drum_flags: Sequence[bool], rep: RepresentationParams
) -> dict[str, np.ndarray]:
    """`{metric/track or tonal_distance/a-b: [N] values}` per phrase, NaN where a phrase does not
    define it (no notes, a drum metric of a pitched track): what a bootstrap resamples."""
    n = len(phrases)
    per: dict[str, np.ndarray] = {}

    def put(key: str, i: int, value: float) -> None:
        per.setdefault(key, np.full(n, np.nan))[i] = value

    pitched = [not d for d in drum_flags]
    for i, phrase in enumerate(phrases):
        rolls = [full_roll(phrase[k], rep) for k in range(len(track_names))]
        layouts = [None if drum else octave_layout(roll) for roll, drum in zip(rolls, drum_flags, strict=True)]
        for name, roll, layout, drum in zip(track_names, rolls, layouts, drum_flags, strict=True):
            for key, value in track_metrics(roll, rep, drum, layout).items():
                put(f"{key}/{name}", i, value)
        centroids = [tonal_centroids(roll, rep.beat_resolution, layout) if pitch and roll.any() else None
                     for roll, layout, pitch in zip(rolls, layouts, pitched, strict=True)]
        for (a_i, ca), (b_i, cb) in itertools.combinations(enumerate(centroids), 2):
            if ca is None or cb is None:  # a drum track, or a silent one
                continue
            td = centroid_distance(ca, cb)
            if np.isfinite(td):
                put(f"tonal_distance/{track_names[a_i]}-{track_names[b_i]}", i, float(td))
    return dict(sorted(per.items()))


def aggregate_metrics(per: dict[str, np.ndarray], index: np.ndarray | None = None) -> dict[str, float]:
    """Per-track means over the phrases at `index` (default all) where defined (`metric/track`),
    then the track mean (`metric`); a key no selected phrase defines is left out."""
    out = {}
    for key, values in per.items():
        picked = values if index is None else values[index]
        picked = picked[np.isfinite(picked)]
        if picked.size:
            out[key] = float(picked.mean())
    for metric in {k.split("/")[0] for k in out}:
        values = [v for k, v in out.items() if k.startswith(metric + "/")]
        out[metric] = float(np.mean(values))
    return dict(sorted(out.items()))


def _prf(tp: int, n_pred: int, n_true: int) -> dict[str, float]:
    """Precision / recall / F1; an empty prediction of an empty truth scores 1."""
    if n_pred == 0 and n_true == 0:
        return {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def frame_prf(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Cell-level (frame) precision / recall / F1 of a binarized reconstruction."""
    pred, truth = np.asarray(pred).astype(bool), np.asarray(truth).astype(bool)
    return _prf(int(np.logical_and(pred, truth).sum()), int(pred.sum()), int(truth.sum()))


def note_prf(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Note-level precision / recall / F1 of reconstructed code phrases `[N, T, B, S, P]`: a
    predicted note is correct when a true note of the same phrase, track and pitch starts at the
    same step (offsets are ignored, as in transcription's onset-only F1)."""
    if np.shape(pred) != np.shape(truth):
        raise ValueError(f"prediction {np.shape(pred)} and truth {np.shape(truth)} differ in shape")
    p_on, t_on = onsets_np(pred), onsets_np(truth)
    return _prf(int(np.logical_and(p_on, t_on).sum()), int(p_on.sum()), int(t_on.sum()))


def note_counts(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """`[N, 3]` per phrase: correct notes, predicted notes, true notes (note_prf's counts, kept per
    phrase so a resample of phrases gives the same micro F1 as `note_prf` on those phrases)."""
    if np.shape(pred) != np.shape(truth):
        raise ValueError(f"prediction {np.shape(pred)} and truth {np.shape(truth)} differ in shape")
    p_on, t_on = onsets_np(pred), onsets_np(truth)
    axes = tuple(range(1, p_on.ndim))
    return np.stack([np.logical_and(p_on, t_on).sum(axes), p_on.sum(axes), t_on.sum(axes)], 1).astype(np.int64)


def prf_from_counts(counts: np.ndarray) -> dict[str, float]:
    """Micro note precision / recall / F1 of `note_counts` rows (summed first): `note_prf` of
    those phrases, without recomputing their onsets."""
    tp, n_pred, n_true = (int(v) for v in np.asarray(counts).sum(0))
    return _prf(tp, n_pred, n_true)


def f1_from_counts(counts: np.ndarray) -> float:
    """Micro note F1 of `note_counts` rows (summed first, as note_prf counts)."""
    return prf_from_counts(counts)["f1"]


def pairwise_note_f1(a: np.ndarray, b: np.ndarray, chunk: int = 512) -> np.ndarray:
    """`[len(a), len(b)]` note F1 of every phrase of `a` against every phrase of `b`."""
    fa = onsets_np(a).reshape(len(a), -1).astype(np.float32)
    na = fa.sum(1, keepdims=True)
    out = np.zeros((len(a), len(b)), dtype=np.float64)
    for i in range(0, len(b), chunk):
        fb = onsets_np(b[i : i + chunk]).reshape(len(b[i : i + chunk]), -1).astype(np.float32)
        inter = fa @ fb.T
        total = na + fb.sum(1)[None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, i : i + chunk] = np.where(total > 0, 2 * inter / total, 1.0)
    return out


def diversity(generated: np.ndarray) -> dict[str, float]:
    """Share of distinct generated phrases and their mean pairwise note F1 (lower: more varied)."""
    flat = np.asarray(generated).reshape(len(generated), -1)
    unique = len({row.tobytes() for row in flat})
    pair = pairwise_note_f1(generated, generated)
    off = pair[~np.eye(len(generated), dtype=bool)]
    return {"diversity.unique_fraction": unique / len(generated),
            "diversity.mean_pairwise_note_f1": float(off.mean()) if off.size else 0.0}


def nearest_train_f1(generated: np.ndarray, train: np.ndarray) -> float:
    """The worst case of copying: over generated phrases, the best note F1 against any training phrase."""
    return float(pairwise_note_f1(generated, train).max()) if len(train) else 0.0


@dataclass(frozen=True)
class CellBaseline:
    """The average-cell predictor: every phrase gets the onsets whose training frequency is above
    `threshold` (chosen on validation). What a model that ignores its input can reach."""

    frequency: np.ndarray  # [T, B, S, P] share of training phrases with an onset in the cell
    threshold: float

    def predict(self, n: int) -> np.ndarray:
        cell = (self.frequency > self.threshold).astype(np.uint8) * 2
        return np.broadcast_to(cell, (n, *cell.shape))


def fit_cell_baseline(train: np.ndarray, val: np.ndarray) -> CellBaseline:
    """Onset frequencies on `train`; the threshold with the best note F1 on `val`."""
    frequency = onsets_np(train).mean(0)
    seen = frequency[frequency > 0]
    # 0.0 predicts every cell ever seen; the quantiles of the seen frequencies the sparser ones
    candidates = np.unique(np.concatenate([[0.0], np.quantile(seen, np.linspace(0, 0.999, 60))])) \
        if seen.size else np.array([0.0])
    target = val if len(val) else train
    best = max(candidates, key=lambda t: note_prf(CellBaseline(frequency, t).predict(len(target)),
                                                  target)["f1"])
    return CellBaseline(frequency, float(best))
