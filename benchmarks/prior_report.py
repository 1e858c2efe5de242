"""Which latents decode into data-like music: the fitted prior, refits of it, or the encoder's.

For one trained model (`--model DIR`) and one tensor folder it generates `--phrases` phrases
(decoder temperature `--temperature`, one seed) from z of each source below and reports the
evaluation's statistics of each beside the validation split's:
- `prior`: the model's fitted prior (and learned bar prior), as `lpdvae evaluate` samples it;
- `prior_refit_K`: a Gaussian mixture of K components refitted to the same posterior draws;
- `prior_narrowed_F`: the prior with each draw pulled towards its component mean (x F);
- `posterior`: one draw of q(z|x) for each of the first val phrases;
- `posterior_bars_of_another`: that draw's phrase z with the bar z's of another val phrase;
- `prior_phrase_posterior_bars` / `posterior_phrase_prior_bars`: the two halves swapped;
- `posterior_dims_shuffled`: each dimension shuffled across phrases (marginals kept, the
  joint broken);
- `prior_phrase_per_bar_K`: the prior's phrase z and each bar's z from a K-component mixture
  fitted to single bars' latents.
A source that decodes close to the data where the prior does not says the decoder can write
such music and the prior does not find the latents it needs (docs/decisions.md, 2026-12-05).

Not a test and not timed: `python -m benchmarks.prior_report --model DIR --tensors DIR
[--phrases 128] [--out benchmarks/results/prior.json]`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from lpdvae.data.shards import load_split
from lpdvae.evaluation.evalset import phrase_statistics
from lpdvae.evaluation.metrics import aggregate_metrics
from lpdvae.io import atomic_write_json
from lpdvae.model.files import load_model
from lpdvae.model.prior import FIT_PHRASES, LatentPrior, posterior_samples
from lpdvae.model.vae import MusicVAE, _eval_mode

HERE = Path(__file__).resolve().parent
SEED = 7


def _narrowed(prior: LatentPrior, n: int, narrow: float) -> torch.Tensor:
    """`n` draws of `prior` (fitted) as `LatentPrior.sample` draws them, each `narrow` x as far
    from its component's mean (no such knob in the model: only this report needs it)."""
    gen = torch.Generator().manual_seed(SEED)
    k = torch.multinomial(prior.weights, n, replacement=True, generator=gen)
    return prior.means[k] + narrow * (prior.chol[k] @ torch.randn(n, prior.dim, 1, generator=gen)).squeeze(-1)


def _refit_draws(z: torch.Tensor, components: int, n: int) -> torch.Tensor:
    """`n` draws of a `components`-Gaussian mixture fitted to `z`."""
    prior = LatentPrior(z.shape[1], components)
    prior.fit(z, SEED)
    return prior.sample(n, torch.Generator().manual_seed(SEED))


def sources(vae: MusicVAE, val: np.ndarray, train: np.ndarray, n: int,
            components: list[int]) -> dict[str, torch.Tensor]:
    """Every z source of the module docstring, `[n, latent_dim]` each."""
    d, bar = vae.phrase_dim, vae.bar_dim
    gen = torch.Generator().manual_seed(SEED)
    with torch.no_grad(), _eval_mode(vae):
        mu, logvar = vae.encode(torch.from_numpy(val[:n]))
        fit = posterior_samples(vae.encode, (torch.from_numpy(train[i:i + 64]) for i in range(0, len(train), 64)), SEED)
    post = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=gen)
    prior = vae.draw_z(n, torch.Generator().manual_seed(SEED))
    out = {"prior": prior, "posterior": post}
    out.update({f"prior_refit_{k}": _refit_draws(fit, k, n) for k in components})
    if bool(vae.prior.fitted) and vae.prior.dim == vae.latent_dim:  # narrowed over the whole z only
        out.update({f"prior_narrowed_{f}": _narrowed(vae.prior, n, f) for f in (0.75, 0.5)})
    out["posterior_dims_shuffled"] = torch.stack([post[torch.randperm(n, generator=gen), j]
                                                  for j in range(post.shape[1])], 1)
    if bar:
        other = torch.roll(torch.arange(n), 1)
        out["posterior_bars_of_another"] = torch.cat([post[:, :d], post[other, d:]], 1)
        out["prior_phrase_posterior_bars"] = torch.cat([prior[:, :d], post[:, d:]], 1)
        out["posterior_phrase_prior_bars"] = torch.cat([post[:, :d], prior[:, d:]], 1)
        bars = fit[:, d:].reshape(-1, bar)
        for k in components:
            per_bar = _refit_draws(bars, k, n * vae.rep.n_bars).reshape(n, -1)
            out[f"prior_phrase_per_bar_{k}"] = torch.cat([prior[:, :d], per_bar], 1)
    return out


def report(vae: MusicVAE, tensors: Path, n: int, temperature: float, components: list[int]) -> dict:
    val, train = load_split(tensors, "val", limit=n), load_split(tensors, "train", limit=FIT_PHRASES)
    n = min(n, len(val))
    per = phrase_statistics(vae, None)
    result: dict = {"phrases": n, "temperature": temperature, "data_val": aggregate_metrics(per(val))}
    for name, z in sources(vae, val, train, n, components).items():
        with torch.no_grad(), _eval_mode(vae):
            codes = vae.draw_codes(z.float(), temperature, torch.Generator().manual_seed(SEED)).numpy()
        result[name] = aggregate_metrics(per(codes))
        print(name, {k: round(v, 3) for k, v in result[name].items() if "/" not in k}, flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.prior_report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a trained model folder (model.pt, model.json)")
    parser.add_argument("--tensors", type=Path, required=True, help="the tensor folder it was trained on")
    parser.add_argument("--phrases", type=int, default=128, help="phrases per source (default %(default)s)")
    parser.add_argument("--temperature", type=float, default=1.0, help="decoder temperature (default %(default)s)")
    parser.add_argument("--components", default="64,256", help="refitted mixtures' sizes (default %(default)s)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "prior.json",
                        help="JSON result (default %(default)s)")
    args = parser.parse_args()
    components = [int(k) for k in args.components.split(",") if k]
    result = report(load_model(args.model), args.tensors, args.phrases, args.temperature, components)
    atomic_write_json(args.out, {"model": str(args.model), "tensors": str(args.tensors), **result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
