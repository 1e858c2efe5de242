"""The decoder's conditional heads, each deciding one part of a phrase given the decoder's
features and what was decided before it: a monophonic voice's step (`VoiceChain`), a polyphonic
cell (`CellChain`), whether a track rests through a bar (`BarSilence`), a bar's pitch classes
(`BarHarmony`) and which tracks play in the phrase (`TrackPresence`), with the code-level helpers
their states are read from. `MusicVAE` (`lpdvae.model.vae`) trains them teacher-forced and
decodes or draws them in order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EVENTS = 3  # a monophonic step's events: onset, hold, rest
OFF = -1e4  # the logit of a cell in a bar decided silent: off at any temperature


def sounding(classes: Tensor, n_pitches: int) -> tuple[Tensor, Tensor]:
    """Monophonic classes `[..., B, S]` -> (the pitch sounding at each step, P where silent; its
    event: 0 onset, 1 held, 2 silent), both long `[..., B, S]`. A hold sounds its voice's last
    onset; a hold after a rest (or at the start) is silent, as `mono_to_codes` reads it."""
    p = n_pitches
    flat = classes.flatten(-2)
    steps = torch.arange(flat.shape[-1], device=flat.device)
    last = torch.where(flat != p, steps, -1).cummax(-1).values  # the last step that is not a hold
    origin = flat.gather(-1, last.clamp(min=0))
    pitch = torch.where((last >= 0) & (origin < p), origin, p)
    event = torch.where(flat < p, 0, torch.where(pitch < p, 1, 2))
    return pitch.view(classes.shape), event.view(classes.shape)


class VoiceChain(nn.Module):
    """Extra head logits `[N, V, B, S, 3 + P]` for V monophonic voices drawn jointly: step by
    step, and within a step voice by voice (BachBot's top-down order). Voice v at step t sees:

    - the voices u < v at t: the sum of an embedding of (u, its sounding pitch, its event),
      added to a projection of the decoder feature, through one GELU layer (events and pitches);
    - voice-leading terms on its onset pitch p, learned tables indexed by intervals (so they hold
      in every key): the harmonic interval from each upper voice's pitch at t, its own melodic
      interval from t - 1, and per upper voice the pair (interval at t - 1, interval at t), split
      by whether the two move in the same direction: what can learn Bach's avoidance of parallel
      fifths and octaves, which no per-step draw given z alone can (docs/decisions.md);
    - a duration term on its event (onset / hold / rest): a table indexed by whether it sounded
      at t - 1 and for how many steps since its last onset or rest (`AGE` steps or more share an
      entry): the note lengths a per-step draw otherwise gets wrong.

    Every table and the output layer start at zero: an untrained chain is the independent model.
    `forward` is teacher-forced (all steps at once, from the true classes); `step` is the same
    function for one step of a decoding that goes in order."""

    HARMONIC = 36  # harmonic intervals beyond +-3 octaves share their end entry
    MELODIC = 12   # melodic leaps beyond an octave likewise
    AGE = 16       # steps since a voice's last onset or rest: 0 before the first step, then 1..AGE
    # The tables are read times this gain: Adam moves a parameter by about lr a step, so without
    # it an entry cannot reach the logits (-5 and below) that rule a motion out within a short
    # run; measured on the demo, every parallel-fifth entry stopped at -1.9 after 880 steps.
    GAIN = 10.0

    def __init__(self, voices: int, pitches: int, width: int, hidden: int) -> None:
        super().__init__()
        self.voices, self.pitches, self.hidden = voices, pitches, hidden
        self.states = (pitches + 1) * 3  # sounding pitch or silent, x event
        # what voices read of the voices above them: none with one voice (DDP refuses unused parameters)
        self.embed = nn.Embedding(voices * self.states, hidden) if voices > 1 else None
        self.feat = nn.Linear(width, voices * hidden)
        self.out = nn.Parameter(torch.zeros(voices, hidden, EVENTS + pitches))
        self.bias = nn.Parameter(torch.zeros(voices, EVENTS + pitches))
        self.harmonic = nn.Parameter(torch.zeros(voices, voices, 2 * self.HARMONIC + 1)) if voices > 1 else None
        self.melodic = nn.Parameter(torch.zeros(voices, 2 * self.MELODIC + 1))
        self.parallel = nn.Parameter(torch.zeros(voices, voices, 12 * 12 * 2)) if voices > 1 else None
        self.duration = nn.Parameter(torch.zeros(voices, 2 * (self.AGE + 1), EVENTS))

    def forward(self, feats: Tensor, classes: Tensor) -> Tensor:
        """`feats` `[N, B, S, F]`, `classes` `[N, V, B, S]` -> `[N, V, B, S, 3 + P]`; voice v's
        output at step t depends on `classes[:, :v]` at t and on every voice before t only."""
        n, v, b, s = classes.shape
        pitch, event = (a.flatten(2).transpose(1, 2) for a in sounding(classes, self.pitches))  # [N, L, V]
        prev = torch.cat([torch.full_like(pitch[:, :1], self.pitches), pitch[:, :-1]], 1)
        age = note_age(pitch.transpose(1, 2), event.transpose(1, 2), self.pitches, self.AGE).transpose(1, 2)
        age = torch.cat([torch.zeros_like(age[:, :1]), age[:, :-1]], 1)  # at the step before
        proj = self.projected(feats.reshape(n, b * s, -1))
        upper, rows = torch.zeros_like(proj[..., 0, :]), []
        for voice in range(v):
            rows.append(self.voice_logits(proj[..., voice, :], upper, (pitch, prev, age), voice))
            if voice + 1 < v:  # the last voice is above none
                upper = upper + self.state_embedding(voice, pitch[..., voice], event[..., voice])
        return torch.stack(rows, 1).view(n, v, b, s, -1)

    def projected(self, feats: Tensor) -> Tensor:
        """Decoder features `[..., F]` -> each voice's projection `[..., V, H]`."""
        return self.feat(feats).view(*feats.shape[:-1], self.voices, self.hidden)

    def state_embedding(self, voice: int, pitch: Tensor, event: Tensor) -> Tensor:
        """What the voices below read of `voice` (any but the last)."""
        assert self.embed is not None
        return self.embed(voice * self.states + pitch * 3 + event)

    def voice_logits(self, proj: Tensor, upper: Tensor, state: tuple[Tensor, Tensor, Tensor], v: int) -> Tensor:
        """Voice v's extra logits `[..., 3 + P]` from its projection and the upper voices'
        embedding sum `[..., H]`, and `state`: the sounding pitches at this step (voices < v
        read) and at the step before (all read), P where silent, and each voice's age at the
        step before (`note_age`), each `[..., V]`."""
        pitch, prev, age = state
        h = F.gelu(proj + upper)
        out = h @ self.out[v].to(h.dtype) + self.bias[v]
        duration = self.GAIN * self.duration[v][(prev[..., v] < self.pitches).long() * (self.AGE + 1) + age[..., v]]
        return out + torch.cat([duration, self.leading(pitch, prev, v)], -1)

    def leading(self, pitch: Tensor, prev: Tensor, v: int) -> Tensor:
        """The voice-leading terms `[..., P]` on voice v's onset pitch (see the class docstring)."""
        big = self.pitches
        p = torch.arange(big, device=pitch.device)
        pv = prev[..., v, None]
        out = torch.where(pv < big, self.GAIN * self.melodic[v][(p - pv).clamp(-self.MELODIC, self.MELODIC)
                                                                + self.MELODIC], 0.0)
        if not v:  # no voice above: no harmonic or parallel term (the top voice, or a lone one)
            return out
        assert self.harmonic is not None and self.parallel is not None
        harmonic, parallel = self.GAIN * self.harmonic, self.GAIN * self.parallel
        for u in range(v):
            cu, pu = pitch[..., u, None], prev[..., u, None]
            out = out + torch.where(cu < big, harmonic[u, v][(cu - p).clamp(-self.HARMONIC, self.HARMONIC)
                                                              + self.HARMONIC], 0.0)
            similar = (torch.sign(p - pv) == torch.sign(cu - pu)) & (cu != pu)
            pair = ((pu - pv) % 12 * 12 + (cu - p) % 12) * 2 + similar.long()
            out = out + torch.where((cu < big) & (pu < big) & (pv < big), parallel[u, v][pair], 0.0)
        return out


class CellChain(nn.Module):
    """Extra logits `[N, Tp, L, P, 2]` (onset, sustain) for the polyphonic / drum tracks' cells:
    cell (track k, step t, pitch p) sees its own state at t - 1, the one thing a draw per cell
    given z cannot know (did this pitch sound, was it struck, and for how long has it sounded):

    - a gate from the decoder feature at t, per track and plane, times the cell's (onset,
      active) at t - 1: where z puts a chord change the gate can release what sounds, elsewhere
      hold it;
    - a duration table per track, indexed by how many steps the cell's note has sounded by
      t - 1 (0: silent; `AGE` or more share an entry), as `VoiceChain`'s duration term;
    - a chord table per pair of tracks (k, j), indexed by the interval from each cell of track
      j at the same step t and up to `SPAN` semitones below p, and by that cell's (onset,
      active): what completes a chord once its lowest notes are drawn and keeps the tracks in
      one harmony, which z alone cannot where it sits between two chords;
    - a harmony table per pair of tracks (k, j), indexed by the interval class (mod 12) from
      each pitch class track j has sounded so far in the bar (before t): a bar keeps the
      chord its first notes chose, in every track, instead of each strike choosing again.

    - with `echo` (`model.bar_echo`), the cell one bar before (same track, step of the bar and
      pitch: onset, active) and whether the track struck / sounded anything there, each through
      a table per track plus a gate from the decoder feature at t: a part repeats its rhythm
      from bar to bar (the bar's own z drawn from the prior does not carry it; the rhythm of
      the bar before does), and z can still break it where a fill or a new section starts;
      and a table per track by how many notes it sounded at that step one bar before and how
      many it has taken below this pitch so far at this step: a chord keeps its size from bar
      to bar while its pitches follow the harmony (the chord table alone decides each note
      from the ones below it, so one note left out thins every chord after it).

    All start at zero (an untrained chain is the independent model). `forward` is teacher-forced
    from the true cells; `step`, `echo_terms` and `chord_update` are the same function for an
    in-order decoding (step by step, and within a step pitch by pitch upwards)."""

    AGE = 16
    SPAN = 24  # semitones below a cell that its chord term reads
    GAIN = 10.0  # as VoiceChain.GAIN: lets Adam move a table entry to decisive logits in a short run
    COUNT = 6  # notes at one step are counted up to this (a larger chord shares the last entry)

    def __init__(self, tracks: int, width: int, echo: bool = False) -> None:
        super().__init__()
        self.tracks = tracks
        self.gate = nn.Linear(width, tracks * 2 * 2)
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)
        self.echo_gate = nn.Linear(width, tracks * 2 * 4) if echo else None
        if self.echo_gate is not None:
            nn.init.zeros_(self.echo_gate.weight)
            nn.init.zeros_(self.echo_gate.bias)
        self.echo = nn.Parameter(torch.zeros(tracks, 2, 4)) if echo else None  # [k, plane, state one bar before]
        # [k, notes at the step one bar before, notes taken below at this step, plane]
        self.count = nn.Parameter(torch.zeros(tracks, self.COUNT + 1, self.COUNT + 1, 2)) if echo else None
        self.duration = nn.Parameter(torch.zeros(tracks, self.AGE + 1, 2))
        self.chord = nn.Parameter(torch.zeros(tracks, tracks, self.SPAN, 2, 2))  # [k, j, interval - 1, plane, state]
        self.harmony = nn.Parameter(torch.zeros(tracks, tracks, 12, 2))  # [k, j, interval class, plane]

    def gates(self, feats: Tensor) -> Tensor:
        """Decoder features `[N, L, F]` -> `[N, Tp, L, 2 planes, 2 states]`."""
        n, length, _ = feats.shape
        return self.gate(feats).view(n, length, self.tracks, 2, 2).transpose(1, 2)

    def echo_weights(self, feats: Tensor) -> Tensor | None:
        """Decoder features `[N, L, F]` -> the echo's weights `[N, Tp, L, 2 planes, 4 states]`
        (None without the echo)."""
        if self.echo_gate is None or self.echo is None:
            return None
        n, length, _ = feats.shape
        gate = self.echo_gate(feats).view(n, length, self.tracks, 2, 4).transpose(1, 2)
        return gate + self.GAIN * self.echo.to(gate.dtype)[None, :, None]

    @staticmethod
    def echo_terms(weights: Tensor, bar_before: Tensor) -> Tensor:
        """The echo's `weights` `[N, Tp, ..., 2, 4]` and the cells one bar before `[N, Tp, ..., P, 2]`
        (onset, active; float, zero in the first bar) -> logits `[N, Tp, ..., P, 2]`: from the same
        cell and from anything the track struck / sounded at that step."""
        anything = bar_before.amax(-2, keepdim=True).expand_as(bar_before)
        states = torch.cat([bar_before, anything], -1).to(weights.dtype)
        return torch.einsum("...as,...ps->...pa", weights, states)

    def count_terms(self, before: Tensor, below: Tensor) -> Tensor:
        """Notes the track sounded at a step one bar before and notes it has taken below a pitch
        at this step (long, `[N, Tp, ...]` each) -> the count table's logits `[N, Tp, ..., 2]`."""
        assert self.count is not None
        track = torch.arange(self.tracks, device=before.device).view(1, -1, *([1] * (before.dim() - 2)))
        return self.GAIN * self.count[track, before.clamp(max=self.COUNT), below.clamp(max=self.COUNT)]

    def forward(self, gates: Tensor, cells: Tensor, bar_steps: int, echo: Tensor | None = None) -> Tensor:
        """`gates` `[N, Tp, L, 2, 2]`, true cells `[N, Tp, L, P, 2]` (onset, active; float) ->
        `[N, Tp, L, P, 2]`: each step's logits from the cells one step before, below it at its
        step and sounded earlier in its bar (of `bar_steps` steps), and with `echo`
        (`echo_weights`) from those one bar before."""
        age = cell_age(cells[..., 0] > 0, cells[..., 1] > 0, self.AGE)
        before = torch.cat([torch.zeros_like(cells[:, :, :1]), cells[:, :, :-1]], 2)
        age = torch.cat([torch.zeros_like(age[:, :, :1]), age[:, :, :-1]], 2)
        n, tp, length, p, _ = cells.shape
        now = cells.permute(0, 2, 1, 3, 4).reshape(n, length, tp * p * 2) @ self.chord_matrix(p).to(cells.dtype)
        so_far = pitch_classes(cells[..., 1]).view(n, tp, length // bar_steps, bar_steps, 12).cummax(3).values
        so_far = torch.cat([torch.zeros_like(so_far[:, :, :, :1]), so_far[:, :, :, :-1]], 3).flatten(2, 3)
        logits = (self.step(gates, before, age) + now.view(n, length, tp, p, 2).transpose(1, 2)
                  + self.harmony_terms(so_far, p))
        if echo is None:
            return logits
        bar_before = torch.cat([torch.zeros_like(cells[:, :, :bar_steps]), cells[:, :, :-bar_steps]], 2)
        active = (cells[..., 1] > 0).long()
        below = active.cumsum(-1) - active
        before_n = (bar_before[..., 1] > 0).sum(-1, keepdim=True).expand_as(below)
        return logits + self.echo_terms(echo, bar_before) + self.count_terms(before_n, below)

    def harmony_terms(self, so_far: Tensor, pitches: int) -> Tensor:
        """The pitch classes each track has sounded so far in the bar `[N, Tp, ..., 12]` (float)
        -> the harmony table's logits `[N, Tp, ..., P, 2]`."""
        q = torch.arange(12, device=so_far.device)
        table = self.GAIN * self.harmony[:, :, (q[:, None] - q[None, :]) % 12].to(so_far.dtype)  # [k, j, q, c, a]
        per_class = torch.einsum("kjqca,nj...c->nk...qa", table, so_far)
        return per_class[..., torch.arange(pitches, device=so_far.device) % 12, :]

    def chord_matrix(self, pitches: int) -> Tensor:
        """The chord terms as one matrix `[Tp * P * 2, Tp * P * 2]`: from the cells (track j,
        pitch p', state s) of a step to the logits (track k, pitch p, plane a) of the same step,
        non-zero only for p - SPAN <= p' < p."""
        d = torch.arange(pitches, device=self.chord.device)
        d = d[:, None] - d[None, :]  # p - p'
        band = ((d >= 1) & (d <= self.SPAN)).to(self.chord.dtype)[..., None, None]
        table = self.GAIN * self.chord[:, :, (d - 1).clamp(0, self.SPAN - 1)] * band  # [k, j, p, p', a, s]
        size = self.tracks * pitches * 2
        return table.permute(1, 3, 5, 0, 2, 4).reshape(size, size)

    def chord_update(self, cells: Tensor) -> Tensor:
        """The cells `[N, Tp, 2]` (onset, active; float) decided at one pitch -> what they add to
        the logits of the `SPAN` pitches above it `[N, Tp, SPAN, 2]`, as `chord_matrix` does."""
        return torch.einsum("kjdas,njs->nkda", self.GAIN * self.chord.to(cells.dtype), cells)

    def step(self, gates: Tensor, before: Tensor, age: Tensor) -> Tensor:
        """Logits `[..., P, 2]` from `gates` `[..., 2, 2]`, the cells at the step before
        `[..., P, 2]` (float) and their age then `[..., P]` (long); `...` starts with N, Tp."""
        track = torch.arange(self.tracks, device=age.device).view(1, -1, *([1] * (age.dim() - 2)))
        held = torch.einsum("...as,...ps->...pa", gates, before.to(gates.dtype))
        return held + self.GAIN * self.duration[track, age].to(held.dtype)


class BarSilence(nn.Module):
    """Logits `[N, Tp, B]` that polyphonic / drum track k is silent through bar b (a hurdle in
    front of its cells): from the bar's decoder features (their mean over its steps) and a table
    per track on whether k was silent in bar b - 1 (none before bar 0). A track that sits out
    a song sits out every bar of it; drawn cell by cell, a silent bar needs every one of its
    thousand cells to stay off, and at a sampling temperature a few stray notes fill it. Zero
    at the start, as the chains."""

    GAIN = 10.0  # as VoiceChain.GAIN
    NONE, SILENT, SOUNDING = range(3)

    def __init__(self, tracks: int, width: int) -> None:
        super().__init__()
        self.tracks = tracks
        self.head = nn.Linear(width, tracks)
        self.before = nn.Parameter(torch.zeros(tracks, 3))

    def base(self, feats: Tensor) -> Tensor:
        """Decoder features `[N, B, S, F]` -> the feature part of the logits `[N, Tp, B]`."""
        return self.head(feats.mean(2)).transpose(1, 2)

    def forward(self, feats: Tensor, silent: Tensor) -> Tensor:
        """Teacher-forced logits `[N, Tp, B]` given the true silent bars `silent` `[N, Tp, B]` (bool)."""
        state = torch.where(silent, self.SILENT, self.SOUNDING)
        before = torch.cat([torch.full_like(state[:, :, :1], self.NONE), state[:, :, :-1]], 2)
        return self.base(feats) + self.step(before)

    def step(self, before: Tensor) -> Tensor:
        """The table's logits for the states `before` `[N, Tp, ...]` (long) of the bar before."""
        track = torch.arange(self.tracks, device=before.device).view(1, -1, *([1] * (before.dim() - 2)))
        return self.GAIN * self.before[track, before]


class BarHarmony(nn.Module):
    """Logits `[N, B, 12]` that pitch class c (pitch index mod 12) sounds in bar b in some pitched
    (non-drum) track, decided per bar before any note of it, class by class upwards: from the
    bar's decoder features (their mean and maximum over its steps), a table by interval to each class taken
    below it in the bar and one by interval to each class of the bar before. Every pitched
    track's notes are then drawn inside the bar's set (`model.bar_harmony`).

    Why: the tracks' notes are drawn given z, and where a z of the prior sits between two
    harmonies each track resolves it on its own: tracks disagree (tonal distance) where the
    decoder of a real phrase's z does not (docs/decisions.md, 2026-12-06). One set per bar, drawn
    once, is the harmony every track plays in, as `BarSilence` decides a silent bar once.
    Tables start at zero."""

    GAIN = 10.0  # as VoiceChain.GAIN

    def __init__(self, width: int) -> None:
        super().__init__()
        # the bar's mean and max features through one hidden layer: from the mean alone a
        # linear head missed a quarter of the true classes in reconstruction (decisions.md)
        self.head = nn.Sequential(nn.Linear(2 * width, width), nn.GELU(), nn.Linear(width, 12))
        self.below = nn.Parameter(torch.zeros(12))   # by interval (c - c') mod 12, c' < c taken
        self.before = nn.Parameter(torch.zeros(12))  # by interval to each class of the bar before

    def base(self, feats: Tensor) -> Tensor:
        """Decoder features `[N, B, S, F]` -> the feature part of the logits `[N, B, 12]`."""
        return self.head(torch.cat([feats.mean(2), feats.amax(2)], -1))

    def tables(self) -> tuple[Tensor, Tensor]:
        """`[12, 12]` (class c, class c') terms: from the classes taken below c in the bar (zero
        for c' >= c), and from the bar before's classes."""
        q = torch.arange(12, device=self.below.device)
        d = (q[:, None] - q[None, :]) % 12
        return self.GAIN * self.below[d] * (q[None, :] < q[:, None]), self.GAIN * self.before[d]

    def forward(self, feats: Tensor, sets: Tensor) -> Tensor:
        """Teacher-forced logits `[N, B, 12]` given the true sets `sets` `[N, B, 12]` (float)."""
        below, before = (t.to(sets.dtype) for t in self.tables())
        prev = torch.cat([torch.zeros_like(sets[:, :1]), sets[:, :-1]], 1)
        return self.base(feats) + sets @ below.T + prev @ before.T


class TrackPresence(nn.Module):
    """Logits `[N, T]` that track k plays somewhere in the phrase, decided once per phrase before
    any bar, track by track in order: from the phrase's z (not the bars' own z's) through a hidden
    layer, and a table on which tracks before k play (`model.track_presence`). A track that does
    not play is silent in every bar; generation draws this choice at temperature 1.

    Why: in LPD-5 a track sits out whole songs (a song without guitar), not single bars; per-bar
    silence chained on the bar before lets a z of the prior leave a track out of some bars only
    (docs/decisions.md, 2026-12-06). Decided once, "no guitar" holds for the phrase. From the
    phrase z alone: read from the whole decoder, the bars' z's drawn from the prior left the
    guitar out of half as many phrases as the data (decisions.md). The table starts at zero."""

    GAIN = 10.0  # as VoiceChain.GAIN
    MOST_TRACKS = 12  # the arrangements' rates are kept for up to 2^12 patterns

    def __init__(self, tracks: int, phrase_dim: int, width: int) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Linear(phrase_dim, width), nn.GELU(), nn.Linear(width, tracks))
        self.with_before = nn.Parameter(torch.zeros(tracks, tracks))  # (k, j): track j < k plays
        # each arrangement's (set of tracks playing, bit k = track k) share of the training phrases,
        # fitted after training (`fit_rates`); all zero: not fitted
        self.register_buffer("rates", torch.zeros(2 ** tracks if tracks <= self.MOST_TRACKS else 0))

    @property
    def fitted(self) -> bool:
        return bool(self.rates.sum() > 0)

    @staticmethod
    def pattern(playing: Tensor) -> Tensor:
        """Which tracks play `[N, T]` (bool) -> each phrase's arrangement number `[N]` (bit k: track k)."""
        return (playing.long() << torch.arange(playing.shape[1], device=playing.device)).sum(1)

    def fit_rates(self, playing: Tensor) -> None:
        """Keep the arrangements' shares among phrases whose playing tracks are `playing` `[N, T]`."""
        if self.rates.numel():
            counts = torch.bincount(self.pattern(playing), minlength=self.rates.numel()).to(self.rates)
            self.rates.copy_(counts / counts.sum().clamp(min=1))

    def base(self, phrase_z: Tensor) -> Tensor:
        """The phrase's z `[N, phrase_dim]` -> its part of the logits `[N, T]`."""
        return self.head(phrase_z)

    def table(self) -> Tensor:
        """`[T, T]` (track k, track j) terms from track j playing, zero for j >= k."""
        return self.GAIN * self.with_before.tril(-1)

    def forward(self, phrase_z: Tensor, playing: Tensor) -> Tensor:
        """Teacher-forced logits `[N, T]` given which tracks play, `playing` `[N, T]` (float)."""
        return self.base(phrase_z) + playing @ self.table().to(playing.dtype).T


def tracks_playing(codes: Tensor) -> Tensor:
    """Codes `[N, T, B, S, P]` -> bool `[N, T]`: the tracks sounding somewhere in the phrase."""
    return (codes > 0).flatten(2).any(-1)


def rests_only(raw: Tensor, absent: Tensor) -> Tensor:
    """Mono head output `[..., 3 + P]` with onset and hold off where `absent` (bool, broadcast to
    `[...]`): a monophonic track decided not to play rests at every step."""
    off = torch.tensor([OFF, OFF, 0.0], dtype=raw.dtype, device=raw.device)
    events = torch.where(absent[..., None], off, raw[..., :EVENTS])
    return torch.cat([events, raw[..., EVENTS:]], -1)


def bar_pitch_sets(codes: Tensor, pitched: list[int]) -> Tensor:
    """Codes `[N, T, B, S, P]` -> `[N, B, 12]` (float 0/1): the pitch classes (index mod 12)
    sounding in each bar in any of the tracks `pitched`."""
    active = (codes[:, pitched] > 0).any(1).any(2).float()  # [N, B, P]
    return pitch_classes(active)


def pitch_classes(active: Tensor) -> Tensor:
    """`[..., P]` (float 0/1) -> `[..., 12]`: 1 where some pitch of that class (index mod 12) is on."""
    pad = (-active.shape[-1]) % 12
    return F.pad(active, (0, pad)).unflatten(-1, (-1, 12)).amax(-2)


def silent_bars(cells: Tensor) -> Tensor:
    """`[N, Tp, B, S, P, 2]` cells -> bool `[N, Tp, B]`: no cell of the bar sounds."""
    return ~cells.flatten(3).bool().any(-1)


def cell_age(onset: Tensor, active: Tensor, most: int) -> Tensor:
    """Cells' onset and active planes `[N, Tp, L, P]` (bool) -> at each step how many steps the
    note sounding there has lasted, that step counted (0 where silent), at most `most`."""
    steps = torch.arange(active.shape[2], device=active.device).view(1, 1, -1, 1)
    before = torch.cat([torch.zeros_like(active[:, :, :1]), active[:, :, :-1]], 2)
    starts = onset | (active & ~before)
    last = torch.where(starts, steps, -1).cummax(2).values
    return torch.where(active, steps - last + 1, 0).clamp(max=most)


def next_cells(picked: Tensor, before: Tensor, age: Tensor, most: int) -> tuple[Tensor, Tensor]:
    """Cells `[..., P, 2]` (onset, active; bool) as picked at a step -> (the cells as the codes
    read them: an onset sounds, a sustain after silence is struck; their age), from the cells'
    active plane and age at the step before."""
    active = picked[..., 1] | picked[..., 0]
    onset = picked[..., 0] | (active & ~before[..., 1])
    age = torch.where(active, torch.where(onset, 1, age + 1), 0).clamp(max=most)
    return torch.stack([onset, active], -1), age


def note_age(pitch: Tensor, event: Tensor, n_pitches: int, most: int) -> Tensor:
    """A voice's sounding pitch and event `[..., L]` (`sounding`) -> at each step the steps its
    current note or silence has lasted, that step counted, at most `most` (long `[..., L]`). Read
    from what sounds, so a hold after a rest (silent) continues the silence as a rest does."""
    steps = torch.arange(pitch.shape[-1], device=pitch.device)
    before = torch.cat([torch.full_like(pitch[..., :1], n_pitches), pitch[..., :-1]], -1)
    starts = (event == 0) | ((event == 2) & (before < n_pitches)) | (steps == 0)
    last = torch.where(starts, steps, -1).cummax(-1).values
    return (steps - last + 1).clamp(max=most)


def next_state(picked: Tensor, before: Tensor, n_pitches: int) -> tuple[Tensor, Tensor]:
    """A voice's (sounding pitch, event) after it takes class `picked` `[N]`, from the pitch it
    sounded the step before (P: silent), as `sounding` reads a whole voice."""
    p = n_pitches
    pitch = torch.where(picked < p, picked, torch.where(picked == p, before, p))
    return pitch, torch.where(picked < p, 0, torch.where(pitch < p, 1, 2))
