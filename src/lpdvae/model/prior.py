"""The distribution generation draws z from: N(0, I), or a Gaussian mixture fitted after
training to the training phrases' posterior samples (`model.prior_components`).

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
DRAWS = 4           # posterior draws per phrase: the mixture fits q(z|x), not only its means
REG_COVAR = 1e-3    # added to each covariance's diagonal: keeps thin components invertible


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
