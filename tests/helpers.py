"""Helpers shared by the engine and CLI tests (supervised and MAE)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest


class CrashAtEpoch:
    """Wraps a DataSource; asking for `epoch`'s loader simulates the job being killed."""

    def __init__(self, inner, epoch: int) -> None:
        self.inner, self.epoch = inner, epoch
        self.num_classes = inner.num_classes
        self.num_samples = inner.num_samples
        self.manifest_sha256 = inner.manifest_sha256

    def train_loader(self, epoch, **kw):
        if epoch == self.epoch:
            raise RuntimeError("simulated crash")
        return self.inner.train_loader(epoch, **kw)

    def val_loader(self, **kw):
        return self.inner.val_loader(**kw)


def assert_one_line_error(result, *needles: str) -> None:
    """A CliRunner result failed with exit code 2 and one `Error:` line holding every needle."""
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for n in needles:
        assert n in lines[0], lines[0]


def read_metrics(run: Path, kind: str) -> list[dict]:
    """RUN/metrics.jsonl entries of one type (setup, train, epoch, ...)."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["type"] == kind]


def train_straight_and_resumed(cfg: dict, make_task: Callable, data, tmp_path: Path):
    """Train into TMP/full straight through, and into TMP/cut killed at epoch 1 then resumed.

    Returns (straight result, resumed result, straight train metrics, resumed train metrics).
    """
    from pretrain.engine.checkpoint import load_checkpoint
    from pretrain.engine.loop import train

    full, cut = tmp_path / "full", tmp_path / "cut"
    ref = train(cfg, make_task(), data, full)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, make_task(), CrashAtEpoch(data, 1), cut)
    assert load_checkpoint(cut / "last.pt")["epoch"] == 1
    got = train(cfg, make_task(), data, cut, resume="auto")
    return ref, got, read_metrics(full, "train"), read_metrics(cut, "train")


def children_of(pid: int) -> set[int]:
    """Process ids of the children of `pid`, forked or spawned (Linux /proc)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found |= {int(p) for p in (task / "children").read_text().split()}
    return found


def workers_of(pid: int) -> set[int]:
    """Process ids of the spawned pool workers (children) of `pid` (Linux /proc)."""
    return {p for p in children_of(pid) if b"spawn_main" in _cmdline(p)}  # not the resource tracker


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie has exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


def kill_parent_only(proc, workers: set[int], seconds: float = 30) -> set[int]:
    """SIGKILL `proc` alone (its workers are orphaned); the workers still alive after
    `seconds`."""
    import os
    import signal
    import time

    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + seconds
    while any(alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.05)
    return {w for w in workers if alive(w)}
