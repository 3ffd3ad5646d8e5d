"""Stopping a render: Ctrl-C or SIGTERM in the middle of one long image ends the command within
seconds, leaving no temporary file, no lock and no shard; a large render says so first."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import alive, workers_of

from fractaldb.search import search_categories

FRACTALDB = str(Path(sys.executable).with_name("fractaldb"))
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
# one image of 1e9 points is ~5 s of kernel time on an idle core: the old single kernel call
# held a signal back for that long
LONG_IMAGE = ["--points", "1000000000", "--image-size", "32", "--mode", "point"]


@pytest.fixture(scope="module")
def cats_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("stop") / "categories.json"
    search_categories(2, sampler="sigma", seed=2).save(path)
    return path


def default_signals() -> None:
    """In the child: Ctrl-C at its default even when this suite runs with it ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, preexec_fn=default_signals,
    )  # fmt: skip


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir()) if out.exists() else []


@pytest.mark.parametrize(
    ("signum", "workers", "code", "said"),
    [
        (signal.SIGINT, 1, 130, "Aborted."),
        (signal.SIGTERM, 1, 143, "Terminated."),
        (signal.SIGTERM, 2, 143, "Terminated."),
    ],
)
def test_a_signal_mid_image_stops_within_seconds_and_leaves_nothing(
    cats_path, tmp_path, signum, workers, code, said
):
    out = tmp_path / "out"
    cmd = [FRACTALDB, "render", "--categories", str(cats_path), "--instances-per-category", "2",
           "--samples-per-shard", "1", "--workers", str(workers), "--quiet", "--out", str(out),
           *LONG_IMAGE]  # fmt: skip
    proc = start(cmd)
    deadline = time.time() + 60
    # rendering: the lock is taken and (with workers) the worker processes run
    wanted = workers if workers > 1 else 0
    while not (list(out.glob(".render-node-*.lock")) and len(workers_of(proc.pid)) >= wanted):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.02)
    time.sleep(1.5)  # well into the first image
    assert proc.poll() is None, "the render ended before the signal"
    pids = workers_of(proc.pid)
    sent = time.monotonic()
    if signum == signal.SIGINT:
        os.killpg(proc.pid, signum)  # a terminal's Ctrl-C reaches the whole group
    else:
        proc.send_signal(signum)  # `kill PID`: the parent alone
    _, stderr = proc.communicate(timeout=60)
    took = time.monotonic() - sent
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1] == said, stderr
    assert took < 4, f"{took:.1f} s from the signal to the exit"
    # no .tmp, no lock, no shard: the folder this run created is gone with them
    assert not leftovers(out), leftovers(out)
    assert not any(alive(p) for p in pids)


def test_a_large_render_says_so_before_it_starts(cats_path, tmp_path):
    out = tmp_path / "big"
    # 2 x 1,000,000 images of 4096 px: terabytes; measured on one or two images
    cmd = [FRACTALDB, "render", "--categories", str(cats_path), "--instances-per-category",
           "1000000", "--image-size", "4096", "--points", "20000", "--workers", "1",
           "--quiet", "--out", str(out)]  # fmt: skip
    proc = start(cmd)
    ready, _, _ = select.select([proc.stderr], [], [], 60)  # the first line, or none in time
    line = proc.stderr.readline() if ready else ""
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=60)
    assert line.startswith("warning: this render writes 2,000,000 images, about "), line + rest
    assert " GB and about " in line and "h on 1 worker(s)" in line, line
    assert proc.returncode == 143, rest
    assert not leftovers(out), leftovers(out)
