"""Cheap predictors a model must beat: each maps an input phrase to a reconstruction, scored
per phrase with the project's own note counts (`metrics.note_counts`).

- `average_cell`: the same phrase for every input (`metrics.fit_cell_baseline`); uses 0 bits.
- `copy`: the training phrase closest to the input (note F1), shifted by the transposition
  within +-`transpose` semitones that matches best: a lookup table.
- `copy_per_voice`: the same, one track at a time (each track its own phrase and shift).
- `repeat_bar`: bar k is predicted from the input's bar k-1, and bar 0 from the input's bar 1,
  so no bar is predicted from itself (copying bar 0 from the input would score it perfectly).

The search is a matrix product of flattened onset planes, the training set taken in chunks so
memory stays bounded; transposing the *input* by -k instead of each training phrase by +k gives
the same intersections (a note shifted out of range matches nothing either way) and costs one
shift of the small side. `information_bits` is what each predictor takes from its input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lpdvae.data.codes import onsets_np
from lpdvae.evaluation.metrics import CellBaseline, note_counts

BASELINES = ("average_cell", "copy", "copy_per_voice", "repeat_bar")
CHUNK = 512  # training phrases per matrix product: [inputs x shifts, CHUNK] scores at a time


def shift_pitches(codes: np.ndarray, k: int) -> np.ndarray:
    """`[..., P]` codes moved up `k` semitones (down for k < 0); notes pushed out of range drop."""
    out = np.zeros_like(codes)
    p = codes.shape[-1]
    if k >= 0:
        out[..., k:] = codes[..., : p - k]
    else:
        out[..., : p + k] = codes[..., -k:]
    return out


@dataclass(frozen=True)
class Match:
    """For each input: the closest training phrase, its shift and note F1."""

    index: np.ndarray  # [N] training phrase
    shift: np.ndarray  # [N] semitones the training phrase is moved up
    f1: np.ndarray  # [N] note F1 of input vs shifted training phrase


def nearest(x: np.ndarray, train: np.ndarray, transpose: int, chunk: int = CHUNK) -> Match:
    """The training phrase (and shift in -transpose..transpose) with the best note F1 to each
    phrase of `x` (`[N, ...,  P]` codes, any leading layout shared by both). Ties: the first
    training phrase, then the smallest shift |k| listed first (0, -1, 1, ...)."""
    shifts = sorted(range(-transpose, transpose + 1), key=lambda k: (abs(k), k))
    n, p = len(x), x.shape[-1]
    best = Match(np.zeros(n, np.int64), np.zeros(n, np.int64), np.full(n, -1.0))
    if not len(train) or not n:
        return Match(best.index, best.shift, np.zeros(n))
    on_x = onsets_np(x)
    # inputs moved by -k meet training phrases where the shifted training phrase would meet x
    moved = np.stack([shift_pitches(on_x, -k) for k in shifts], 1).reshape(n * len(shifts), -1)
    moved = moved.astype(np.float32)
    n_x = on_x.reshape(n, -1).sum(1).astype(np.float64)
    for start in range(0, len(train), chunk):
        on_t = onsets_np(train[start : start + chunk])
        per_pitch = on_t.reshape(len(on_t), -1, p).sum(1)  # [M, P] onsets per pitch
        kept = np.stack([_kept_after_shift(per_pitch, k) for k in shifts], 1)  # [M, shifts]
        inter = (moved @ on_t.reshape(len(on_t), -1).astype(np.float32).T).reshape(n, len(shifts), -1)
        total = n_x[:, None, None] + kept.T[None, :, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.where(total > 0, 2 * inter / total, 1.0)  # [N, shifts, M]
        flat = f1.transpose(0, 2, 1).reshape(n, -1)  # training phrase major: first phrase wins ties
        arg = flat.argmax(1)
        score = flat[np.arange(n), arg]
        better = score > best.f1
        best = Match(np.where(better, start + arg // len(shifts), best.index),
                     np.where(better, np.asarray(shifts)[arg % len(shifts)], best.shift),
                     np.where(better, score, best.f1))
    return best


def _kept_after_shift(per_pitch: np.ndarray, k: int) -> np.ndarray:
    """Onsets of each training phrase still in range after moving it up `k` semitones."""
    p = per_pitch.shape[1]
    return per_pitch[:, : p - k].sum(1) if k >= 0 else per_pitch[:, -k:].sum(1)


def copy_predict(x: np.ndarray, train: np.ndarray, transpose: int) -> np.ndarray:
    """The `copy` baseline's reconstruction of each phrase of `x` (`[N, T, B, S, P]` codes)."""
    m = nearest(x, train, transpose)
    return np.stack([shift_pitches(train[i], int(k)) for i, k in zip(m.index, m.shift, strict=True)]) \
        if len(x) else np.zeros_like(x)


def copy_per_voice_predict(x: np.ndarray, train: np.ndarray, transpose: int) -> np.ndarray:
    """`copy` for each track on its own: track t of the training phrase closest in track t."""
    out = np.zeros_like(x)
    for t in range(x.shape[1]):
        out[:, t] = copy_predict(x[:, t : t + 1], train[:, t : t + 1], transpose)[:, 0]
    return out


def repeat_bar_predict(x: np.ndarray) -> np.ndarray:
    """Bar k from the input's bar k-1; bar 0 from bar 1 (a one-bar phrase: silence)."""
    out = np.zeros_like(x)
    if x.shape[2] > 1:
        out[:, :, 1:] = x[:, :, :-1]
        out[:, :, 0] = x[:, :, 1]
    return out


def predictions(x: np.ndarray, train: np.ndarray, cell: CellBaseline, transpose: int) -> dict[str, np.ndarray]:
    """Every baseline's reconstruction of `x`, by name (`BASELINES`)."""
    return {"average_cell": np.asarray(cell.predict(len(x))),
            "copy": copy_predict(x, train, transpose),
            "copy_per_voice": copy_per_voice_predict(x, train, transpose),
            "repeat_bar": repeat_bar_predict(x)}


def baseline_counts(x: np.ndarray, train: np.ndarray, cell: CellBaseline, transpose: int) -> dict[str, np.ndarray]:
    """`{baseline: [N, 3] note counts}` of each baseline on `x` (what the song bootstrap resamples)."""
    return {name: note_counts(pred, x) for name, pred in predictions(x, train, cell, transpose).items()}


def information_bits(x: np.ndarray, n_train: int, transpose: int) -> dict[str, float]:
    """Bits each predictor takes from its input, per phrase. The copies name one training phrase
    and one shift (per track for `copy_per_voice`); `repeat_bar` copies the notes of the bars it
    reads (every bar but the last, and bar 1), each at most log2(steps x pitches) bits to place in
    its bar: an upper bound, the mean over `x`."""
    choices = max(n_train, 1) * (2 * transpose + 1)
    n, t, b, s, p = x.shape
    read = sorted(set(range(b - 1)) | ({1} if b > 1 else set()))
    copied = onsets_np(x)[:, :, read].reshape(n, -1).sum(1) if n else np.zeros(1)
    return {"average_cell": 0.0, "copy": math.log2(choices), "copy_per_voice": t * math.log2(choices),
            "repeat_bar": float(np.mean(copied)) * math.log2(s * p)}
