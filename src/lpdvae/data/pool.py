"""A process pool over songs: results in job order, with a bounded number in flight.

Validate and tensorize read one song per job; a song can be large, so at most
`workers * in_flight_per_worker` results exist at once however many songs there are.

Workers die with the step: each asks the kernel for SIGKILL when its parent dies
(`PR_SET_PDEATHSIG`), so a step killed outright leaves no worker holding memory or the lock on
its temp folder. A worker that dies on a song (a segfault in a parser, the OOM killer) breaks
the pool; the jobs it had in flight are rerun one process each, so the song that kills its
process is found and becomes `crashed(job, detail)` (a quarantine reason), not a batch abort.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import select
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from lpdvae.errors import LpdvaeError

T = TypeVar("T")
R = TypeVar("R")
# imported once in the forkserver, so workers start with the song readers loaded
PRELOAD = ["lpdvae.data.music.phrases"]
PR_SET_PDEATHSIG = 1  # linux/prctl.h
WORKER_CRASHED = "worker_crashed"  # the quarantine reason of a song whose worker process died

_WORKER_STATE: dict[str, object] = {}
log = logging.getLogger(__name__)


def map_songs(fn: Callable[[T], R], jobs: Iterable[T], n_jobs: int, workers: int,
              state: dict[str, object], crashed: Callable[[T, str], R],
              in_flight_per_worker: int = 4) -> Iterator[R]:
    """`fn` over `jobs` in order, in `workers` processes (0 = one per usable CPU, 1 = in this process).

    `fn` must be a module-level function; it reads `state` through `worker_state`. A job whose
    process dies is answered by `crashed(job, why)`. The pool starts here, before the caller
    iterates (so a progress bar's thread does not change how workers start)."""
    workers = n_workers(workers, n_jobs)
    if workers == 1:
        _init_worker(state, quiet=False)
        return map(fn, jobs)
    ctx = multiprocessing.get_context(_start_method())
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload(PRELOAD)
    return _Ordered(ctx, fn, state, workers, crashed).run(jobs, workers * in_flight_per_worker)


def worker_state(key: str):
    """What `map_songs(..., state=...)` handed to this worker process."""
    return _WORKER_STATE[key]


def n_workers(requested: int, n_jobs: int) -> int:
    """`requested` workers (0 = one per CPU of the container's quota: `lpdvae.host.cpus`), never more
    than there are jobs, at least 1."""
    from lpdvae.host.cpus import available_cpus

    return max(1, min(requested or available_cpus(), n_jobs))


def die_with_parent(step: int) -> None:
    """Be SIGKILLed when the step (pid `step`) dies (Linux; elsewhere nothing): the kernel does
    it (`PR_SET_PDEATHSIG`) when the step is this process's parent; a forkserver's child (whose
    parent is the forkserver, which lives as long as its children hold its pipe) watches the
    step from a thread instead. A step already gone: exit now, no signal would come."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() == step:
        return
    try:
        watch = os.pidfd_open(step)
    except ProcessLookupError:
        os._exit(1)
    except (OSError, AttributeError):  # no pidfd (kernel < 5.3): the kernel's signal only
        return
    threading.Thread(target=_kill_self_when_readable, args=(watch,), daemon=True, name="die-with-step").start()


def _kill_self_when_readable(pidfd: int) -> None:
    """A pidfd becomes readable when its process exits."""
    select.select([pidfd], [], [])
    os.kill(os.getpid(), signal.SIGKILL)


def _init_worker(state: dict[str, object], quiet: bool = True, parent: int | None = None) -> None:
    if parent is not None:
        die_with_parent(parent)
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


def _run_one(fn: Callable[[T], R], job: T, state: dict[str, object], parent: int, conn: Any) -> None:
    """One job in a process of its own (after a crash): ("ok", result) or ("error", exception)."""
    _init_worker(state, parent=parent)
    conn.send(("started", None))  # from here a death is the job's doing, not the process's start
    try:
        conn.send(("ok", fn(job)))
    except Exception as exc:  # noqa: BLE001 - handed to the parent, which raises it as the pool would
        conn.send(("error", exc))
    conn.close()


def death(exitcode: int | None) -> str:
    """How a worker process ended, in words."""
    if exitcode is not None and exitcode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-exitcode).name}"
    return f"exited with status {exitcode}"


class _Ordered:
    """The pool, replaced when a worker dies; the jobs the broken pool held are rerun one
    process each, in order, so the one that kills its process is named."""

    def __init__(self, ctx: Any, fn: Callable[[T], R], state: dict[str, object], workers: int,
                 crashed: Callable[[T, str], R]) -> None:
        self.ctx, self.fn, self.state, self.workers, self.crashed = ctx, fn, state, workers, crashed
        self.parent = os.getpid()
        self.pool = self._pool()

    def _pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=self.ctx, initializer=_init_worker,
                                   initargs=(self.state, True, self.parent))

    def run(self, jobs: Iterable[T], limit: int) -> Iterator[R]:
        pending: deque[tuple[T, Future[R]]] = deque()
        try:
            for job in jobs:
                pending.append((job, self._submit(job)))
                if len(pending) >= limit:
                    yield from self._next(pending)
            while pending:
                yield from self._next(pending)
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def _submit(self, job: T) -> Future[R]:
        try:
            return self.pool.submit(self.fn, job)
        except BrokenProcessPool as exc:  # a worker died since the last result was read
            broken: Future[R] = Future()
            broken.set_exception(exc)
            return broken

    def _next(self, pending: deque[tuple[T, Future[R]]]) -> Iterator[R]:
        """The first job's result; when the pool broke, every job it held, in order."""
        job, fut = pending.popleft()
        if not _broke(fut):
            yield fut.result()
            return
        held = [(job, fut), *pending]
        pending.clear()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.pool = self._pool()
        for j, f in held:
            yield self._alone(j) if _broke(f) else f.result()

    def _alone(self, job: T) -> R:
        """`job` in a process of its own: its result, or `crashed(job, why)` when the process dies."""
        recv, send = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(target=_run_one, args=(self.fn, job, self.state, self.parent, send), daemon=True)
        proc.start()
        send.close()
        try:
            kind, value = _answer(recv, proc)
        finally:
            recv.close()
        if kind == "crashed":
            log.warning("a job's worker process died (%s): the job is answered as crashed", value)
            return self.crashed(job, f"the worker process reading it died ({value})")
        proc.join()
        if kind == "error":
            raise value
        return value


def _answer(recv: Any, proc: Any) -> tuple[str, Any]:
    """What a `_run_one` process answered, ("crashed", how it died) when it died on its job; a
    process that dies before it starts the job (a broken environment, not a song) is an error."""
    try:
        recv.recv()  # ("started", None)
    except EOFError:
        proc.join()
        raise LpdvaeError(f"a worker process died before it could start ({death(proc.exitcode)}): "
                          "its error is in the log above") from None
    try:
        return recv.recv()
    except EOFError:
        proc.join()
        return "crashed", death(proc.exitcode)


def _broke(fut: Future[Any]) -> bool:
    """Whether `fut` failed because its pool broke (a worker died), waiting for it to finish."""
    return isinstance(fut.exception(), BrokenProcessPool)
