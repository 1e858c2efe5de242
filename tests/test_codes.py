"""Note codes (0 silent, 1 sustain, 2 onset): onsets, the monophonic class view and its inverse,
the input planes, and transposition."""

from __future__ import annotations

import numpy as np
import torch

from lpdvae.data.codes import (
    ONSET,
    SILENT,
    SUSTAIN,
    mono_classes,
    mono_to_codes,
    onsets,
    onsets_np,
    planes,
    transpose,
)

B, S, P = 2, 8, 6
HOLD, REST = P, P + 1


def track(*notes: tuple[int, int, int]) -> torch.Tensor:
    """One track's codes `[B, S, P]` from (start step, length, pitch) notes: an onset, then sustains."""
    x = torch.zeros(B * S, P, dtype=torch.uint8)
    for start, length, pitch in notes:
        x[start : start + length, pitch] = SUSTAIN
        x[start, pitch] = ONSET
    return x.view(B, S, P)


def test_repeated_notes_keep_their_onsets():
    x = track((0, 3, 2), (3, 2, 2))  # the same pitch struck twice without a gap
    assert onsets(x).view(-1, P)[:, 2].nonzero().flatten().tolist() == [0, 3]
    classes = mono_classes(x).flatten().tolist()
    assert classes[:6] == [2, HOLD, HOLD, 2, HOLD, REST]
    assert torch.equal(mono_to_codes(mono_classes(x), P), x)


def test_mono_classes_round_trip_monophonic_codes():
    x = torch.stack([track((0, 4, 1), (4, 1, 5), (6, 6, 0), (13, 3, 3)),  # held over the barline at 8
                     track((1, 2, 4), (3, 2, 4), (10, 1, 2)),
                     track()])  # silence
    classes = mono_classes(x)
    assert classes.shape == (3, B, S) and classes.dtype == torch.long
    assert torch.equal(mono_to_codes(classes, P), x)
    assert (mono_classes(track()) == REST).all()


def test_a_note_cut_at_the_phrase_start_is_an_onset():
    x = track((0, 3, 4))
    x[x == ONSET] = SUSTAIN  # the note began before the phrase: sustain codes only
    assert onsets(x).view(-1, P)[0, 4]
    assert onsets(x).sum() == 1
    assert mono_classes(x).flatten()[:4].tolist() == [4, HOLD, HOLD, REST]
    assert torch.equal(mono_to_codes(mono_classes(x), P), track((0, 3, 4)))


def test_a_sustain_after_silence_starts_a_note_anywhere():
    x = torch.zeros(B * S, P, dtype=torch.uint8)
    x[5:7, 1] = SUSTAIN  # no onset code, nothing sounding before it
    assert onsets(x.view(B, S, P)).view(-1, P)[:, 1].nonzero().flatten().tolist() == [5]


def test_onsets_in_torch_and_numpy_agree():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 3, (4, 3, B, S, P)).astype(np.uint8)
    assert np.array_equal(onsets(torch.from_numpy(codes)).numpy(), onsets_np(codes))


def test_a_hold_after_a_rest_decodes_to_a_rest():
    classes = torch.full((B, S), REST)
    classes.view(-1)[3] = HOLD
    assert not mono_to_codes(classes, P).any()


def test_a_chord_in_a_monophonic_track_keeps_its_highest_onset():
    x = track((0, 2, 1), (0, 2, 4))
    assert mono_classes(x).flatten()[:3].tolist() == [4, HOLD, REST]


def test_planes_give_activity_and_onsets_per_track():
    x = torch.stack([track((0, 3, 2), (3, 2, 2)), track((8, 1, 0))]).unsqueeze(0)  # [1, 2, B, S, P]
    flat = planes(x)
    assert flat.shape == (1, 4, B, S, P) and flat.dtype == torch.float32
    assert torch.equal(flat[0, 0], (x[0, 0] > 0).float())  # track 0 activity
    assert torch.equal(flat[0, 1], onsets(x[0, 0]).float())  # track 0 onsets
    assert torch.equal(flat[0, 2], (x[0, 1] > 0).float())
    stacked = planes(x, stacked=True)
    assert stacked.shape == (1, 2, B, S, P, 2)
    assert torch.equal(stacked[..., 0], onsets(x).float()) and torch.equal(stacked[..., 1], (x > 0).float())


def test_transpose_shifts_each_phrase_and_drops_notes_past_the_range():
    x = torch.stack([track((0, 2, 0), (2, 2, 5)), track((0, 2, 3))]).unsqueeze(1)  # [2, 1, B, S, P]
    out = transpose(x, torch.tensor([2, -3]))
    assert torch.equal(out[0, 0], track((0, 2, 2)))  # pitch 5 + 2 leaves the 6-pitch range
    assert torch.equal(out[1, 0], track((0, 2, 0)))
    assert torch.equal(transpose(x, torch.tensor([0, 0])), x)
    assert out.dtype == torch.uint8 and set(out.unique().tolist()) <= {SILENT, SUSTAIN, ONSET}
