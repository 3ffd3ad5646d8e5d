"""Run logging: a windowed meter, RUN/metrics.jsonl and TensorBoard events (rank 0 only)."""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from fractaldb.core.atomic import write_text_atomically
from pretrain.engine.runfolder import write_failure

_default_excepthook = threading.excepthook


def _quiet_event_writer_failure(args: Any) -> None:
    """threading.excepthook: a failed write in TensorBoard's event-writer thread (full disk...)
    prints nothing there; the training thread meets the same error at its next log call and
    reports it in one line (RunLogger._failing_writes_named). Anything else as usual."""
    if type(args.thread).__name__ == "_AsyncWriterThread" and isinstance(args.exc_value, OSError):
        return
    _default_excepthook(args)


class WindowMeter:
    """Averages of logged values, images/s and data-loading time over a logging window."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start a new window now."""
        self.sums: dict[str, float] = {}
        self.count = 0
        self.images = 0
        self.data_time = 0.0
        self.t0 = time.perf_counter()

    def update(self, values: dict[str, float], images: int, data_time: float) -> None:
        """Add one optimizer step's values (already averaged over ranks)."""
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.count += 1
        self.images += images
        self.data_time += data_time

    def summary(self) -> dict[str, float]:
        """Mean of each value, images/s and mean data time per step over the window."""
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        out = {k: v / max(self.count, 1) for k, v in self.sums.items()}
        out["images_per_s"] = self.images / elapsed
        out["data_time"] = self.data_time / max(self.count, 1)
        return out


def _number(v: Any) -> float | int | None:
    if isinstance(v, torch.Tensor):
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return v


class RunLogger:
    """Appends JSON lines to RUN/metrics.jsonl and mirrors numbers to TensorBoard (RUN/tb)."""

    def __init__(self, out_dir: Path, enabled: bool, resume_step: int | None = None) -> None:
        self.enabled = enabled
        self.path = Path(out_dir) / "metrics.jsonl"
        self.tb = None
        if not enabled:
            return
        self.out_dir = Path(out_dir)
        with self._failing_writes_named():
            if resume_step is not None and self.path.exists():
                self._truncate_after(resume_step)
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events a crashed attempt logged after the checkpoint we resume
            # from.
            self.tb = SummaryWriter(str(Path(out_dir) / "tb"), purge_step=resume_step)
            if threading.excepthook is _default_excepthook:
                threading.excepthook = _quiet_event_writer_failure

    @contextlib.contextmanager
    def _failing_writes_named(self) -> Iterator[None]:
        """A full or read-only disk under metrics.jsonl or tb/: one line, checkpoint kept."""
        try:
            yield
        except OSError as exc:
            raise write_failure(
                "the run log", f"{self.path} / {self.out_dir / 'tb'}", self.out_dir, exc
            ) from exc

    def _truncate_after(self, step: int) -> None:
        # Entries logged after the checkpoint belong to the interrupted attempt: drop them so the
        # file reads as one uninterrupted run.
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by the interruption
            if entry.get("type") == "setup" or entry.get("step", 0) <= step:
                kept.append(line)
        text = "".join(k + "\n" for k in kept)
        write_text_atomically(self.path, text)

    def write(self, entry: dict[str, Any]) -> None:
        """Log one entry (needs `type`; numeric fields also go to TensorBoard at `step`)."""
        if not self.enabled:
            return
        clean: dict[str, Any] = {}
        for k, v in entry.items():
            n = _number(v)
            clean[k] = v if n is None else (n if math.isfinite(n) else str(n))
        with self._failing_writes_named():
            with self.path.open("a") as f:
                f.write(json.dumps(clean) + "\n")
            if self.tb is not None and "step" in entry:
                for k, v in clean.items():
                    if k not in ("step", "epoch", "type") and isinstance(v, (int, float)):
                        self.tb.add_scalar(f"{entry['type']}/{k}", v, entry["step"])

    def close(self) -> None:
        """Flush and close TensorBoard."""
        if self.tb is not None:
            tb, self.tb = self.tb, None
            with self._failing_writes_named():
                tb.close()
