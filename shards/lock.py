"""An exclusive lock on an output folder, so two processes never write the same files.

Two `fractaldb render` processes for the same node of the same folder would race on the
same temporary shard names; the second one is refused with one line instead. Nodes of a
multi-node render hold different locks (one per node rank) and share the folder as before.
The lock is an flock on a small hidden file, released by the kernel when the process ends
(even on kill -9), so a crash never leaves a stale lock behind; the file itself is removed when
the command ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from fractaldb.core.errors import FractalDBError


def lock_name(node_rank: int, num_nodes: int) -> str:
    """The lock file of one node's render into a folder."""
    return f".render-node-{node_rank:05d}-of-{num_nodes:05d}.lock"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, name: str, command: str) -> Iterator[Path]:
    """Hold an exclusive lock FOLDER/NAME for the block; refuse if another process holds it.

    The lock file is removed when the block ends, and so is FOLDER if this call created it and
    nothing was written there (a refused command leaves nothing behind)."""
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise FractalDBError(
                f"{folder} is being written by another `{command}` ({holder}); fix: wait for it "
                "to finish (re-running afterwards resumes), or choose another --out"
            ) from None
        # the previous holder may have removed the file between our open and flock: a lock on
        # a removed file guards nothing, so lock the file that is there now
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # still locked: no other process can be using it
        os.close(fd)  # releases the lock
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty: a refused render leaves no folder
