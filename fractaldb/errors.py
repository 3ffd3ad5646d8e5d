"""One error type for every user-facing failure: one line on stderr, exit code 2."""

from __future__ import annotations

import click


class FractalDBError(click.ClickException):
    """A user-facing error: printed as one line naming the problem and the fix, exit code 2."""

    exit_code = 2

    def format_message(self) -> str:
        """Return the message on a single line."""
        return " ".join(str(self.message).split())
