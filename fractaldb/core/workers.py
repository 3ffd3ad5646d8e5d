"""Worker processes that end with their parent: a spawned pool worker whose parent was killed
would otherwise wait on its task queue, or keep computing, for ever."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

ORPHAN_CHECK_SECONDS = 0.5  # how often a worker checks that its parent is alive


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
