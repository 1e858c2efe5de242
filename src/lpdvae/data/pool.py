"""A process pool over songs: results in job order, with a bounded number in flight.

Validate and tensorize read one song per job; a song can be large, so at most
`workers * in_flight_per_worker` results exist at once however many songs there are.
"""

from __future__ import annotations

import logging
import multiprocessing
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")
# imported once in the forkserver, so workers start with the song readers loaded
PRELOAD = ["lpdvae.data.music.phrases"]

_WORKER_STATE: dict[str, object] = {}


def map_songs(fn: Callable[[T], R], jobs: Iterable[T], n_jobs: int, workers: int,
              state: dict[str, object], in_flight_per_worker: int = 4) -> Iterator[R]:
    """`fn` over `jobs` in order, in `workers` processes (0 = one per usable CPU, 1 = in this process).

    `fn` must be a module-level function; it reads `state` through `worker_state`. The pool
    starts here, before the caller iterates (so a progress bar's thread does not change how
    workers start)."""
    workers = n_workers(workers, n_jobs)
    if workers == 1:
        _init_worker(state, quiet=False)
        return map(fn, jobs)
    ctx = multiprocessing.get_context(_start_method())
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload(PRELOAD)
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(state,))
    return _ordered(pool, fn, jobs, workers * in_flight_per_worker)


def worker_state(key: str):
    """What `map_songs(..., state=...)` handed to this worker process."""
    return _WORKER_STATE[key]


def n_workers(requested: int, n_jobs: int) -> int:
    """`requested` workers (0 = one per CPU of the container's quota: `lpdvae.host.cpus`), never more
    than there are jobs, at least 1."""
    from lpdvae.host.cpus import available_cpus

    return max(1, min(requested or available_cpus(), n_jobs))


def _init_worker(state: dict[str, object], quiet: bool = True) -> None:
    _WORKER_STATE.clear()
    _WORKER_STATE.update(state)
    if quiet:  # a pool worker: only warnings reach the shared stderr
        logging.getLogger().setLevel(logging.WARNING)


def _start_method() -> str:
    """fork when it is safe (one Python thread, no torch runtime): workers start instantly with
    everything imported; otherwise forkserver (a clean single-threaded parent to fork from)."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1 and "torch" not in sys.modules:
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


def _ordered(pool: ProcessPoolExecutor, fn: Callable[[T], R], jobs: Iterable[T], limit: int) -> Iterator[R]:
    with pool:
        pending: deque[Future[R]] = deque()
        for job in jobs:
            pending.append(pool.submit(fn, job))
            if len(pending) >= limit:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
