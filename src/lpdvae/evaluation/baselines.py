"""Cheap predictors a model must beat: each maps an input phrase to a reconstruction, scored
per phrase with the project's own note counts (`metrics.note_counts`).

- `average_cell`: the same phrase for every input (`metrics.fit_cell_baseline`); uses 0 bits.
- `copy`: the training phrase closest to the input (note F1), shifted by the transposition
  within +-`transpose` semitones that matches best: a lookup table.
- `copy_per_voice`: the same, one track at a time (each track its own phrase and shift).
- `repeat_bar`: bar k is predicted from the input's bar k-1, and bar 0 from the input's bar 1,
  so no bar is predicted from itself (copying bar 0 from the input would score it perfectly).

The copies' search is `lpdvae.data.nearest`. `information_bits` is what each predictor takes
from its input.
"""

from __future__ import annotations

import math

import numpy as np

from lpdvae.data.codes import onsets_np
from lpdvae.data.nearest import nearest, shift_pitches
from lpdvae.evaluation.metrics import CellBaseline, note_counts

BASELINES = ("average_cell", "copy", "copy_per_voice", "repeat_bar")


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
