"""Statistics of a set of monophonic voices (SATB chorales): what voice leading looks like.

Defined only when every track is monophonic and there are at least two (the track order is the
voices' order, highest first, as in params.yaml). Per phrase, NaN where undefined:
- `voice_range_adherence/<voice>`: share of the voice's notes inside its range, the range being
  the 1st..99th percentile of the voice's onset pitches in the training data;
- `voice_crossing_rate/<upper>-<lower>`: of the steps where both adjacent voices sound, the share
  where the upper one is below the lower one;
- `parallel_motion_rate/<a>-<b>`: of the steps where both voices of a pair move (both sound
  before and after, both pitches change, in the same direction), the share that keeps a perfect
  fifth or an octave/unison (interval mod 12 of 7 or 0) on both sides: parallel fifths/octaves.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from lpdvae.data.codes import onsets_np

RANGE_QUANTILES = (0.01, 0.99)


def is_voice_set(kinds: Sequence[str]) -> bool:
    return len(kinds) >= 2 and all(k == "monophonic" for k in kinds)


def sounding_pitch(codes: np.ndarray) -> np.ndarray:
    """`[N, T, B*S]` the highest sounding pitch per step (-1 when silent) of `[N, T, B, S, P]` codes."""
    n, t, b, s, p = codes.shape
    active = codes.reshape(n, t, b * s, p) > 0
    top = p - 1 - active[..., ::-1].argmax(-1)
    return np.where(active.any(-1), top, -1)


def voice_ranges(train: np.ndarray) -> np.ndarray:
    """`[T, 2]` each voice's pitch range (row numbers) from training phrases' onsets."""
    ranges = np.zeros((train.shape[1], 2))
    on = onsets_np(train)
    for t in range(train.shape[1]):
        pitches = np.nonzero(on[:, t])[-1]
        ranges[t] = np.quantile(pitches, RANGE_QUANTILES) if pitches.size else (0, train.shape[-1] - 1)
    return ranges


def _ratio(hits: np.ndarray, cases: np.ndarray) -> np.ndarray:
    """Per phrase hits / cases over the last axis; NaN without cases."""
    n_cases = cases.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_cases > 0, (hits & cases).sum(-1) / n_cases, np.nan)


def voice_per_phrase(codes: np.ndarray, names: Sequence[str], ranges: np.ndarray) -> dict[str, np.ndarray]:
    """The three statistics above per phrase, keyed `statistic/voice(s)`."""
    out: dict[str, np.ndarray] = {}
    pitch = sounding_pitch(codes)
    n, t, b, s, p = codes.shape
    on = onsets_np(codes).reshape(n, t, b * s, p)
    for v, name in enumerate(names):
        rows = np.arange(p)
        inside = (rows >= ranges[v, 0]) & (rows <= ranges[v, 1])
        notes = on[:, v].sum((1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"voice_range_adherence/{name}"] = np.where(notes > 0, (on[:, v] & inside).sum((1, 2)) / notes, np.nan)
    for hi, lo in zip(range(t - 1), range(1, t), strict=True):
        both = (pitch[:, hi] >= 0) & (pitch[:, lo] >= 0)
        out[f"voice_crossing_rate/{names[hi]}-{names[lo]}"] = _ratio(pitch[:, hi] < pitch[:, lo], both)
    for a, c in itertools.combinations(range(t), 2):
        out[f"parallel_motion_rate/{names[a]}-{names[c]}"] = _parallel(pitch[:, a], pitch[:, c])
    return dict(sorted(out.items()))


def _parallel(pa: np.ndarray, pb: np.ndarray) -> np.ndarray:
    """Per phrase share of similar motions of two voices `[N, steps]` that are parallel 5ths/8ves."""
    before_a, after_a, before_b, after_b = pa[:, :-1], pa[:, 1:], pb[:, :-1], pb[:, 1:]
    sounding = (before_a >= 0) & (after_a >= 0) & (before_b >= 0) & (after_b >= 0)
    step_a, step_b = after_a - before_a, after_b - before_b
    similar = sounding & (step_a != 0) & (step_b != 0) & (np.sign(step_a) == np.sign(step_b))
    i_before, i_after = (before_a - before_b) % 12, (after_a - after_b) % 12
    perfect = (i_before == i_after) & ((i_before == 0) | (i_before == 7))
    return _ratio(perfect, similar)
