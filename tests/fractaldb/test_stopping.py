"""Bounded work: the chaos game in slices (the same image, a stop point between slices), a
search that accepts nothing gives up with a hint, absurd sizes are refused with their limit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import alive, assert_one_line_error, workers_of

from fractaldb import chaos, search
from fractaldb.chaos import choice_table, run_chaos_game, warmup_steps
from fractaldb.cli import main
from fractaldb.core import stopping
from fractaldb.kernels import chaos_game

SIERPINSKI = np.array([[0.5, 0, 0, 0.5, 0, 0], [0.5, 0, 0, 0.5, 0.5, 0], [0.5, 0, 0, 0.5, 0, 0.5]])


@pytest.mark.parametrize("count", [False, True])
@pytest.mark.parametrize("points", [1, 13, 5_003, 40_000])
def test_any_slicing_draws_the_image_of_one_kernel_call(monkeypatch, points, count):
    rng = np.random.default_rng(points)
    maps = np.vstack([SIERPINSKI, rng.uniform(-0.9, 0.9, (1, 6))])  # one map may diverge
    table = choice_table(np.array([1.0, 1.0, 1.0, 0.5]))
    warmup = warmup_steps(points)
    whole = np.zeros((40, 40), dtype=np.uint32 if count else np.uint8)
    escapes = chaos_game(maps, table, points, np.uint64(7), whole, 1.5, warmup, count)
    for steps in (1, 3, 1 << 19):  # a slice boundary after every step, odd ones, none
        monkeypatch.setattr(chaos, "SLICE_STEPS", steps)
        image, esc = run_chaos_game(maps, table, 40, points, 7, 1.5, count, warmup)
        assert np.array_equal(image, whole) and esc == escapes, steps
    assert whole.any()


def test_a_long_image_reaches_a_stop_point_every_slice(monkeypatch):
    class Stop(Exception):
        pass

    calls: list[int] = []

    def stop_on_third() -> None:
        calls.append(1)
        if len(calls) == 3:
            raise Stop

    monkeypatch.setattr(chaos, "SLICE_STEPS", 1000)
    monkeypatch.setattr(stopping, "_STOP_CHECKS", [stop_on_third])
    with pytest.raises(Stop):  # 10^9 points: minutes in one call; stopped after 3 slices
        run_chaos_game(SIERPINSKI, choice_table(np.ones(3)), 32, 10**9, 1, 0.0, False, 100)
    assert len(calls) == 3


def test_a_search_that_accepts_nothing_stops_with_a_hint(monkeypatch, tmp_path):
    monkeypatch.setattr(search, "NO_ACCEPT_DRAWS", 256)  # 10,000 in use: ~15 s on 2 cores
    out = tmp_path / "cats.json"
    args = ["search", "-k", "4", "--set", "min_fill=0.99", "--workers", "1", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    lines = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "0 of 256 draws accepted with min_fill=0.99 (the best filled 0." in lines[0]
    assert "fix: lower min_fill below that, e.g. --set min_fill=0." in lines[0]
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--points", "1000000000000"], "points must be an integer in [1, 1,000,000,000]"),
        (["--instances-per-category", "100000000"], "over the limit of 1,000,000"),
        (["--image-size", "100000"], "image_size must be an integer in [8, 4096]"),
    ],
)
def test_absurd_render_sizes_are_refused_with_their_limit(tmp_path, args, needle):
    out = tmp_path / "shards"
    result = CliRunner().invoke(main, ["render", *args, "--out", str(out)])
    assert_one_line_error(result, needle)
    assert not out.exists()


def test_a_search_for_more_categories_than_days_allow_is_refused(tmp_path):
    out = tmp_path / "cats.json"
    result = CliRunner().invoke(main, ["search", "-k", "100000001", "--out", str(out)])
    assert_one_line_error(result, "100000001 is not in the range 1<=x<=100000")
    assert not out.exists()


@pytest.mark.parametrize(("signum", "code", "said"), [(signal.SIGINT, 130, "Aborted."),
                                                      (signal.SIGTERM, 143, "Terminated.")])  # fmt: skip
def test_a_signal_while_search_workers_start_stops_it_cleanly(tmp_path, signum, code, said):
    # landing between a worker's spawn and its start-up data, it used to end in EOFError
    # tracebacks (SIGTERM, 3 times in 3) or "cannot join thread before it is started" (Ctrl-C,
    # 1 in 3)
    out = tmp_path / "cats.json"
    cmd = [str(Path(sys.executable).with_name("fractaldb")), "search", "-k", "500", "--workers",
           "2", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=default_sigint)  # fmt: skip
    deadline = time.time() + 60
    while proc.poll() is None and not workers_of(proc.pid) and time.time() < deadline:
        time.sleep(0.002)
    workers = workers_of(proc.pid)
    if signum == signal.SIGINT:
        os.killpg(proc.pid, signum)  # a terminal's Ctrl-C reaches the workers too
    else:
        proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code and "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] == said, stderr
    assert not any(alive(w) for w in workers) and not out.exists()


def default_sigint() -> None:
    """In the child: Ctrl-C at its default even when this suite runs with it ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_a_search_projected_to_run_for_hours_says_so(monkeypatch, tmp_path):
    monkeypatch.setattr(search, "ESTIMATE_AFTER_DRAWS", 64)  # projected after the first batch
    monkeypatch.setattr(search, "LONG_SEARCH_SECONDS", 0.0)  # "hours": any duration here
    args = ["search", "-k", "100", "--sampler", "sigma", "--workers", "1", "--out",
            str(tmp_path / "cats.json")]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    warnings = [ln for ln in result.output.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1, result.output  # said once
    assert warnings[0].startswith("warning: at 100.0% of draws accepted, 100 categories take ")
    assert " h here; Ctrl-C stops it" in warnings[0]
    # at the real threshold this search is far too short to be announced
    monkeypatch.setattr(search, "LONG_SEARCH_SECONDS", 3600.0)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0 and "warning:" not in result.output, result.output
