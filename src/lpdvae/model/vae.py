"""The hierarchical convolutional-recurrent VAE over multitrack phrases of note codes.

Phrases are uint8 codes `[N, T, B, S, P]` (tracks, bars, steps per bar, pitches): 0 silent,
1 sustain, 2 onset (`lpdvae.data.codes`). Encoder: dilated convolutions read the phrase step by step
(each track's activity and onset planes side by side), flattened into mu and log sigma^2 of the
phrase's z, and per bar, from that bar's merged steps, of the bar's own z (`model.bar_latent_dim`).
Decoder: a "conductor" GRU unrolls the phrase's z into one embedding per bar; with the bar's own z,
dilated convolutions over the bar's steps turn each into per-step features, and each track gets
the output distribution its kind needs (`tracks[].kind` in params.yaml):

- monophonic: a categorical per step over `onset at pitch p` (P classes), hold, rest, factorised
  as an event (onset / hold / rest) times the onset's pitch. The pitch head is also trained on
  every held step (`train.hold_pitch_weight`): the pitch a voice sounds changes slowly, so dense
  supervision teaches it faster than the onsets alone (docs/decisions.md). With
  `model.voice_chain` the voices are drawn jointly, in track order within each step (soprano
  first for SATB), as BachBot serialises a step's voices top-down, and step by step: voice v's
  head also sees the voices < v at the same step and every voice at the step before, through
  interval tables (`VoiceChain`). Training is teacher-forced (the true voices); sampling draws
  and reconstruction decides step by step, voice by voice;
- polyphonic / drums: a Bernoulli onset and sustain per cell, each cell given z, its own state
  at the step before (`CellChain`: whether it sounded, was struck, and for how long its note has
  lasted), the cells up to two octaves below it at its own step (the chord so far) and the
  pitch classes sounded earlier in its bar (the bar's harmony so far), in every such track.
  Without these, cells drawn independently given z break held notes, thin chords
  and let tracks disagree on the harmony; trained teacher-forced, decoded step by step and pitch
  by pitch upwards. Whether such a track is silent through a bar is decided first, per bar
  (`BarSilence`): a silent bar's cells are all off, a sounding bar's cells are drawn as above.

With `model.bar_harmony` each bar's pitch-class set is decided before its notes, once for every
pitched track (`BarHarmony`), and their onsets, sustains and held notes stay inside it. With
`model.track_presence` which tracks play in the phrase is decided before anything else, track by
track (`TrackPresence`): a track that does not play is silent in every bar (a polyphonic track's
bars all silent, a monophonic track's steps all rests).

Decoding follows from the distribution (the most likely class / cell), never from a tuned
threshold.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lpdvae.data.codes import mono_classes, mono_to_codes, planes
from lpdvae.model.heads import (
    EVENTS,
    OFF,
    BarHarmony,
    BarSilence,
    CellChain,
    TrackPresence,
    VoiceChain,
    bar_pitch_sets,
    next_cells,
    next_state,
    pitch_classes,
    rests_only,
    silent_bars,
    tracks_playing,
)
from lpdvae.model.prior import BarPrior, KernelDensity, LatentPrior, kl_per_sample_dim
from lpdvae.params import TRACK_KINDS, ModelParams, RepresentationParams

log = logging.getLogger(__name__)

MONO = "monophonic"
_ONSET_BIAS = -4.0  # Bernoulli heads start near the sparsity of piano rolls
_CERTAIN = -OFF  # the silence logit of a bar of a track decided not to play: silent at any temperature
ARRANGEMENT_POOL = 8  # z's drawn per phrase generated, to resample their arrangements to the training rates

# (mono log-probs [N, Tm, B, S, P+2], poly logits [N, Tp, B, S, P, 2], poly bar-silence logits [N, Tp, B],
#  bar harmony logits [N, B, 12], or [N, B, 0] without `BarHarmony`,
#  track presence logits [N, T], or [N, 0] without `TrackPresence`)
Outputs = tuple[Tensor, Tensor, Tensor, Tensor, Tensor]
# (log-probs [N, P+2] of voice v at step t, v, t) -> its classes [N]; t None: every step at once
# ([N, L, P+2] -> [N, L]), when the voices are independent given z
Pick = Callable[[Tensor, int, int | None], Tensor]
# (the polyphonic tracks' logits at step t and pitch q [N, Tp, 2], t, q) -> the cells taken (bool, same shape)
CellPick = Callable[[Tensor, int, int], Tensor]
# (the polyphonic tracks' bar-silence logits of bar b [N, Tp], b) -> the tracks silent through it (bool);
# also a bar's pitch class (logits [N]) and, at b = -1, whether a track plays in the phrase (logits [N])
BarPick = Callable[[Tensor, int], Tensor]


class ResidualConv(nn.Module):
    """`[M, L, C]` -> the same plus GELU(conv over L of LayerNorm(x)): one dilated residual block.

    The kernel-3 convolution is written as one matmul over the three taps side by side: the same
    function as `nn.Conv1d(C, C, 3, dilation=d, padding=d)` (and the same init), but it stays
    channels-last, which on a CPU beats mkldnn's convolution
    (`python -m benchmarks.conv_block_bench`; docs/decisions.md)."""

    def __init__(self, width: int, dilation: int) -> None:
        super().__init__()
        self.dilation = dilation
        self.norm = nn.LayerNorm(width)
        self.taps = nn.Linear(3 * width, width)

    def forward(self, x: Tensor) -> Tensor:
        d, n = self.dilation, x.shape[1]
        h = F.pad(self.norm(x), (0, 0, d, d))
        return x + F.gelu(self.taps(torch.cat([h[:, :n], h[:, d:d + n], h[:, 2 * d:2 * d + n]], dim=-1)))


class PhraseEncoder(nn.Module):
    """`[N, L, features]` steps of a phrase -> (`[N, 2 * hidden]`, `[N, L / pool, embedding]`):
    each step's tracks x (activity, onset) x pitches embedded, two dilated residual convs over
    the steps, every `pool` steps merged into one, two more over the merged steps (receptive
    field ~30 steps), all flattened into one position-aware vector (the CNN view); the merged
    steps are returned too, for the per-bar latents. `pool` divides a bar's steps, so each bar
    owns whole merged steps.

    Chosen over a bidirectional GRU over the steps (MusicVAE's encoder) and the design's GRU over
    bars, whose codes barely depend on the phrase; merging after two blocks instead of four is
    cheaper at the same quality (the comparisons: docs/decisions.md). No recurrence: its steps
    run in parallel."""

    DILATIONS = (1, 2)  # of the blocks before the merge, and of those after it

    def __init__(self, steps: int, bar_steps: int, features: int, embedding: int, hidden: int,
                 dropout: float) -> None:
        super().__init__()
        self.pool = next(k for k in (4, 2, 1) if bar_steps % k == 0)
        self.inp = nn.Sequential(nn.Dropout(dropout), nn.Linear(features, embedding),
                                 nn.LayerNorm(embedding), nn.GELU())
        self.fine = nn.Sequential(*(ResidualConv(embedding, d) for d in self.DILATIONS))
        self.merge = nn.Linear(self.pool * embedding, embedding)
        self.coarse = nn.Sequential(*(ResidualConv(embedding, d) for d in self.DILATIONS))
        self.down = nn.Linear(embedding, embedding // 2)
        self.out = nn.Sequential(nn.Linear(steps // self.pool * (embedding // 2), 2 * hidden), nn.GELU())

    def forward(self, steps: Tensor) -> tuple[Tensor, Tensor]:
        h = self.fine(self.inp(steps))
        n, length, width = h.shape
        h = self.coarse(self.merge(h.reshape(n, length // self.pool, self.pool * width)))
        return self.out(self.down(h).flatten(1)), h


class BarDecoder(nn.Module):
    """`[M, width]` bar embeddings + `[M, width]` projections of z -> per-step features
    `[M, S, width]`: both plus a learned position per step (where the beat falls), then dilated
    residual convs over the bar's steps (receptive field 15 steps), so holds and onsets see their
    neighbours on both sides. Replaced a bidirectional step GRU, which reconstructed worse in
    more time per step (docs/decisions.md)."""

    DILATIONS = (1, 2, 4)

    def __init__(self, steps: int, width: int) -> None:
        super().__init__()
        self.inp = nn.Linear(width, width)
        self.position = nn.Parameter(torch.randn(steps, width) * 0.1)
        self.blocks = nn.Sequential(*(ResidualConv(width, d) for d in self.DILATIONS))

    def forward(self, bar: Tensor, skip: Tensor) -> Tensor:
        return self.blocks(self.inp(bar).unsqueeze(1) + skip.unsqueeze(1) + self.position)


class MusicVAE(nn.Module):
    """Hierarchical conv-recurrent VAE; see the module docstring and docs/architecture.md."""

    def __init__(self, model: ModelParams, rep: RepresentationParams,
                 kinds: list[str] | tuple[str, ...]) -> None:
        super().__init__()
        unknown = sorted(set(kinds) - set(TRACK_KINDS))
        if unknown:
            raise ValueError(f"unknown track kind {unknown[0]!r} (known: {', '.join(TRACK_KINDS)})")
        self.model_params, self.rep, self.kinds = model, rep, tuple(kinds)
        self.n_tracks = len(kinds)
        self.mono_tracks = [k for k, kind in enumerate(kinds) if kind == MONO]
        self.poly_tracks = [k for k, kind in enumerate(kinds) if kind != MONO]
        self.shape = (self.n_tracks, rep.n_bars, rep.steps_per_bar, rep.n_pitches)
        _, b, s, p = self.shape
        self.phrase_dim, self.bar_dim = model.latent_dim, model.bar_latent_dim
        self.latent_dim = model.latent_dim + b * model.bar_latent_dim  # z = [phrase z, bar 0's z, ...]
        self.meta: dict[str, Any] = {}
        self.bar_prior = (BarPrior(self.phrase_dim, self.bar_dim, b)
                          if model.bar_prior == "learned" and self.bar_dim else None)
        self.bar_kde = (KernelDensity(b * self.bar_dim) if model.bar_prior == "kde" and self.bar_dim else None)
        # model.prior: kde draws the whole z from the training phrases' posteriors plus noise
        self.latent_kde = KernelDensity(self.latent_dim) if model.prior == "kde" else None
        # the fitted mixture draws the phrase z alone where the bar prior or density draws the bars' z's
        self.prior = LatentPrior(self.latent_dim if self.bar_prior is None and self.bar_kde is None
                                 else self.phrase_dim, model.prior_components)
        self.encoder = PhraseEncoder(b * s, s, 2 * self.n_tracks * p, model.step_embedding,
                                     model.encoder_hidden, model.dropout)
        self.to_stats = nn.Linear(2 * model.encoder_hidden, 2 * model.latent_dim)
        self.to_bar_stats = (nn.Linear(s // self.encoder.pool * model.step_embedding, 2 * self.bar_dim)
                             if self.bar_dim else None)
        self.z_bar = nn.Linear(self.bar_dim, model.decoder_hidden) if self.bar_dim else None
        self.z_to_conductor = nn.Sequential(nn.Linear(model.latent_dim, model.conductor_hidden),
                                            nn.Tanh())
        self.conductor = nn.GRU(model.latent_dim, model.conductor_hidden, batch_first=True)
        self.bar_head = nn.Sequential(nn.Dropout(model.dropout),
                                      nn.Linear(model.conductor_hidden, model.decoder_hidden),
                                      nn.GELU())
        self.z_skip = nn.Linear(model.latent_dim, model.decoder_hidden)
        self.bar_decoder = BarDecoder(s, model.decoder_hidden)
        feat = model.decoder_hidden
        self.mono_head = nn.Linear(feat, len(self.mono_tracks) * (EVENTS + p)) if self.mono_tracks else None
        self.poly_head = nn.Linear(feat, len(self.poly_tracks) * p * 2) if self.poly_tracks else None
        if self.poly_head is not None:
            nn.init.constant_(self.poly_head.bias, _ONSET_BIAS)
        self.chain = (VoiceChain(len(self.mono_tracks), p, feat, feat // 2)
                      if model.voice_chain and self.mono_tracks else None)
        self.cells = CellChain(len(self.poly_tracks), feat, model.bar_echo) if self.poly_tracks else None
        self.silence = BarSilence(len(self.poly_tracks), feat) if self.poly_tracks else None
        self.pitched = [k for k, kind in enumerate(kinds) if kind != "drums"]
        self.bar_harmony = BarHarmony(feat) if model.bar_harmony and self.pitched else None
        self.presence = TrackPresence(self.n_tracks, self.phrase_dim, feat) if model.track_presence else None

    # -- the two halves

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Codes `[N, T, B, S, P]` -> (mu, logvar), each `[N, latent_dim]`."""
        n, t, b, s, p = x.shape
        steps = planes(x).reshape(n, 2 * t, b * s, p).transpose(1, 2).reshape(n, b * s, 2 * t * p)
        phrase, merged = self.encoder(steps)
        mu, logvar = self.to_stats(phrase).chunk(2, dim=-1)
        if self.to_bar_stats is None:
            return mu, logvar
        bar_mu, bar_logvar = self.to_bar_stats(merged.reshape(n, b, -1)).chunk(2, dim=-1)  # [N, B, bar_dim]
        return torch.cat([mu, bar_mu.flatten(1)], -1), torch.cat([logvar, bar_logvar.flatten(1)], -1)

    def decode(self, z: Tensor, x: Tensor | None = None) -> Outputs:
        """`[N, latent_dim]` -> (mono log-probs `[N, Tm, B, S, P+2]`, poly logits `[N, Tp, B, S, P, 2]`,
        poly bar-silence logits `[N, Tp, B]`).

        Each voice's log-probs are conditioned on the voices above it (with the voice chain),
        each cell's logits on the cells before it (`CellChain`) and each bar's silence on the bar
        before (`BarSilence`): those of `x` (codes, teacher forcing: what `recon_nll` of `x`
        needs), else the ones decided in order (so `to_codes` of the result is the in-order
        decision)."""
        feats, poly = self._features(z)
        if x is None:
            return self._in_order(z, feats, poly, lambda logp, v, t: mono_decision(logp), lambda lg, t, q: lg > 0,
                                  lambda lg, b: lg > 0)[0]
        n, tp, b, s, p, _ = poly.shape
        presence, absent = feats.new_zeros(n, 0), None
        if self.presence is not None:
            playing = tracks_playing(x)
            presence, absent = self.presence(z[:, :self.phrase_dim], playing.to(feats.dtype)), ~playing
        truth = planes(x[:, self.poly_tracks], stacked=True)
        silence = self.silence(feats, silent_bars(truth)) if self.silence is not None else poly.new_zeros(n, tp, b)
        silence = self._not_playing(silence, absent)
        if self.cells is not None:
            flat = feats.view(n, b * s, -1)
            poly = poly + self.cells(self.cells.gates(flat), truth.flatten(2, 3), s,
                                     self.cells.echo_weights(flat)).view(poly.shape)
        harmony, allowed = feats.new_zeros(n, b, 0), None
        if self.bar_harmony is not None:
            sets = bar_pitch_sets(x, self.pitched).to(feats.dtype)
            harmony, allowed = self.bar_harmony(feats, sets), sets.bool()
        classes = mono_classes(x[:, self.mono_tracks]) if self.chain is not None else None
        return (self._mono_log_probs(feats, classes, allowed, absent), self._in_harmony(poly, allowed), silence,
                harmony, presence)

    def _not_playing(self, silence: Tensor, absent: Tensor | None) -> Tensor:
        """Bar-silence logits `[N, Tp, ...]` (every bar, or one) with those of a track in `absent`
        `[N, T]` silent."""
        if absent is None:
            return silence
        gone = absent[:, self.poly_tracks].view(*absent.shape[:1], -1, *([1] * (silence.dim() - 2)))
        return torch.where(gone, _CERTAIN, silence)

    def _pitch_mask(self, allowed: Tensor | None) -> Tensor | None:
        """A bar's pitch-class set `[N, B, 12]` (bool) -> its pitches `[N, B, P]` (bool)."""
        if allowed is None:
            return None
        return allowed[..., torch.arange(self.rep.n_pitches, device=allowed.device) % 12]

    def _in_harmony(self, poly: Tensor, allowed: Tensor | None) -> Tensor:
        """Poly logits `[N, Tp, B, S, P, 2]` with every pitched track's cells outside its bar's
        set (`allowed` `[N, B, 12]`) off."""
        mask = self._pitch_mask(allowed)
        if mask is None:
            return poly
        pitched = torch.tensor([self.kinds[k] != "drums" for k in self.poly_tracks], device=poly.device)
        off = ~mask[:, None, :, None, :, None] & pitched.view(1, -1, 1, 1, 1, 1)
        return poly.masked_fill(off, OFF)

    def decode_in_order(self, z: Tensor, pick: Pick, cell_pick: CellPick, bar_pick: BarPick,
                        playing: Tensor | None = None) -> tuple[Outputs, Tensor, Tensor]:
        """(outputs, mono classes `[N, Tm, B, S]`, poly cells `[N, Tp, B, S, P, 2]` bool): step by
        step and voice by voice, `pick` chooses voice v's class at step t from its log-probs given
        what is already chosen (the voices above it at t, every voice before t); `bar_pick`
        first (with `TrackPresence`, at b = -1) which tracks play, track by track, then the
        polyphonic tracks silent through bar b given the bars before, then `cell_pick`
        the cells of the others at step t and pitch q from their logits given the cells before t
        and below q at t; the returned log-probs and logits are those given these choices.
        `playing` `[N, T]` (bool): which tracks play, decided beforehand (with `TrackPresence`)."""
        return self._in_order(z, *self._features(z), pick, cell_pick, bar_pick, playing)

    def _in_order(self, z: Tensor, feats: Tensor, poly: Tensor, pick: Pick, cell_pick: CellPick,
                  bar_pick: BarPick, playing: Tensor | None = None) -> tuple[Outputs, Tensor, Tensor]:
        n, b, s, _ = feats.shape
        p, tm = self.rep.n_pitches, len(self.mono_tracks)
        presence, absent = self._presence_in_order(z, bar_pick, playing)
        silence, silent = self._silence_in_order(feats, bar_pick, absent)
        harmony, allowed = self._harmony_in_order(feats, bar_pick)
        poly, cells = self._cells_in_order(feats, self._in_harmony(poly, allowed), silent, cell_pick)
        if self.chain is None or tm == 0:  # the voices are independent given z: one pick each
            logp = self._mono_log_probs(feats, None, allowed, absent)
            picked = [pick(logp[:, v].flatten(1, 2), v, None).view(n, b, s) for v in range(tm)]
            classes = torch.stack(picked, 1) if picked else feats.new_zeros(n, 0, b, s, dtype=torch.long)
            return (logp, poly, silence, harmony, presence), classes, cells
        mask = self._pitch_mask(allowed)
        logp, classes = self._chained(feats.view(n, b * s, -1), pick,
                                      None if mask is None else mask.repeat_interleave(s, 1),
                                      None if absent is None else absent[:, self.mono_tracks])
        return (logp.view(n, tm, b, s, p + 2), poly, silence, harmony, presence), classes.view(n, tm, b, s), cells

    def _presence_in_order(self, z: Tensor, pick: BarPick,
                           chosen: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Track by track: (the presence logits `[N, T]` given the tracks picked before, the tracks
        picked absent, bool, same shape); ([N, 0], None) without `TrackPresence`. `chosen` `[N, T]`
        (bool): the tracks playing, already decided (`sample`'s arrangement), instead of picked."""
        if self.presence is None:
            return z.new_zeros(z.shape[0], 0), None
        base = self.presence.base(z[:, :self.phrase_dim])
        table = self.presence.table().to(base.dtype)
        logits, playing = torch.empty_like(base), torch.zeros(base.shape, dtype=torch.bool, device=base.device)
        for k in range(self.n_tracks):
            logits[:, k] = base[:, k] + playing.to(base.dtype) @ table[k]
            playing[:, k] = pick(logits[:, k], -1) if chosen is None else chosen[:, k]
        return logits, ~playing

    def _harmony_in_order(self, feats: Tensor, pick: BarPick) -> tuple[Tensor, Tensor | None]:
        """Bar by bar, class by class upwards: (the bar-harmony logits `[N, B, 12]` given the
        classes picked before, the sets picked, bool, same shape); ([N, B, 0], None) without."""
        n, b = feats.shape[:2]
        if self.bar_harmony is None:
            return feats.new_zeros(n, b, 0), None
        base = self.bar_harmony.base(feats)
        below, before = (t.to(base.dtype) for t in self.bar_harmony.tables())
        logits, sets = torch.empty_like(base), torch.zeros(base.shape, dtype=torch.bool, device=base.device)
        prev = base.new_zeros(n, 12)
        for bar in range(b):
            for c in range(12):
                logits[:, bar, c] = base[:, bar, c] + sets[:, bar].to(base.dtype) @ below[c] + prev @ before[c]
                sets[:, bar, c] = pick(logits[:, bar, c], bar)
            prev = sets[:, bar].to(base.dtype)
        return logits, sets

    def _silence_in_order(self, feats: Tensor, pick: BarPick, absent: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Bar by bar: (the bar-silence logits `[N, Tp, B]` given the bars picked before, the
        tracks picked silent, bool, same shape); every bar of a track `absent` `[N, T]` silent."""
        n, b = feats.shape[:2]
        if self.silence is None:
            tp = len(self.poly_tracks)
            return feats.new_zeros(n, tp, b), torch.zeros(n, tp, b, dtype=torch.bool, device=feats.device)
        base = self.silence.base(feats)
        logits, silent = torch.empty_like(base), torch.zeros(base.shape, dtype=torch.bool, device=base.device)
        before = torch.full(base.shape[:2], BarSilence.NONE, dtype=torch.long, device=base.device)
        for bar in range(b):
            logits[:, :, bar] = self._not_playing(base[:, :, bar] + self.silence.step(before), absent)
            silent[:, :, bar] = pick(logits[:, :, bar], bar)
            before = torch.where(silent[:, :, bar], BarSilence.SILENT, BarSilence.SOUNDING)
        return logits, silent

    def _cells_in_order(self, feats: Tensor, poly: Tensor, silent: Tensor, pick: CellPick) -> tuple[Tensor, Tensor]:
        """Step by step: (poly logits given the cells picked before, the cells picked), both
        `[N, Tp, B, S, P, 2]`; the cells of a bar picked `silent` `[N, Tp, B]` are off."""
        if self.cells is None:
            return poly, poly > 0
        n, tp, b, s, p, _ = poly.shape
        base = poly.flatten(2, 3)
        gates = self.cells.gates(feats.view(n, b * s, -1))
        echo = self.cells.echo_weights(feats.view(n, b * s, -1))
        logits, cells = torch.empty_like(base), torch.zeros(base.shape, dtype=torch.bool, device=base.device)
        # each step's (onset, active), read by the echo a bar later; bar 0 reads the zero bar before it
        states = torch.zeros(n, tp, s + b * s, p, 2, dtype=torch.bool, device=base.device)
        before = torch.zeros_like(cells[:, :, 0])
        age = torch.zeros(before.shape[:-1], dtype=torch.long, device=base.device)
        so_far = base.new_zeros(n, tp, 12)  # pitch classes sounded in the bar so far
        for t in range(b * s):
            so_far = so_far if t % s else torch.zeros_like(so_far)
            step = base[:, :, t] + self.cells.step(gates[:, :, t], before, age) + self.cells.harmony_terms(so_far, p)
            count = None
            if echo is not None:
                step = step + self.cells.echo_terms(echo[:, :, t], states[:, :, t])
                count = states[:, :, t, :, 1].sum(-1)
            logits[:, :, t] = torch.where(silent[:, :, t // s, None, None], OFF, step)
            self._chord_in_order(logits[:, :, t], cells[:, :, t], before, lambda lg, q, t=t: pick(lg, t, q),
                                 count)
            before, age = next_cells(cells[:, :, t], before, age, self.cells.AGE)
            states[:, :, t + s] = before
            so_far = torch.maximum(so_far, pitch_classes(before[..., 1].to(so_far.dtype)))
        return logits.view(poly.shape), cells.view(poly.shape)

    def _chord_in_order(self, logits: Tensor, cells: Tensor, before: Tensor,
                        pick: Callable[[Tensor, int], Tensor], count: Tensor | None = None) -> None:
        """One step, pitch by pitch upwards: add to `logits` `[N, Tp, P, 2]` (in place) the
        chord terms of the cells picked below each pitch and, with the echo, the count terms
        (`count` `[N, Tp]`: the notes sounded at this step one bar before), and write the picks
        into `cells`."""
        assert self.cells is not None
        span, p = self.cells.SPAN, logits.shape[2]
        chord = logits.new_zeros(*logits.shape[:2], p + span, 2)
        below = torch.zeros(logits.shape[:2], dtype=torch.long, device=logits.device)
        for q in range(p):
            logits[:, :, q] += chord[:, :, q]
            if count is not None:
                logits[:, :, q] += self.cells.count_terms(count, below).to(logits.dtype)
            cells[:, :, q] = pick(logits[:, :, q], q)
            active = cells[:, :, q, 1] | cells[:, :, q, 0]
            below = below + active.long()
            onset = cells[:, :, q, 0] | (active & ~before[:, :, q, 1])
            chord[:, :, q + 1:q + 1 + span] += self.cells.chord_update(torch.stack([onset, active], -1).to(chord.dtype))

    def _chained(self, feats: Tensor, pick: Pick, mask: Tensor | None = None,
                 absent: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Step by step, voice by voice: (log-probs `[N, Tm, L, P+2]`, classes `[N, Tm, L]`);
        onsets only at the pitches `mask` `[N, L, P]` allows, when given; the voices `absent`
        `[N, Tm]` rest throughout."""
        assert self.chain is not None and self.mono_head is not None
        n, length, _ = feats.shape
        p, tm = self.rep.n_pitches, len(self.mono_tracks)
        raw = self.mono_head(feats).view(n, length, tm, EVENTS + p)
        if mask is not None:
            raw = onsets_only_at(raw, mask[:, :, None])
        if absent is not None:
            raw = rests_only(raw, absent[:, None])
        proj = self.chain.projected(feats)
        logp = feats.new_empty(n, tm, length, p + 2, dtype=torch.float32)
        classes = torch.empty(n, tm, length, dtype=torch.long, device=feats.device)
        prev = torch.full((n, tm), p, dtype=torch.long, device=feats.device)
        age = torch.zeros_like(prev)
        for t in range(length):
            pitch, upper = prev.clone(), torch.zeros_like(proj[:, t, 0])
            for v in range(tm):
                extra = self.chain.voice_logits(proj[:, t, v], upper, (pitch, prev, age), v)
                if mask is not None:  # a note held into a bar whose set lacks it would leave the set
                    outside = (prev[:, v] < p) & ~mask[:, t].gather(1, prev[:, v:v + 1].clamp(max=p - 1))[:, 0]
                    extra = torch.cat([extra[:, :1], extra[:, 1:2] + torch.where(outside, OFF, 0.0)[:, None],
                                       extra[:, 2:]], -1)
                logp[:, v, t] = mono_log_probs(raw[:, t, v] + extra)
                classes[:, v, t] = pick(logp[:, v, t], v, t)
                pitch[:, v], event = next_state(classes[:, v, t], prev[:, v], p)
                starts = (event == 0) | ((event == 2) & (prev[:, v] < p))
                age[:, v] = torch.where(starts, 1, age[:, v] + 1).clamp(max=self.chain.AGE)
                if v + 1 < tm:
                    upper = upper + self.chain.state_embedding(v, pitch[:, v], event)
            prev = pitch
        return logp, classes

    def _features(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Per-step decoder features `[N, B, S, F]` and the poly logits `[N, Tp, B, S, P, 2]`."""
        _, b, s, p = self.shape
        n = z.shape[0]
        z, z_bars = z[:, :self.phrase_dim], z[:, self.phrase_dim:]
        h0 = self.z_to_conductor(z).unsqueeze(0)
        per_bar, _ = self.conductor(z.unsqueeze(1).expand(n, b, z.shape[-1]).contiguous(), h0)
        skip = self.z_skip(z).repeat_interleave(b, dim=0)
        if self.z_bar is not None:  # each bar's own z reaches that bar's decoder only
            skip = skip + self.z_bar(z_bars.reshape(n * b, self.bar_dim))
        feats = self.bar_decoder(self.bar_head(per_bar).reshape(n * b, -1), skip)  # [N*B, S, F]
        tp = len(self.poly_tracks)
        poly = (self.poly_head(feats).view(n, b, s, tp, p, 2).permute(0, 3, 1, 2, 4, 5)
                if self.poly_head is not None else z.new_zeros(n, 0, b, s, p, 2))
        return feats.view(n, b, s, -1), poly

    def _mono_log_probs(self, feats: Tensor, classes: Tensor | None, allowed: Tensor | None = None,
                        absent: Tensor | None = None) -> Tensor:
        """`[N, Tm, B, S, P+2]` log-probs of the monophonic tracks; with the chain, voice v's
        given `classes[:, :v]`; onsets only in each bar's pitch-class set `allowed` `[N, B, 12]`;
        rests only for the tracks `absent` `[N, T]`."""
        n, b, s, _ = feats.shape
        p, tm = self.rep.n_pitches, len(self.mono_tracks)
        if self.mono_head is None:
            return feats.new_zeros(n, 0, b, s, p + 2)
        raw = self.mono_head(feats).view(n, b, s, tm, EVENTS + p).permute(0, 3, 1, 2, 4)
        mask = self._pitch_mask(allowed)
        if mask is not None:
            raw = onsets_only_at(raw, mask[:, None, :, None])
        if absent is not None:
            raw = rests_only(raw, absent[:, self.mono_tracks, None, None])
        if self.chain is not None and classes is not None:
            raw = raw + self.chain(feats, classes)
        return mono_log_probs(raw)

    def forward(self, x: Tensor, eps: Tensor | None = None) -> tuple[Outputs, Tensor, Tensor, Tensor]:
        """(outputs teacher-forced on `x`, mu, logvar of q(z|x) relative to the prior
        (`prior_relative`: what the KL term reads), the bar prior's fit `[N]`); z = mu + sigma * eps,
        eps ~ N(0, I) unless given.

        The fit is KL(q || p) of the bar latents with q held fixed: it trains the learned bar
        prior towards the posteriors whatever the free nats leave of the KL term's gradient (under
        them, none), as KL balancing (Hafner et al. 2021, DreamerV2) trains its prior; zeros
        without a learned bar prior."""
        mu, logvar = self.encode(x)
        if eps is None:
            eps = torch.randn_like(mu)
        z = mu + torch.exp(0.5 * logvar) * eps.to(mu.dtype)
        rel_mu, rel_logvar = self.prior_relative(mu, logvar, z)
        if self.bar_prior is None:
            fit = mu.new_zeros(mu.shape[0], dtype=torch.float32)
        else:
            fixed = self.bar_prior.relative(mu.detach(), logvar.detach(), z.detach())
            fit = kl_per_sample_dim(*(a[:, self.phrase_dim:].float() for a in fixed)).sum(1)
        return self.decode(z, x), rel_mu, rel_logvar, fit

    def prior_relative(self, mu: Tensor, logvar: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """q(z|x)'s (mu, logvar) in the coordinates where the training prior is N(0, I), given a
        draw `z` of it: unchanged, but for the bar latents under a learned bar prior
        (`BarPrior.relative`). KL(q || prior) = `kl_per_sample_dim` of the result."""
        if self.bar_prior is None:
            return mu, logvar
        return self.bar_prior.relative(mu, logvar, z)

    def draw_z(self, n: int, gen: torch.Generator) -> Tensor:
        """`[n, latent_dim]` z (CPU) as generation draws it: from the fitted prior (N(0, I) until
        fitted), each bar's z from the learned bar prior or the bars' kernel density where there is one;
        or the whole z from the kernel density over the training posteriors (`model.prior: kde`)."""
        if self.latent_kde is not None:
            return self.latent_kde.sample(n, gen)
        z = self.prior.sample(n, gen)
        if self.bar_kde is not None:
            return torch.cat([z, self.bar_kde.sample(n, gen)], 1)
        return self.bar_prior.sample(z, gen) if self.bar_prior is not None else z

    # -- the distribution

    def recon_nll(self, out: Outputs, x: Tensor, mono_target: Tensor | None = None) -> Tensor:
        """Negative log-likelihood of codes `x` under the decoder's distribution: `[N]` nats.
        `mono_target`: `mono_classes` of x's monophonic tracks, when the caller has them."""
        mono, poly, silence, harmony, presence = out
        nll = x.new_zeros(x.shape[0], dtype=torch.float32)
        if presence.shape[-1]:  # then an absent track's rests and silent bars cost nothing
            nll = nll + F.binary_cross_entropy_with_logits(presence.float(), tracks_playing(x).float(),
                                                           reduction="none").sum(1)
        if harmony.shape[-1]:
            sets = bar_pitch_sets(x, self.pitched)
            nll = nll + F.binary_cross_entropy_with_logits(harmony.float(), sets, reduction="none").flatten(1).sum(1)
        if self.mono_tracks:
            target = mono_classes(x[:, self.mono_tracks]) if mono_target is None else mono_target  # [N, Tm, B, S]
            ce = F.cross_entropy(mono.float().flatten(0, -2), target.flatten(), reduction="none")
            nll = nll + ce.view(x.shape[0], -1).sum(1)
        if self.poly_tracks:
            target = planes(x[:, self.poly_tracks], stacked=True)  # [N, Tp, B, S, P, 2] onset, active
            silent = silent_bars(target)
            bce = F.binary_cross_entropy_with_logits(poly.float(), target, reduction="none").flatten(3).sum(-1)
            hurdle = F.binary_cross_entropy_with_logits(silence.float(), silent.float(), reduction="none")
            nll = nll + (bce * ~silent + hurdle).flatten(1).sum(1)  # a silent bar's cells: all off, given it
        return nll

    def to_codes(self, out: Outputs) -> Tensor:
        """The most likely codes `[N, T, B, S, P]` (uint8) under the decoder's distribution."""
        mono, poly, silence = out[:3]
        return self._codes(mono_decision(mono), (poly > 0) & (silence <= 0)[..., None, None, None])

    def _codes(self, mono_classes: Tensor, poly_cells: Tensor) -> Tensor:
        """Codes from the monophonic tracks' classes `[N, Tm, B, S]` and the polyphonic tracks'
        (onset, sustain) cells `[N, Tp, B, S, P, 2]` (bool; an onset sounds too): how `to_codes`
        and `draw_codes` turn their decisions into one phrase."""
        codes = torch.zeros((mono_classes.shape[0], *self.shape), dtype=torch.uint8, device=mono_classes.device)
        if self.mono_tracks:
            codes[:, self.mono_tracks] = mono_to_codes(mono_classes, self.rep.n_pitches)
        if self.poly_tracks:
            onset, active = poly_cells[..., 0], poly_cells[..., 1] | poly_cells[..., 0]
            codes[:, self.poly_tracks] = active.to(torch.uint8) + onset.to(torch.uint8)
        return codes

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Codes decoded from the posterior means of `x`."""
        with _eval_mode(self):
            mu, _ = self.encode(x.to(self._device()))
            return self.to_codes(self.decode(mu))

    def draw_codes(self, z: Tensor, temperature: float, gen: torch.Generator,
                   playing: Tensor | None = None) -> Tensor:
        """Codes `[N, T, B, S, P]` drawn from the decoder's distribution given z `[N, latent_dim]`
        with its logits divided by `temperature` (MusicVAE's sampling temperature; towards 0 it
        becomes `to_codes`), the monophonic voices one after another (the chain's order) and the
        polyphonic tracks' silent bars, then their cells step by step. `playing` `[N, T]` (bool):
        which tracks play, when already drawn (`draw_arrangement`)."""
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")

        def pick(logp: Tensor, v: int, t: int | None) -> Tensor:  # drawn on the CPU: one generator on any device
            return mono_draw(logp.detach().float().cpu(), temperature, gen).to(logp.device)

        def bernoulli(logits: Tensor, *where: int, temperature: float = temperature) -> Tensor:  # a cell, a bar's
            lg = logits.detach().float().cpu()  # silence or pitch class, or whether a track plays
            return (torch.rand(lg.shape, generator=gen) < torch.sigmoid(lg / temperature)).to(logits.device)

        def bar_bernoulli(logits: Tensor, b: int) -> Tensor:  # which tracks play (b = -1) at 1: a cooled
            return bernoulli(logits, b, temperature=1.0 if b < 0 else temperature)  # Bernoulli shifts its rate

        _, classes, cells = self.decode_in_order(z, pick, bernoulli, bar_bernoulli,
                                                 None if playing is None else playing.to(z.device))
        return self._codes(classes.cpu(), cells.cpu())

    def draw_arrangement(self, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor | None]:
        """(`[n, latent_dim]` z, which tracks play `[n, T]` bool or None), CPU: z drawn as `draw_z`
        draws it, and with fitted arrangement rates (`TrackPresence.fit_rates`) the arrangement
        drawn at them: z's of a pool `ARRANGEMENT_POOL` times larger, each with its arrangement drawn
        given z, resampled with weights (training rate / the pool's rate) of their arrangement.
        Why: the fitted mixture does not carry how often each set of tracks plays together; drawn
        from it, phrases left the guitar and drums out less often than the data (decisions.md)."""
        if self.presence is None or not self.presence.fitted:
            return self.draw_z(n, gen), None
        pool = self.draw_z(ARRANGEMENT_POOL * n, gen)
        z = pool.to(self._device())
        _, absent = self._presence_in_order(z, lambda lg, b: torch.rand(lg.shape, generator=gen) < torch.sigmoid(
            lg.detach().float().cpu()))
        assert absent is not None
        playing = ~absent.cpu()
        pattern = TrackPresence.pattern(playing)
        share = torch.bincount(pattern, minlength=self.presence.rates.numel()).float() / len(pattern)
        weight = self.presence.rates.float().cpu()[pattern] / share[pattern]
        if not bool(weight.sum() > 0):  # no drawn arrangement occurs in training: keep the pool's
            weight = torch.ones_like(weight)
        pick = torch.multinomial(weight, n, replacement=int((weight > 0).sum()) < n, generator=gen)
        return pool[pick], playing[pick]

    @torch.no_grad()
    def sample(self, n: int, seed: int, temperature: float = 1.0) -> Tensor:
        """Codes `[n, T, B, S, P]`: z from the latent prior (`lpdvae.model.prior`: N(0, I) until
        fitted), then the phrase drawn from the decoder's
        distribution at `temperature`. Drawn, not its most likely value: the argmax of a
        non-autoregressive decoder repeats each voice's likeliest pitch, sampling keeps the data's
        variety of pitches (docs/decisions.md)."""
        gen = torch.Generator().manual_seed(seed)
        with _eval_mode(self):
            z, playing = self.draw_arrangement(n, gen)
            return self.draw_codes(z.to(self._device()), temperature, gen, playing)

    @torch.no_grad()
    def interpolate(self, a: Tensor, b: Tensor, steps: int) -> Tensor:
        """Codes `[steps, T, B, S, P]` along the slerp between the posterior means of `a` and `b`."""
        if steps < 2:
            raise ValueError(f"interpolate needs steps >= 2, got {steps}")
        with _eval_mode(self):
            mu, _ = self.encode(torch.stack([a, b]).to(self._device()))
            w = torch.linspace(0, 1, steps, device=mu.device)
            return self.to_codes(self.decode(slerp(mu[0], mu[1], w)))

    def _device(self) -> torch.device:
        return next(self.parameters()).device


def mono_log_probs(raw: Tensor) -> Tensor:
    """Head output `[..., 3 + P]` (event logits onset/hold/rest, then pitch logits) -> log-probs
    `[..., P + 2]` of the classes `onset at p`, hold, rest: log p(onset) + log p(pitch), then
    log p(hold), log p(rest). Every reader of the mono output sees one normalised categorical."""
    event = torch.log_softmax(raw[..., :EVENTS].float(), dim=-1)
    pitch = torch.log_softmax(raw[..., EVENTS:].float(), dim=-1)
    return torch.cat([event[..., :1] + pitch, event[..., 1:]], dim=-1)


def onsets_only_at(raw: Tensor, allowed: Tensor) -> Tensor:
    """Mono head output `[..., 3 + P]` with the onsets at pitches outside `allowed` (bool,
    broadcast to `[..., P]`) off: how a bar's harmony set bounds a monophonic track's onsets,
    teacher-forced (`_mono_log_probs`) and in order (`_chained`) alike."""
    return torch.cat([raw[..., :EVENTS], raw[..., EVENTS:].masked_fill(~allowed, OFF)], -1)


def mono_decision(logits: Tensor) -> Tensor:
    """The most likely event per step of monophonic logits `[..., P + 2]`, then its pitch: an
    onset (probability summed over pitches) vs hold vs rest, and for an onset the likeliest
    pitch. A plain argmax over the P + 2 classes almost never picks an onset, because an onset's
    probability is spread over the pitches while hold and rest each have one class."""
    p = logits.shape[-1] - 2
    onset = torch.logsumexp(logits[..., :p], dim=-1)
    event = torch.stack([onset, logits[..., p], logits[..., p + 1]], dim=-1).argmax(-1)
    return torch.where(event == 0, logits[..., :p].argmax(-1), p + event - 1)


def mono_draw(logits: Tensor, temperature: float, gen: torch.Generator) -> Tensor:
    """A class per step of monophonic logits `[..., P + 2]`, drawn as `mono_decision` decides:
    the event (onset / hold / rest), then the onset's pitch, each at `temperature`. At 1 this
    is exactly the categorical over the P + 2 classes; towards 0 it becomes `mono_decision`."""
    p = logits.shape[-1] - 2
    logp = torch.log_softmax(logits, dim=-1)
    event_logits = torch.stack([torch.logsumexp(logp[..., :p], dim=-1), logp[..., p], logp[..., p + 1]], -1)

    def draw(lg: Tensor) -> Tensor:
        probs = torch.softmax(lg / temperature, dim=-1)
        return torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=gen).view(lg.shape[:-1])

    event, pitch = draw(event_logits), draw(logp[..., :p])
    return torch.where(event == 0, pitch, p + event - 1)


class Reconstructor(nn.Module):
    """One-tensor-in/one-tensor-out view for MLflow: codes -> reconstructed codes (z = mu)."""

    def __init__(self, vae: MusicVAE) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, x: Tensor) -> Tensor:
        mu, _ = self.vae.encode(x)
        return self.vae.to_codes(self.vae.decode(mu)).float()


class _eval_mode:
    """Context manager: eval mode inside, the previous mode restored after."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.was_training = module.training

    def __enter__(self) -> None:
        self.module.eval()

    def __exit__(self, *exc: object) -> None:
        self.module.train(self.was_training)


def slerp(a: Tensor, b: Tensor, w: Tensor) -> Tensor:
    """Spherical interpolation of two vectors at weights `w` `[K]` -> `[K, D]` (linear if parallel)."""
    w = w.unsqueeze(-1)
    cos = F.cosine_similarity(a, b, dim=0).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    if omega.abs() < 1e-4:
        return (1 - w) * a + w * b
    so = torch.sin(omega)
    return torch.sin((1 - w) * omega) / so * a + torch.sin(w * omega) / so * b
