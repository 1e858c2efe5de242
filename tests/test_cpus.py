"""Pools and torch's threads are sized from the container's CPU quota, not the node's cores:
a temporary folder stands in for /sys/fs/cgroup."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lpdvae.host.cpus import available_cpus, cpu_quota, torch_threads

AFFINITY = len(os.sched_getaffinity(0))


def cgroup_v2(tmp_path: Path, cpu_max: str) -> Path:
    (tmp_path / "cpu.max").write_text(cpu_max + "\n")
    return tmp_path


def cgroup_v1(tmp_path: Path, quota: int, period: int = 100000, folder: str = "cpu,cpuacct") -> Path:
    d = tmp_path / folder
    d.mkdir()
    (d / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (d / "cpu.cfs_period_us").write_text(f"{period}\n")
    return tmp_path


def test_a_cgroup_v2_quota_is_read_from_cpu_max(tmp_path):
    assert cpu_quota(cgroup_v2(tmp_path, "250000 100000")) == 2.5


def test_a_cgroup_v2_without_a_limit_has_no_quota(tmp_path):
    assert cpu_quota(cgroup_v2(tmp_path, "max 100000")) is None


def test_a_cgroup_v1_cfs_quota_is_read_when_there_is_no_cpu_max(tmp_path):
    assert cpu_quota(cgroup_v1(tmp_path, 150000)) == 1.5


def test_a_cgroup_v1_quota_of_minus_one_is_no_quota(tmp_path):
    assert cpu_quota(cgroup_v1(tmp_path, -1, folder="cpu")) is None


def test_without_any_cgroup_the_affinity_mask_decides(tmp_path):
    assert available_cpus(tmp_path) == AFFINITY


def test_a_quota_below_the_cores_caps_the_cpus_rounding_up(tmp_path):
    assert available_cpus(cgroup_v2(tmp_path, "50000 100000")) == 1  # 0.5 CPU: still one
    if AFFINITY >= 2:
        assert available_cpus(cgroup_v2(tmp_path, "150000 100000")) == 2


def test_a_quota_above_the_cores_leaves_the_affinity_mask(tmp_path):
    assert available_cpus(cgroup_v2(tmp_path, f"{(AFFINITY + 8) * 100000} 100000")) == AFFINITY


def test_the_song_pool_takes_one_worker_per_cpu_of_the_quota(tmp_path, monkeypatch):
    import lpdvae.host.cpus
    from lpdvae.data.pool import n_workers

    monkeypatch.setattr(lpdvae.host.cpus, "CGROUP_ROOT", cgroup_v2(tmp_path, "100000 100000"))
    assert n_workers(0, 1000) == 1, "workers: 0 means one per CPU of the quota, not of the node"
    assert n_workers(3, 1000) == 3, "an explicit count is kept"


def test_torch_threads_are_the_ranks_share_of_the_quota(tmp_path):
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    try:
        assert torch_threads(processes=2, root=cgroup_v2(tmp_path, "100000 100000")) == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
