"""Jobs for the pool fault tests: module-level, light to import (forkserver workers import this)."""

from __future__ import annotations

import faulthandler
import os
import signal


def _segfault() -> None:
    faulthandler.disable()  # pytest's handler, inherited by the worker, would print its stack
    os.kill(os.getpid(), signal.SIGSEGV)


CRASH = {"exit": lambda: os._exit(3), "segfault": _segfault, "oom_kill": lambda: os.kill(os.getpid(), signal.SIGKILL)}


def double_or_crash(job: tuple[int, str]) -> int:
    """`2 * n`, or the worker process dies the way `how` names ("" = no crash)."""
    n, how = job
    if how:
        CRASH[how]()
    return 2 * n
