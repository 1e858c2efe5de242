"""The training phrase closest to each phrase: note F1 of onsets, over transpositions.

The search is a matrix product of flattened onset planes, the training set taken in chunks so
memory stays bounded; transposing the *input* by -k instead of each training phrase by +k gives
the same intersections (a note shifted out of range matches nothing either way) and costs one
shift of the small side. The copy baselines (`lpdvae.evaluation.baselines`), the copy check and
the choice of the latent kernel density's width (`lpdvae.training.loop`) all read it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lpdvae.data.codes import onsets_np

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
