"""Stopping a command: SIGTERM unwinds like Ctrl-C, and long computations offer stop points.

A signal handler in Python runs only between bytecodes of the main thread, so a command stops
within a second only if no single native call (a Numba kernel, a join) runs for longer: long
loops call `check_stop()` between bounded slices of work. In the main process that is enough
for Ctrl-C and SIGTERM to land; a worker process, which leaves both to its parent, registers
its own check (its parent asked it to stop, or died) with `add_stop_check`.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

TERMINATED_EXIT_CODE = 128 + signal.SIGTERM  # what a shell reports for a SIGTERM'd command


class Terminated(KeyboardInterrupt):
    """SIGTERM received: raised like Ctrl-C, so every `finally` and cleanup handler runs
    (temporary files, locks, loader workers) before the process exits."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


@contextlib.contextmanager
def terminate_like_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated` in the main thread (a no-op elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


_STOP_CHECKS: list[Callable[[], None]] = []


def add_stop_check(check: Callable[[], None]) -> None:
    """Register `check`, called at every stop point; it raises to stop the computation."""
    _STOP_CHECKS.append(check)


def check_stop() -> None:
    """A stop point: run the registered checks (Python runs pending signal handlers here too,
    as at any bytecode)."""
    for check in _STOP_CHECKS:
        check()
