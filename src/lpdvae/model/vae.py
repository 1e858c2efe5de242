"""The hierarchical convolutional-recurrent VAE over multitrack phrases of note codes.

Phrases are uint8 codes `[N, T, B, S, P]` (tracks, bars, steps per bar, pitches): 0 silent,
1 sustain, 2 onset (`lpdvae.data.codes`). Encoder: dilated convolutions read the phrase step by step
(each track's activity and onset planes side by side), flattened into mu and log sigma^2 of z.
Decoder: a "conductor" GRU unrolls z into one embedding per bar; dilated convolutions over the
bar's steps turn each into per-step features, and each track gets the output distribution its
kind needs (`tracks[].kind` in params.yaml):

- monophonic: a categorical per step over `onset at pitch p` (P classes), hold, rest, factorised
  as an event (onset / hold / rest) times the onset's pitch. The pitch head is also trained on
  every held step (`train.hold_pitch_weight`): the pitch a voice sounds changes slowly, so dense
  supervision teaches it faster than the onsets alone (docs/decisions.md). With
  `model.voice_chain` the voices are drawn jointly, in track order within each step (soprano
  first for SATB), as BachBot serialises a step's voices top-down: voice v's head also sees the
  sounding pitch and event of voices < v at the same step (`VoiceChain`). Training is
  teacher-forced (the true upper voices); sampling draws and reconstruction decides voice by voice;
- polyphonic / drums: independent Bernoulli onset and sustain per cell.

Decoding follows from the distribution (the most likely class / cell), never from a tuned
threshold.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lpdvae.data.codes import highest_pitch, mono_classes, mono_to_codes, planes
from lpdvae.io import atomic_write_bytes, atomic_write_json
from lpdvae.params import TRACK_KINDS, ModelParams, Params, RepresentationParams

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
META_FILE = "model.json"
FORMAT_VERSION = 7  # 7: voice chain; 6: conv phrase encoder and bar decoder; 5: factorised monophonic head
ACTIVE_UNIT_THRESHOLD = 0.01  # variance of E[z|x]: the usual "active unit" cut-off
MONO = "monophonic"
_ONSET_BIAS = -4.0  # Bernoulli heads start near the sparsity of piano rolls

Outputs = tuple[Tensor, Tensor]  # (mono log-probs [N, Tm, B, S, P+2], poly logits [N, Tp, B, S, P, 2])
Pick = Callable[[Tensor, int], Tensor]  # (log-probs [N, B, S, P+2] of voice v, v) -> its classes [N, B, S]
_EVENTS = 3  # onset, hold, rest


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
    """`[N, L, features]` steps of a phrase -> `[N, 2 * hidden]`: each step's tracks x
    (activity, onset) x pitches embedded, two dilated residual convs over the steps, every
    `pool` steps merged into one, two more over the merged steps (receptive field ~30 steps), all
    flattened into one position-aware vector (the CNN view).

    Chosen over a bidirectional GRU over the steps (MusicVAE's encoder) and the design's GRU over
    bars, whose codes barely depend on the phrase; merging after two blocks instead of four is
    cheaper at the same quality (the comparisons: docs/decisions.md). No recurrence: its steps
    run in parallel."""

    DILATIONS = (1, 2)  # of the blocks before the merge, and of those after it

    def __init__(self, steps: int, features: int, embedding: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.pool = next(k for k in (4, 2, 1) if steps % k == 0)
        self.inp = nn.Sequential(nn.Dropout(dropout), nn.Linear(features, embedding),
                                 nn.LayerNorm(embedding), nn.GELU())
        self.fine = nn.Sequential(*(ResidualConv(embedding, d) for d in self.DILATIONS))
        self.merge = nn.Linear(self.pool * embedding, embedding)
        self.coarse = nn.Sequential(*(ResidualConv(embedding, d) for d in self.DILATIONS))
        self.down = nn.Linear(embedding, embedding // 2)
        self.out = nn.Sequential(nn.Linear(steps // self.pool * (embedding // 2), 2 * hidden), nn.GELU())

    def forward(self, steps: Tensor) -> Tensor:
        h = self.fine(self.inp(steps))
        n, length, width = h.shape
        h = self.coarse(self.merge(h.reshape(n, length // self.pool, self.pool * width)))
        return self.out(self.down(h).flatten(1))


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
    """Extra head logits `[N, V, B, S, 3 + P]` for V monophonic voices: voice v's from the decoder
    feature of its step and the sum, over the voices u < v, of an embedding of (u, its sounding
    pitch, its event) at that step, through one GELU layer. The output layer starts at zero, so
    an untrained chain is the independent model; voice 0 sees no other voice."""

    def __init__(self, voices: int, pitches: int, width: int, hidden: int) -> None:
        super().__init__()
        self.voices, self.pitches, self.hidden = voices, pitches, hidden
        self.states = (pitches + 1) * 3  # sounding pitch or silent, x event
        self.embed = nn.Embedding(voices * self.states, hidden)
        self.feat = nn.Linear(width, voices * hidden)
        self.out = nn.Parameter(torch.zeros(voices, hidden, _EVENTS + pitches))
        self.bias = nn.Parameter(torch.zeros(voices, _EVENTS + pitches))

    def forward(self, feats: Tensor, classes: Tensor) -> Tensor:
        """`feats` `[N, B, S, F]`, `classes` `[N, V, B, S]` -> `[N, V, B, S, 3 + P]`; voice v's
        output depends on `classes[:, :v]` only."""
        n, v, b, s = classes.shape
        pitch, event = sounding(classes, self.pitches)
        voice = torch.arange(v, device=classes.device).view(1, v, 1, 1)
        e = self.embed((voice * self.states + pitch * 3 + event).permute(0, 2, 3, 1))  # [N, B, S, V, H]
        upper = e.cumsum(3) - e  # voices above each one (an exclusive sum)
        h = F.gelu(self.feat(feats).view(n, b, s, v, self.hidden) + upper)
        return torch.einsum("nbswh,whk->nwbsk", h, self.out.to(h.dtype)) + self.bias.view(1, v, 1, 1, -1)


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
        self.latent_dim = model.latent_dim
        self.meta: dict[str, Any] = {}
        _, b, s, p = self.shape
        self.encoder = PhraseEncoder(b * s, 2 * self.n_tracks * p, model.step_embedding,
                                     model.encoder_hidden, model.dropout)
        self.to_stats = nn.Linear(2 * model.encoder_hidden, 2 * model.latent_dim)
        self.z_to_conductor = nn.Sequential(nn.Linear(model.latent_dim, model.conductor_hidden),
                                            nn.Tanh())
        self.conductor = nn.GRU(model.latent_dim, model.conductor_hidden, batch_first=True)
        self.bar_head = nn.Sequential(nn.Dropout(model.dropout),
                                      nn.Linear(model.conductor_hidden, model.decoder_hidden),
                                      nn.GELU())
        self.z_skip = nn.Linear(model.latent_dim, model.decoder_hidden)
        self.bar_decoder = BarDecoder(s, model.decoder_hidden)
        feat = model.decoder_hidden
        self.mono_head = nn.Linear(feat, len(self.mono_tracks) * (_EVENTS + p)) if self.mono_tracks else None
        self.poly_head = nn.Linear(feat, len(self.poly_tracks) * p * 2) if self.poly_tracks else None
        if self.poly_head is not None:
            nn.init.constant_(self.poly_head.bias, _ONSET_BIAS)
        self.chain = (VoiceChain(len(self.mono_tracks), p, feat, feat // 2)
                      if model.voice_chain and len(self.mono_tracks) > 1 else None)

    # -- the two halves

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Codes `[N, T, B, S, P]` -> (mu, logvar), each `[N, latent_dim]`."""
        n, t, b, s, p = x.shape
        steps = planes(x).reshape(n, 2 * t, b * s, p).transpose(1, 2).reshape(n, b * s, 2 * t * p)
        mu, logvar = self.to_stats(self.encoder(steps)).chunk(2, dim=-1)
        return mu, logvar

    def decode(self, z: Tensor, x: Tensor | None = None) -> Outputs:
        """`[N, latent_dim]` -> (mono log-probs `[N, Tm, B, S, P+2]`, poly logits `[N, Tp, B, S, P, 2]`).

        With the voice chain each voice's log-probs are conditioned on the voices above it: those
        of `x` (codes, teacher forcing: what `recon_nll` of `x` needs), else the classes decided
        voice by voice (so `to_codes` of the result is the chain's in-order decision)."""
        feats, poly = self._features(z)
        if self.chain is None:
            return self._mono_log_probs(feats, None), poly
        if x is not None:
            return self._mono_log_probs(feats, mono_classes(x[:, self.mono_tracks])), poly
        return self._in_order(feats, poly, lambda logp, v: mono_decision(logp))[0]

    def decode_in_order(self, z: Tensor, pick: Pick) -> tuple[Outputs, Tensor]:
        """(outputs, mono classes `[N, Tm, B, S]`): voice by voice, `pick` chooses voice v's
        classes from its log-probs given the voices already chosen; the returned log-probs are
        each voice's given the choices above it."""
        return self._in_order(*self._features(z), pick)

    def _in_order(self, feats: Tensor, poly: Tensor, pick: Pick) -> tuple[Outputs, Tensor]:
        n, b, s, _ = feats.shape
        p = self.rep.n_pitches
        classes = torch.full((n, len(self.mono_tracks), b, s), p + 1, dtype=torch.long, device=feats.device)
        logp = self._mono_log_probs(feats, classes)
        for v in range(len(self.mono_tracks)):
            if v > 0 and self.chain is not None:  # voice v's row sees classes[:, :v], now chosen
                logp = self._mono_log_probs(feats, classes)
            classes[:, v] = pick(logp[:, v], v)
        return (logp, poly), classes

    def _features(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Per-step decoder features `[N, B, S, F]` and the poly logits `[N, Tp, B, S, P, 2]`."""
        _, b, s, p = self.shape
        n = z.shape[0]
        h0 = self.z_to_conductor(z).unsqueeze(0)
        per_bar, _ = self.conductor(z.unsqueeze(1).expand(n, b, z.shape[-1]).contiguous(), h0)
        skip = self.z_skip(z).repeat_interleave(b, dim=0)
        feats = self.bar_decoder(self.bar_head(per_bar).reshape(n * b, -1), skip)  # [N*B, S, F]
        tp = len(self.poly_tracks)
        poly = (self.poly_head(feats).view(n, b, s, tp, p, 2).permute(0, 3, 1, 2, 4, 5)
                if self.poly_head is not None else z.new_zeros(n, 0, b, s, p, 2))
        return feats.view(n, b, s, -1), poly

    def _mono_log_probs(self, feats: Tensor, classes: Tensor | None) -> Tensor:
        """`[N, Tm, B, S, P+2]` log-probs of the monophonic tracks; with the chain, voice v's
        given `classes[:, :v]`."""
        n, b, s, _ = feats.shape
        p, tm = self.rep.n_pitches, len(self.mono_tracks)
        if self.mono_head is None:
            return feats.new_zeros(n, 0, b, s, p + 2)
        raw = self.mono_head(feats).view(n, b, s, tm, _EVENTS + p).permute(0, 3, 1, 2, 4)
        if self.chain is not None and classes is not None:
            raw = raw + self.chain(feats, classes)
        return mono_log_probs(raw)

    def forward(self, x: Tensor, eps: Tensor | None = None) -> tuple[Outputs, Tensor, Tensor]:
        """(outputs teacher-forced on `x`, mu, logvar); z = mu + sigma * eps, eps ~ N(0, I) unless given."""
        mu, logvar = self.encode(x)
        if eps is None:
            eps = torch.randn_like(mu)
        z = mu + torch.exp(0.5 * logvar) * eps.to(mu.dtype)
        return self.decode(z, x), mu, logvar

    # -- the distribution

    def recon_nll(self, out: Outputs, x: Tensor, mono_target: Tensor | None = None) -> Tensor:
        """Negative log-likelihood of codes `x` under the decoder's distribution: `[N]` nats.
        `mono_target`: `mono_classes` of x's monophonic tracks, when the caller has them."""
        mono, poly = out
        nll = x.new_zeros(x.shape[0], dtype=torch.float32)
        if self.mono_tracks:
            target = mono_classes(x[:, self.mono_tracks]) if mono_target is None else mono_target  # [N, Tm, B, S]
            ce = F.cross_entropy(mono.float().flatten(0, -2), target.flatten(), reduction="none")
            nll = nll + ce.view(x.shape[0], -1).sum(1)
        if self.poly_tracks:
            target = planes(x[:, self.poly_tracks], stacked=True)  # [N, Tp, B, S, P, 2] onset, active
            bce = F.binary_cross_entropy_with_logits(poly.float(), target, reduction="none")
            nll = nll + bce.flatten(1).sum(1)
        return nll

    def to_codes(self, out: Outputs) -> Tensor:
        """The most likely codes `[N, T, B, S, P]` (uint8) under the decoder's distribution."""
        mono, poly = out
        return self._codes(mono_decision(mono), poly > 0)

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

    def draw_codes(self, z: Tensor, temperature: float, gen: torch.Generator) -> Tensor:
        """Codes `[N, T, B, S, P]` drawn from the decoder's distribution given z `[N, latent_dim]`
        with its logits divided by `temperature` (MusicVAE's sampling temperature; towards 0 it
        becomes `to_codes`), the monophonic voices one after another (the chain's order)."""
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")

        def pick(logp: Tensor, v: int) -> Tensor:  # drawn on the CPU: one generator on any device
            return mono_draw(logp.detach().float().cpu(), temperature, gen).to(logp.device)

        (_, poly), classes = self.decode_in_order(z, pick)
        poly = poly.detach().float().cpu()
        return self._codes(classes.cpu(), torch.rand(poly.shape, generator=gen) < torch.sigmoid(poly / temperature))

    @torch.no_grad()
    def sample(self, n: int, seed: int, temperature: float = 1.0) -> Tensor:
        """Codes `[n, T, B, S, P]`: z ~ N(0, I), then the phrase drawn from the decoder's
        distribution at `temperature`. Drawn, not its most likely value: the argmax of a
        non-autoregressive decoder repeats each voice's likeliest pitch, sampling keeps the data's
        variety of pitches (docs/decisions.md)."""
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.latent_dim, generator=gen)
        with _eval_mode(self):
            return self.draw_codes(z.to(self._device()), temperature, gen)

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
    event = torch.log_softmax(raw[..., :_EVENTS].float(), dim=-1)
    pitch = torch.log_softmax(raw[..., _EVENTS:].float(), dim=-1)
    return torch.cat([event[..., :1] + pitch, event[..., 1:]], dim=-1)


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


# ---------------------------------------------------------------- loss


def kl_per_sample_dim(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(q(z|x) || N(0, I)) per sample and latent dimension: `[N, D]` nats."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def free_nats_kl(kl_per_sample: Tensor, free_nats: float) -> Tensor:
    """max(KL - free_nats, 0) per sample (MusicVAE's free bits on the *total* KL): the first
    `free_nats` of information in z cost nothing, so the latent carries enough to reconstruct.
    Per sample, so DDP's mean of per-rank means equals one process exactly."""
    return torch.clamp(kl_per_sample - free_nats, min=0.0)


def hold_pitch_nll(vae: MusicVAE, out: Outputs, x: Tensor, mono_target: Tensor | None = None) -> Tensor:
    """`[N]` nats: -log p(pitch) of the pitch each monophonic track sounds at its held steps,
    under the pitch head's distribution. Not part of the likelihood (a held step's pitch is
    its onset's): an auxiliary target that gives the pitch head a signal at every sounding step.
    `mono_target` as in `MusicVAE.recon_nll`."""
    if not vae.mono_tracks:
        return x.new_zeros(x.shape[0], dtype=torch.float32)
    codes = x[:, vae.mono_tracks]
    target = mono_classes(codes) if mono_target is None else mono_target
    held = target == codes.shape[-1]  # [N, Tm, B, S]: HOLD, as the likelihood reads it
    sounding = highest_pitch(codes > 0)
    pitch_logp = torch.log_softmax(out[0][..., :-2].float(), dim=-1)
    nll = -pitch_logp.gather(-1, sounding.unsqueeze(-1)).squeeze(-1)
    return (nll * held).flatten(1).sum(1)


def vae_loss(vae: MusicVAE, out: Outputs, x: Tensor, mu: Tensor, logvar: Tensor, beta: float,
             free_nats: float, hold_pitch_weight: float = 0.0) -> dict[str, Tensor]:
    """Batch-mean loss = NLL + hold_pitch_weight * hold-pitch NLL + beta * max(KL - free_nats, 0).

    Returns `loss`, `recon` (NLL nats per phrase), `hold_pitch` (the auxiliary term's nats per
    phrase), `kl` (true total KL nats per phrase) and `kl_per_dim` `[D]` (batch mean)."""
    mono_target = mono_classes(x[:, vae.mono_tracks]) if vae.mono_tracks else None  # once for both terms
    recon = vae.recon_nll(out, x, mono_target).mean()
    hold = hold_pitch_nll(vae, out, x, mono_target).mean()
    kl_dim = kl_per_sample_dim(mu.float(), logvar.float())
    kl = kl_dim.sum(1)
    loss = recon + hold_pitch_weight * hold + beta * free_nats_kl(kl, free_nats).mean()
    return {"loss": loss, "recon": recon, "hold_pitch": hold, "kl": kl.mean(), "kl_per_dim": kl_dim.mean(0)}


def active_units(variance: Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """Latent dims carrying information: Var_x E[z_d|x] (or KL_d) above `threshold`."""
    return int((variance > threshold).sum().item())


# ---------------------------------------------------------------- persistence


def model_meta(params: Params) -> dict[str, Any]:
    """What `load_model` needs to rebuild the network and decode its output."""
    return {
        "format_version": FORMAT_VERSION,
        "model": dataclasses.asdict(params.model),
        "representation": dataclasses.asdict(params.representation),
        "tracks": [dataclasses.asdict(t) for t in params.tracks],
        "params_digest": params.digest(),
        "torch_version": torch.__version__,
    }


def build_model(params: Params) -> MusicVAE:
    return MusicVAE(params.model, params.representation, [t.kind for t in params.tracks])


def unwrap(model: nn.Module) -> MusicVAE:
    """The bare MusicVAE inside DDP / torch.compile / Reconstructor wrappers."""
    while not isinstance(model, MusicVAE):
        inner = next((getattr(model, a) for a in ("module", "_orig_mod", "vae") if hasattr(model, a)),
                     None)
        if not isinstance(inner, nn.Module):
            raise TypeError(f"not a MusicVAE: {type(model).__name__}")
        model = inner
    return model


def save_model(model: nn.Module, out_dir: str | Path, params: Params) -> Path:
    """Write `model.pt` (state dict) and `model.json` (meta) into `out_dir`; returns `out_dir`."""
    import io

    out_dir = Path(out_dir)
    vae = unwrap(model)
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in vae.state_dict().items()}, buf)
    atomic_write_bytes(out_dir / MODEL_FILE, buf.getvalue())
    atomic_write_json(out_dir / META_FILE, model_meta(params))
    return out_dir


def load_model(model_dir: str | Path, map_location: str | torch.device = "cpu") -> MusicVAE:
    """Rebuild a saved MusicVAE (eval mode) from `model.pt` + `model.json`; `.meta` holds the meta.

    Every failure names the folder and the reason (a missing folder, a meta that does not match
    the weights), as a ValueError/FileNotFoundError the CLI reports in one line."""
    model_dir = Path(model_dir)
    try:
        meta = json.loads((model_dir / META_FILE).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{model_dir / META_FILE}: no model here (run `lpdvae train`)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{model_dir / META_FILE}: unreadable model meta: {exc}") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{model_dir / META_FILE}: model format {meta.get('format_version')}, this "
                         f"lpdvae reads format {FORMAT_VERSION}: retrain it (`lpdvae train`)")
    try:
        mp = dict(meta["model"])
        vae = MusicVAE(ModelParams(**mp), RepresentationParams(**meta["representation"]),
                       [t["kind"] for t in meta["tracks"]])
        state = torch.load(model_dir / MODEL_FILE, map_location=map_location, weights_only=True)
        vae.load_state_dict(state)
    except FileNotFoundError:
        raise FileNotFoundError(f"{model_dir / MODEL_FILE}: no weights beside model.json") from None
    except (KeyError, TypeError, RuntimeError) as exc:
        raise ValueError(f"{model_dir}: model.json does not match model.pt: {exc}") from None
    vae.to(map_location)
    vae.meta = meta
    return vae.eval()
