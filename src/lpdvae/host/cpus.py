"""How many CPUs this process may really use: the container's CPU quota, not the node's cores.

In a pod capped at 2 CPUs on a 64-core node, `os.sched_getaffinity` (and torch's default thread
count) still say 64: 64 pool workers or 64 intra-op threads then share 2 CPUs of CFS quota, are
throttled every period and run many times slower than 2 would (measured: two trainings sharing
2 cores, 0.1 s -> 3 s a step). Every pool and torch's thread count are sized from
`available_cpus()`: the cgroup v2 `cpu.max` quota, else the cgroup v1 CFS quota, else the
affinity mask, whichever is smallest.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
V1_CPU_DIRS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


def _v2_quota(root: Path) -> float | None:
    """`cpu.max` ("<quota> <period>" or "max <period>") of this container's cgroup v2 (the
    namespace root, as containerd and CRI-O mount it)."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _v1_quota(root: Path) -> float | None:
    """cfs_quota_us / cfs_period_us of the cgroup v1 cpu controller (-1: no quota)."""
    for name in V1_CPU_DIRS:
        d = root / name
        try:
            quota = int((d / "cpu.cfs_quota_us").read_text())
            period = int((d / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return quota / period if quota > 0 and period > 0 else None
    return None


def cpu_quota(root: Path | None = None) -> float | None:
    """The container's CPU limit in CPUs (2.5 for `limits.cpu: 2500m`), None when unlimited.
    `root` (default `CGROUP_ROOT`, looked up at call time) is where the cgroup files are."""
    root = CGROUP_ROOT if root is None else root
    return _v2_quota(root) if (root / "cpu.max").exists() else _v1_quota(root)


def _affinity() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def available_cpus(root: Path | None = None) -> int:
    """CPUs this process can use at once: min(affinity, the quota rounded up), at least 1. A
    fractional quota rounds up: 2.5 CPUs keep 3 busy threads fed with little throttling."""
    cpus, quota = _affinity(), cpu_quota(root)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def torch_threads(processes: int = 1, root: Path | None = None) -> int:
    """Size torch's intra-op thread pool to this process's share of `available_cpus()` (one of
    `processes` sharing the pod, e.g. torchrun's local ranks); returns the count set."""
    import torch

    n = max(1, available_cpus(root) // max(1, processes))
    if torch.get_num_threads() != n:
        log.debug("torch threads %d -> %d (CPU quota share of %d processes)", torch.get_num_threads(), n, processes)
        torch.set_num_threads(n)
    return n
