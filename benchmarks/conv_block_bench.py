"""Training-step time of the demo model with its residual conv blocks as one matmul over three
taps (`lpdvae.model.vae.ResidualConv`, shipped) vs the same blocks as `nn.Conv1d` (the same function).

Side by side in one run, alternating (matmul, conv1d, matmul, ...) on the same batch of
demo-shaped synthetic phrases (train_bench's), the demo's params and the machine's thread count;
medians are reported with their ratio. A full step each time: forward, `vae_loss`, backward, AdamW.

    python -m benchmarks.conv_block_bench [--steps 12] [--batch 64]

JSON in benchmarks/results/conv_block.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.train_bench import make_tensors
from lpdvae.data.shards import load_split
from lpdvae.io import atomic_write_json
from lpdvae.model.files import build_model
from lpdvae.model.loss import vae_loss
from lpdvae.model.vae import ResidualConv
from lpdvae.params import load_params

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "conv_block.json"


class Conv1dBlock(nn.Module):
    """ResidualConv's function written with nn.Conv1d (channels-first, mkldnn on a CPU)."""

    def __init__(self, block: ResidualConv) -> None:
        super().__init__()
        width = block.norm.normalized_shape[0]
        self.norm = block.norm
        self.conv = nn.Conv1d(width, width, 3, padding=block.dilation, dilation=block.dilation)

    def forward(self, x: Tensor) -> Tensor:
        return x + F.gelu(self.conv(self.norm(x).transpose(1, 2))).transpose(1, 2)


def with_conv1d(model: nn.Module) -> nn.Module:
    for name, child in model.named_children():
        if isinstance(child, ResidualConv):
            setattr(model, name, Conv1dBlock(child))
        else:
            with_conv1d(child)
    return model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per variant (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=64, help="phrases per step (default: %(default)s)")
    parser.add_argument("--out", default=str(RESULTS), help="result JSON (default: %(default)s)")
    args = parser.parse_args()
    params = load_params(HERE.parent / "params.yaml")
    models: dict[str, nn.Module] = {}
    for name in ("matmul", "conv1d"):
        torch.manual_seed(0)
        models[name] = build_model(params) if name == "matmul" else with_conv1d(build_model(params))
    with tempfile.TemporaryDirectory(prefix="lpdvae-conv-bench-") as tmp:
        x = torch.from_numpy(load_split(make_tensors(Path(tmp), params, args.batch, 0), "train"))
    optims = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in models.items()}
    times: dict[str, list[float]] = {k: [] for k in models}
    for i in range(args.steps + 2):  # the first two rounds warm up
        for name, model in models.items():
            t = time.perf_counter()
            out, mu, logvar, _ = model(x)
            loss = vae_loss(model, out, x, mu, logvar, 0.5, params.train.free_nats,
                            params.train.hold_pitch_weight)["loss"]
            optims[name].zero_grad()
            loss.backward()
            optims[name].step()
            if i >= 2:
                times[name].append(time.perf_counter() - t)
    medians = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "benchmark": "conv_block", "batch": args.batch, "steps": args.steps,
        "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
        "median_step_s": medians, "matmul_over_conv1d": medians["matmul"] / medians["conv1d"],
    }
    atomic_write_json(Path(args.out), result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
