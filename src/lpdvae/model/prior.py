"""The distribution generation draws z from: N(0, I), a Gaussian mixture fitted after
training to the training phrases' posterior samples (`model.prior_components`), or a kernel
density over them (`model.prior: kde`, `KernelDensity`).

Why: the KL term pulls each posterior towards N(0, I), but their mixture over the training set (the
aggregate posterior) stays far from it, so z drawn from N(0, I) lands where the decoder has seen
few phrases and decodes to music less like the corpus than held-out chorales are (the fidelity
check fails). Fitting a density to the aggregate posterior after training and sampling from it
is the ex-post density estimation of Ghosh et al. (2020, "From variational to deterministic
autoencoders"); measured in docs/decisions.md. The mixture has a few components for a corpus of
thousands of phrases, so it cannot memorise phrases (the copy check guards that too).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

FIT_PHRASES = 8192  # training phrases the mixture is fitted on at most (a seeded subset beyond)
HELD_OUT_PHRASES = 1024  # validation phrases the bar density's bandwidth is chosen on at most
DRAWS = 4           # posterior draws per phrase: the mixture fits q(z|x), not only its means
REG_COVAR = 1e-3    # added to each covariance's diagonal: keeps thin components invertible


def kl_per_sample_dim(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(q(z|x) || N(0, I)) per sample and latent dimension: `[N, D]` nats."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


class LatentPrior(nn.Module):
    """`components` full-covariance Gaussians over z (buffers, saved in model.pt); with 0
    components, or before `fit`, z ~ N(0, I) drawn exactly as `torch.randn` does."""

    def __init__(self, dim: int, components: int) -> None:
        super().__init__()
        self.dim, self.components = dim, components
        k = max(components, 1)
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.register_buffer("weights", torch.full((k,), 1.0 / k))
        self.register_buffer("means", torch.zeros(k, dim))
        self.register_buffer("chol", torch.eye(dim).repeat(k, 1, 1))

    def sample(self, n: int, gen: torch.Generator) -> Tensor:
        """`[n, dim]` z on the CPU, from `gen`."""
        if not bool(self.fitted):
            return torch.randn(n, self.dim, generator=gen)
        k = torch.multinomial(self.weights.cpu(), n, replacement=True, generator=gen)
        eps = torch.randn(n, self.dim, 1, generator=gen)
        return self.means.cpu()[k] + (self.chol.cpu()[k] @ eps).squeeze(-1)

    def fit(self, z: Tensor, seed: int) -> None:
        """Fit the mixture to samples `z` `[M, dim]` (EM, k-means start, seeded)."""
        if self.components == 0:
            return
        if len(z) < self.components * 2:
            raise ValueError(f"the latent prior needs at least {self.components * 2} posterior samples, got {len(z)}")
        from sklearn.mixture import (
            GaussianMixture,  # only training fits; loading and sampling do not need it
        )

        gm = GaussianMixture(self.components, covariance_type="full", reg_covar=REG_COVAR,
                             random_state=seed % 2**32).fit(z.double().numpy())
        self.weights.copy_(torch.from_numpy(gm.weights_ / gm.weights_.sum()))
        self.means.copy_(torch.from_numpy(gm.means_))
        self.chol.copy_(torch.linalg.cholesky(torch.from_numpy(gm.covariances_)))
        self.fitted.fill_(True)


class BarPrior(nn.Module):
    """p(z_b | phrase z, z_<b): each bar's latent given the phrase's and the bars before it, a
    diagonal Gaussian whose mean and log-variance a GRU over the bars reads off (`model.bar_prior:
    learned`), trained with the model: its KL replaces the bar latents' KL against N(0, I).

    Why: the bar latents' posteriors are sharp and their joint over a phrase's bars is what the
    decoder needs; no mixture fitted after training draws it (docs/decisions.md, 2026-12-05). A
    prior learned with the model pulls the posteriors towards what it can draw, as the top-down
    priors of hierarchical VAEs (Ladder VAE, NVAE) do. Starts as N(0, I) (zeroed output layer)."""

    HIDDEN = 128
    LOGVAR_RANGE = 6.0  # the prior's log-variance is kept in (-6, 6): a bounded KL from step 0

    def __init__(self, phrase_dim: int, bar_dim: int, bars: int) -> None:
        super().__init__()
        self.phrase_dim, self.bar_dim, self.bars = phrase_dim, bar_dim, bars
        self.start = nn.Linear(phrase_dim, self.HIDDEN)
        self.gru = nn.GRU(phrase_dim + bar_dim, self.HIDDEN, batch_first=True)
        self.out = nn.Linear(self.HIDDEN, 2 * bar_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """z `[N, phrase_dim + bars * bar_dim]` -> the prior's (mu, logvar) of each bar's z given
        z's phrase part and bars before it, `[N, bars * bar_dim]` each."""
        n = z.shape[0]
        phrase, bars = z[:, :self.phrase_dim], z[:, self.phrase_dim:].reshape(n, self.bars, self.bar_dim)
        before = torch.cat([bars.new_zeros(n, 1, self.bar_dim), bars[:, :-1]], 1)
        inputs = torch.cat([phrase.unsqueeze(1).expand(n, self.bars, self.phrase_dim), before], -1)
        h, _ = self.gru(inputs, torch.tanh(self.start(phrase)).unsqueeze(0))
        mu, logvar = self.out(h).chunk(2, dim=-1)
        return mu.flatten(1), (self.LOGVAR_RANGE * torch.tanh(logvar / self.LOGVAR_RANGE)).flatten(1)

    def relative(self, mu: Tensor, logvar: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """The posterior's (mu, logvar) in the coordinates where this prior is N(0, I), bar by
        bar given `z` (a draw of that posterior): KL(q || p) is then KL against N(0, I), which
        `kl_per_sample_dim` computes unchanged. The phrase part is left as it is."""
        d = self.phrase_dim
        p_mu, p_logvar = self(z)
        bar_mu = (mu[:, d:] - p_mu) * torch.exp(-0.5 * p_logvar)
        return torch.cat([mu[:, :d], bar_mu], 1), torch.cat([logvar[:, :d], logvar[:, d:] - p_logvar], 1)

    @torch.no_grad()
    def sample(self, phrase: Tensor, gen: torch.Generator) -> Tensor:
        """`[N, phrase_dim + bars * bar_dim]`: the phrase z's `phrase` (CPU), then each bar's z
        drawn in order given it and the bars drawn before."""
        n, d, bd = phrase.shape[0], self.phrase_dim, self.bar_dim
        z = torch.cat([phrase, phrase.new_zeros(n, self.bars * bd)], 1)
        for b in range(self.bars):
            mu, logvar = (a.float().cpu() for a in self(z.to(self.out.weight.device)))
            cols = slice(d + b * bd, d + (b + 1) * bd)
            z[:, cols] = mu[:, b * bd:(b + 1) * bd] + torch.exp(0.5 * logvar[:, b * bd:(b + 1) * bd]) * \
                torch.randn(n, bd, generator=gen)
        return z


class KernelDensity(nn.Module):
    """Generation's z's drawn as one kept training phrase's posterior draw, chosen at random, plus
    isotropic Gaussian noise of sd `bandwidth`: a kernel density over the training phrases'
    posteriors, fitted after training as `LatentPrior` is. Two uses:

    - the bars' z's (`model.bar_prior: kde`), the bandwidth under which held-out (validation)
      phrases' bar sequences are likeliest (`fit`);
    - the whole z (`model.prior: kde`), the bandwidth at which the decoded samples sit as near
      the training phrases as held-out phrases do (`keep`, then the trainer's choice,
      `lpdvae.training.loop`): held-out likelihood picks the widest bandwidth, whose z's decode to
      music further from every training phrase than real held-out music (docs/decisions.md).

    Why: the decoder writes data-like chords and harmony from latents a phrase's encoding
    produced and tolerates noise around them; no parametric density of the latents (mixtures, a
    learned Gaussian per bar) put its draws there (docs/decisions.md, 2026-12-06). Samples near a
    training phrase are what the copy check and the fidelity floor measure."""

    BANDWIDTHS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

    def __init__(self, dim: int, rows: int = FIT_PHRASES) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer("rows", torch.zeros(rows, dim))  # the first `count` are the kept draws
        self.register_buffer("count", torch.zeros((), dtype=torch.long))  # 0 until fitted
        self.register_buffer("bandwidth", torch.ones(()))

    def keep(self, z: Tensor, seed: int) -> None:
        """Keep a seeded subset of the posterior draws `z` `[M, dim]` (at most `rows`)."""
        if len(z) == 0:
            raise ValueError("the kernel density needs posterior draws, got none")
        keep = torch.randperm(len(z), generator=torch.Generator().manual_seed(seed))[:len(self.rows)]
        self.rows.zero_()
        self.rows[:len(keep)] = z[keep]
        self.count.fill_(len(keep))

    def fit(self, z: Tensor, held_out: Tensor, seed: int) -> dict[float, float]:
        """`keep` the draws `z` and choose the bandwidth that maximises the held-out draws' mean
        log-density; returns it per bandwidth."""
        if len(held_out) == 0:
            raise ValueError(f"the kernel density needs held-out samples, got {len(held_out)}")
        self.keep(z, seed)
        scores = {h: self.log_density(held_out, h).mean().item() for h in self.BANDWIDTHS}
        self.bandwidth.fill_(max(scores, key=lambda h: scores[h]))
        return scores

    @property
    def fitted(self) -> bool:
        return int(self.count) > 0

    def log_density(self, v: Tensor, h: float) -> Tensor:
        """`[V]` log-density of `v` `[V, dim]` under the kernel density at bandwidth h."""
        rows = self.rows[:int(self.count)]
        sq = torch.cdist(v.double(), rows.double()).pow(2)  # [V, M]
        m = torch.tensor(float(len(rows)), dtype=torch.float64)
        norm = 0.5 * self.dim * torch.log(torch.tensor(2 * torch.pi * h * h, dtype=torch.float64))
        return (torch.logsumexp(-sq / (2 * h * h), dim=1) - torch.log(m) - norm).float()

    def sample(self, n: int, gen: torch.Generator) -> Tensor:
        """`[n, dim]` z's on the CPU, from `gen`; N(0, I) before `keep` / `fit`."""
        if not self.fitted:
            return torch.randn(n, self.dim, generator=gen)
        pick = torch.randint(int(self.count), (n,), generator=gen)
        return self.rows.cpu()[pick] + float(self.bandwidth) * torch.randn(n, self.dim, generator=gen)


@torch.no_grad()
def posterior_samples(encode: Callable[[Tensor], tuple[Tensor, Tensor]], batches: Iterable[Tensor],
                      seed: int) -> Tensor:
    """`[phrases * DRAWS, dim]` draws of z ~ q(z|x) for each phrase of `batches` (CPU float)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for x in batches:
        mu, logvar = (a.float().cpu() for a in encode(x))
        out.extend(mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=gen) for _ in range(DRAWS))
    return torch.cat(out)
