"""Worker processes that end with their parent, and a bound on how many to start.

A spawned pool worker whose parent was killed would otherwise wait on its task queue, or keep
computing, for ever; an orphaned torch DataLoader worker blocks on a result pipe that its
siblings keep open. Hundreds of workers on a few cores do no more work, only take minutes to
start (and memory): such a count is refused.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from functools import partial

from fractaldb.core.errors import FractalDBError

ORPHAN_CHECK_SECONDS = 0.5  # how often a worker checks that its parent is alive
WORKERS_PER_CORE = 4  # beyond this many worker processes per core, a count is a typo
MIN_WORKER_LIMIT = 16  # ... but a small machine may still run a recipe's default of 8


def usable_cores() -> int:
    """Cores this process may use (Slurm and containers restrict the affinity mask)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def worker_limit() -> int:
    """The most worker processes a command accepts on this machine."""
    return max(MIN_WORKER_LIMIT, WORKERS_PER_CORE * usable_cores())


def check_workers(workers: int, option: str = "--workers") -> None:
    """Refuse, in one line naming the limit, a worker count far beyond this machine's cores."""
    limit, cores = worker_limit(), usable_cores()
    if workers > limit:
        raise FractalDBError(
            f"{option} {workers} is more than the limit of {limit} worker processes "
            f"({WORKERS_PER_CORE} per core, {cores} cores here): more only add start-up time "
            f"and memory; fix: {option} {cores}"
        )


def exit_when_orphaned(
    parent_pid: int,
    busy: Callable[[], bool] = lambda: False,
    poll_seconds: float = ORPHAN_CHECK_SECONDS,
) -> threading.Thread:
    """Start a daemon thread that ends this process once `parent_pid` is no longer its parent,
    after `busy()` turns false (a worker mid-write cleans up first)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_seconds)
        while busy():
            time.sleep(0.01)
        os._exit(0)

    thread = threading.Thread(target=watch, name="exit-when-orphaned", daemon=True)
    thread.start()
    return thread


def loader_worker_init(
    inner: Callable[[int], None] | None = None,
) -> Callable[[int], None]:
    """A torch DataLoader `worker_init_fn` under which each worker ends with this process,
    then runs `inner(worker_id)`."""
    return partial(_start_loader_worker, os.getpid(), inner)


def _start_loader_worker(parent_pid: int, inner: Callable[[int], None] | None, worker_id: int):
    exit_when_orphaned(parent_pid)
    threading.excepthook = _quiet_when_parent_left
    if inner is not None:
        inner(worker_id)


def _quiet_when_parent_left(args: threading.ExceptHookArgs) -> None:
    # a parent stopped by Ctrl-C or SIGTERM mid-transfer of a batch leaves the thread that
    # hands it the batch's shared memory with a broken pipe: not an error worth a traceback
    if not issubclass(args.exc_type, (BrokenPipeError, ConnectionResetError)):
        threading.__excepthook__(args)
