"""A failed run leaves no empty run folder behind (but keeps anything worth resuming or reading)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from fractaldb.core.errors import FractalDBError

CHECKPOINT_GLOBS = ("last.pt", "checkpoint-*.pt", "model*.safetensors")


def _is_fresh(out: Path) -> bool:
    return not out.exists() or (out.is_dir() and not any(out.iterdir()))


def has_progress(out: Path) -> bool:
    """True if the run folder holds a checkpoint, weights, or logged training steps."""
    if any(any(out.glob(g)) for g in CHECKPOINT_GLOBS):
        return True
    metrics = out / "metrics.jsonl"
    if not metrics.is_file():
        return False
    for line in metrics.read_text(errors="replace").splitlines():
        try:
            if json.loads(line).get("type") != "setup":
                return True
        except (json.JSONDecodeError, AttributeError):
            continue
    return False


@contextlib.contextmanager
def remove_if_failed_early(out_dir: str | Path) -> Iterator[None]:
    """Remove the run folder this run created if the run fails before it trained a step.

    A folder that existed with content before, or that holds a checkpoint or logged
    training steps (the log of what happened), is left as it is.
    """
    out = Path(out_dir)
    fresh = _is_fresh(out)
    # the parent folders this run will create: removed too, if they stay empty
    missing = [p for p in Path(os.path.abspath(out)).parents if not p.exists()]
    is_main = os.environ.get("RANK", "0") == "0"  # torchrun's rank, known before init
    try:
        yield
    except BaseException:
        if is_main and fresh and out.is_dir() and not has_progress(out):
            shutil.rmtree(out, ignore_errors=True)
            for parent in missing:  # nearest first
                try:
                    parent.rmdir()
                except OSError:
                    break  # not empty (or not ours to remove): keep it and those above
        raise


def kept_checkpoint(out_dir: str | Path) -> str:
    """Words for an error message: which checkpoint survives a failed write, if any."""
    last = Path(out_dir) / "last.pt"
    if last.is_file():
        return f"the last good checkpoint {last} is kept unchanged"
    return "no checkpoint was written yet"


def write_failure(
    what: str, path: str | Path, out_dir: str | Path, exc: BaseException
) -> FractalDBError:
    """One line for a failed write during training: what, where, why, what survives, the fix."""
    reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0][:200]
    errno_ = getattr(exc, "errno", None)
    if errno_ in (errno.EROFS, errno.EACCES, errno.EPERM):
        fix = f"make {out_dir} writable"
    else:
        fix = f"free space on the disk holding {out_dir}"
    return FractalDBError(
        f"cannot write {what} {path} ({reason}); {kept_checkpoint(out_dir)}; fix: {fix}, "
        "then re-run the same command with --resume auto"
    )
