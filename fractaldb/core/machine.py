"""A description of the machine, to state beside any absolute speed figure."""

from __future__ import annotations

import os
import platform


def cpu_name() -> str:
    """The CPU model name (from /proc/cpuinfo where available)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine() -> str:
    """E.g. 'AMD EPYC, 2 cores'."""
    return f"{cpu_name()}, {os.cpu_count()} cores"
