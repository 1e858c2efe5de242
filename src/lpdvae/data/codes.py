"""Note codes: how a phrase says which notes start and which are held.

A phrase is uint8 `[..., T, B, S, P]` (tracks, bars, steps per bar, pitches) with 0 = silent,
1 = sustain (a note that started earlier is still sounding), 2 = onset (a note starts here). So
two consecutive notes of one pitch stay two notes, which a 0/1 roll would merge. A cell that is
sounding without a sounding predecessor is an onset whatever its code says (a note cut at a
phrase start), so `onsets` is the one place that reads them.

Monophonic tracks are also seen as one class per step: `onset at pitch p` (0..P-1), HOLD (P),
REST (P+1); `mono_classes` / `mono_to_codes` convert both ways (a chord in a monophonic track
keeps its highest onset).

torch is imported inside the torch functions only, so the music package (validate, ingest) takes
the code values from here without loading torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

SILENT, SUSTAIN, ONSET = 0, 1, 2


def onsets_np(codes: np.ndarray) -> np.ndarray:
    """bool `[..., B, S, P]`: where a note starts (explicit onsets and notes cut at the start)."""
    codes = np.asarray(codes)
    *lead, b, s, p = codes.shape
    flat = codes.reshape(*lead, b * s, p)
    active = flat > 0
    prev = np.concatenate([np.zeros_like(active[..., :1, :]), active[..., :-1, :]], axis=-2)
    return ((flat == ONSET) | (active & ~prev)).reshape(codes.shape)


def onsets(codes: Tensor) -> Tensor:
    """torch twin of `onsets_np`."""
    import torch

    *lead, b, s, p = codes.shape
    flat = codes.reshape(*lead, b * s, p)
    active = flat > 0
    prev = torch.cat([torch.zeros_like(active[..., :1, :]), active[..., :-1, :]], dim=-2)
    return ((flat == ONSET) | (active & ~prev)).reshape(codes.shape)


def planes(codes: Tensor, stacked: bool = False) -> Tensor:
    """float planes of `[N, T, B, S, P]` codes: `[N, 2T, B, S, P]` (active, onset per track), or
    with `stacked` `[N, T, B, S, P, 2]` (onset, active: the Bernoulli heads' order)."""
    import torch

    active = (codes > 0).float()
    onset = onsets(codes).float()
    if stacked:
        return torch.stack([onset, active], dim=-1)
    n, t = codes.shape[:2]
    return torch.stack([active, onset], dim=2).reshape(n, 2 * t, *codes.shape[2:])


def mono_classes(codes: Tensor) -> Tensor:
    """`[..., B, S, P]` codes -> long `[..., B, S]`: the highest onset pitch, else HOLD, else REST."""
    import torch

    p = codes.shape[-1]
    on = onsets(codes)
    has_on = on.any(-1)
    top = highest_pitch(on)
    held = (codes > 0).any(-1)
    rest = torch.full_like(top, p + 1)
    return torch.where(has_on, top, torch.where(held, torch.full_like(top, p), rest))


def highest_pitch(cells: Tensor) -> Tensor:
    """long `[...]`: the highest pitch set in bool `[..., P]` (P - 1 where none is: mask it), the
    one pitch a monophonic track keeps of a chord."""
    import torch

    return cells.shape[-1] - 1 - cells.flip(-1).to(torch.uint8).argmax(-1)


def mono_to_codes(classes: Tensor, n_pitches: int) -> Tensor:
    """long `[..., B, S]` classes -> uint8 codes `[..., B, S, P]`; a HOLD after a rest is a rest."""
    import torch

    *lead, b, s = classes.shape
    flat = classes.reshape(-1, b * s)
    out = torch.zeros((flat.shape[0], b * s, n_pitches), dtype=torch.uint8, device=classes.device)
    current = torch.full((flat.shape[0],), -1, dtype=torch.long, device=classes.device)
    rows = torch.arange(flat.shape[0], device=classes.device)
    for t in range(b * s):
        c = flat[:, t]
        is_onset = c < n_pitches
        current = torch.where(is_onset, c, torch.where(c == n_pitches, current,
                                                       torch.full_like(c, -1)))
        sounding = current >= 0
        out[rows[sounding], t, current[sounding]] = SUSTAIN
        out[rows[is_onset], t, c[is_onset]] = ONSET
    return out.reshape(*lead, b, s, n_pitches)


def transpose(codes: Tensor, shifts: Tensor) -> Tensor:
    """Shift each phrase of `[N, T, B, S, P]` codes by `shifts[i]` semitones (notes pushed past
    the pitch range are dropped): the augmentation `train.transpose` asks for."""
    import torch

    p = codes.shape[-1]
    out = torch.zeros_like(codes)
    for i, k in enumerate(shifts.tolist()):
        if k >= 0:
            out[i, ..., k:] = codes[i, ..., : p - k]
        else:
            out[i, ..., : p + k] = codes[i, ..., -k:]
    return out
