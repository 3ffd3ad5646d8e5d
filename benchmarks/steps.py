"""Restartable pipeline steps: `fractaldb` commands run as child processes, each skipped when
its output exists, up to N at once in dependency order (shared by the benchmarks)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class StepFailed(Exception):
    """A command of the pipeline exited with a non-zero status."""


@dataclass
class Step:
    """One `fractaldb ARGS` command; skipped when `done` exists, started after `after`."""

    name: str
    args: list[str]
    done: Path | None
    after: tuple[str, ...] = ()

    @property
    def shown(self) -> str:
        """The command as a user would type it."""
        return "fractaldb " + shlex.join(self.args)


def fractaldb_exe() -> list[str]:
    """The `fractaldb` console script of this interpreter's environment."""
    local = Path(sys.executable).parent / "fractaldb"
    if local.is_file():
        return [str(local)]
    found = shutil.which("fractaldb")
    if found:
        return [found]
    return [sys.executable, "-c", "from fractaldb.cli import main; main()"]


def launch(args: list[str]) -> Any:
    """Start `fractaldb ARGS` as a child process (isolated memory, threads and CUDA state);
    return its Popen, whose poll() is None while it runs and its exit status after."""
    return subprocess.Popen([*fractaldb_exe(), *args])


def execute(args: list[str]) -> int:
    """Run `fractaldb ARGS` to the end in a child process; return its exit status."""
    return launch(args).wait()


def run_steps(steps: list[Step], parallel: int = 1, poll_s: float = 0.2) -> None:
    """Run the steps in list order, up to `parallel` at once, each after its `after` steps;
    a failure lets the running ones finish (they are restartable), then raises StepFailed."""
    pending, running, finished = list(steps), {}, set()
    failed: list[str] = []
    while pending or running:
        for step in list(pending):
            if step.done is not None and step.done.exists():
                print(f"# skip (done: {step.done})\n#   {step.shown}", flush=True)
                pending.remove(step)
                finished.add(step.name)
            elif not failed and len(running) < parallel and set(step.after) <= finished:
                print(f"+ {step.shown}", flush=True)
                running[step.name] = (step, launch(step.args))
                pending.remove(step)
        if failed and not running:
            break
        if not running:
            if pending:  # cannot happen for a well-formed plan; never spin forever
                raise StepFailed(f"steps wait on unknown steps: {[s.name for s in pending]}")
            break
        ended = {name: p.poll() for name, (_, p) in running.items()}
        ended = {name: rc for name, rc in ended.items() if rc is not None}
        if not ended:
            time.sleep(poll_s)
            continue
        for name, rc in ended.items():
            step, _ = running.pop(name)
            if rc == 0:
                finished.add(name)
            else:
                failed.append(f"step failed with exit code {rc}: {step.shown}")
    if failed:
        raise StepFailed("; ".join(failed))


def sets(pairs: tuple[str, ...]) -> list[str]:
    """--set KEY=VALUE for each pair."""
    return [x for p in pairs for x in ("--set", p)]


def needed(steps: list[Step], wanted: set[str]) -> list[Step]:
    """The steps named in `wanted` and every step they wait on, in their list order."""
    by_name = {s.name: s for s in steps}
    keep, todo = set(), list(wanted)
    while todo:
        name = todo.pop()
        if name not in keep:
            keep.add(name)
            todo += by_name[name].after
    return [s for s in steps if s.name in keep]
