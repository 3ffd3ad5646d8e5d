"""One error type for every user-facing failure: one line on stderr, exit code 2."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator

import click


class FractalDBError(click.ClickException):
    """A user-facing error: printed as one line naming the problem and the fix, exit code 2."""

    exit_code = 2

    def format_message(self) -> str:
        """Return the message on a single line."""
        return " ".join(str(self.message).split())


# errno values that mean "the output cannot be written here", whatever the command
OUTPUT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}
)


def output_error(
    exc: OSError,
    path: str | os.PathLike,
    what: str = "output",
    then: str = "",
    folder: str | None = None,
) -> FractalDBError:
    """The one-line error for a write that failed for lack of space or permission at `path`
    (`folder`: the folder to name in the fix, when known)."""
    where = os.fspath(path)
    named = os.fspath(exc.filename) if exc.filename is not None else None
    detail = exc.strerror or str(exc)
    if named and os.path.abspath(named) != os.path.abspath(where):
        detail += f" ({named})"
    # a file's folder is what needs space or write permission
    if folder is None:
        folder = where if os.path.isdir(where) or not os.path.splitext(where)[1] else None
        folder = folder or os.path.dirname(where) or "."
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        fix = f"free space on the disk holding {folder}, or write to another folder"
    else:
        fix = f"make {folder} writable, or write to another folder"
    return FractalDBError(f"cannot write {what} {where}: {detail}; fix: {fix}{then}")


@contextlib.contextmanager
def writing_to(path: str | os.PathLike, what: str = "output", then: str = "") -> Iterator[None]:
    """Turn a full or read-only disk under the block into one line naming `path` and the fix
    (`then` is appended to the fix, e.g. "; then re-run the same command")."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in OUTPUT_ERRNOS:
            raise
        raise output_error(exc, path, what, then) from None


def check_writable(path: str | os.PathLike, what: str = "output") -> None:
    """Fail now, in one line, if the file or folder `path` could not be created: before a long
    computation rather than after it. Creates nothing."""
    existing = os.path.abspath(os.fspath(path))
    while not os.path.isdir(existing):
        existing = os.path.dirname(existing)
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        if exc.errno not in OUTPUT_ERRNOS:
            raise
        # the folders below `existing` do not exist yet: `existing` needs the permission
        raise output_error(exc, path, what, folder=existing) from None
