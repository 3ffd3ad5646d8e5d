"""How long `fractaldb pretrain supervised` stays silent after it is started, in a terminal.

Runs a one-epoch tiny-cpu run on synthetic data under a pseudo-terminal (as a user's shell) and
records when its first line appears and when the engine's "resolved configuration" line (the
first line before the start-up notice existed) appears. The reference, measured in the same
run, is a bare `python -c "import torch, timm"`: the import cost no command can avoid. Usage:

    uv run python benchmarks/startup.py [--repeats 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fractaldb.core.machine import describe_machine

ENGINE_FIRST_LINE = b"resolved configuration"
COMMAND = [
    "pretrain", "supervised", "--recipe", "tiny-cpu", "--data", "synthetic:2",
    "--samples-per-epoch", "32", "--epochs", "1", "--device", "cpu",
]  # fmt: skip


def timed_terminal_run(args: list[str], marker: bytes) -> tuple[float, float, str]:
    """Run `args` on a pseudo-terminal; seconds to its first output byte and to `marker`,
    and everything it printed."""
    master, slave = pty.openpty()
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    first = seen = None
    out = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                now = time.perf_counter() - start
                first = now if first is None else first
                out += chunk
                if seen is None and marker in out:
                    seen = now
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
        proc.wait()
    if proc.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{out.decode(errors='replace')[-2000:]}")
    return first or float("nan"), seen or float("nan"), out.decode(errors="replace")


def measure(repeats: int) -> dict:
    """Best-of-`repeats` seconds for the reference import, the first line and the engine line."""
    python = sys.executable
    imports, firsts, engines, line = [], [], [], ""
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([python, "-c", "import torch, timm"], check=True)
        imports.append(time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as tmp:
            cli = [python, "-c", "from fractaldb.cli import main; main()"]
            first, engine, printed = timed_terminal_run(
                [*cli, *COMMAND, "--out", str(Path(tmp) / "run")], ENGINE_FIRST_LINE
            )
        line = printed.splitlines()[0]
        firsts.append(first)
        engines.append(engine)
    return {
        "import_torch_timm_s": min(imports),
        "first_line_s": min(firsts),
        "engine_line_s": min(engines),
        "first_line": line,
        "first_line_vs_import": min(firsts) / min(imports),
        "engine_line_vs_import": min(engines) / min(imports),
    }


def main(argv: list[str] | None = None) -> int:
    """Print the figures (or one JSON line with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = {"machine": describe_machine(), **measure(args.repeats)}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"machine: {result['machine']}")
    print(f"reference: python -c 'import torch, timm'   {result['import_torch_timm_s']:.2f} s")
    print(
        f"first line on the terminal                   {result['first_line_s']:.2f} s "
        f"({result['first_line_vs_import']:.2f}x the reference): {result['first_line']!r}"
    )
    print(
        f"engine's 'resolved configuration' line       {result['engine_line_s']:.2f} s "
        f"({result['engine_line_vs_import']:.2f}x the reference)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
