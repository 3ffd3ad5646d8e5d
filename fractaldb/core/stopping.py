"""Stopping a command: SIGTERM unwinds like Ctrl-C, and long computations offer stop points.

A signal handler in Python runs only between bytecodes of the main thread, so a command stops
within a second only if no single native call (a Numba kernel, a join) runs for longer: long
loops call `check_stop()` between bounded slices of work. In the main process that is enough
for Ctrl-C and SIGTERM to land; a worker process, which leaves both to its parent, registers
its own check (its parent asked it to stop, or died) with `add_stop_check`. While a pool
starts its spawned workers, both signals are held back (`stop_signals_deferred`): one that
lands mid-spawn would leave a worker waiting for start-up data that never comes.
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


STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


@contextlib.contextmanager
def stop_signals_deferred() -> Iterator[None]:
    """Hold back Ctrl-C and SIGTERM while pool worker processes start, and act on them right
    after (the workers call `leave_ctrl_c_to_parent` first).

    Two things: the signals are blocked in this thread, so the spawned workers inherit them
    blocked (they unblock them in their initializer) and cannot die in their bootstrap; and
    Python's handlers are swapped for ones that only take note, because the kernel may hand
    a signal to another thread of this process (the pool's manager, a queue feeder), and
    Python would then raise KeyboardInterrupt here, between a worker's spawn and the pickle it
    waits for (it died with `EOFError: Ran out of input`).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    handlers = {
        s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in STOP_SIGNALS
    }
    mask = None
    if hasattr(signal, "pthread_sigmask"):
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        if mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a pending one lands in `caught`
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(caught):  # each signal acted on once, in arrival order
            handler = handlers[signum]
            if callable(handler):
                handler(signum, None)
            elif handler == signal.SIG_DFL:
                if signum == signal.SIGINT:
                    raise KeyboardInterrupt
                signal.raise_signal(signum)


def leave_ctrl_c_to_parent() -> None:
    """In a pool worker: Ctrl-C is the parent's to act on (it stops the workers); the stop
    signals that `stop_signals_deferred` blocked while the parent started us are unblocked."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
