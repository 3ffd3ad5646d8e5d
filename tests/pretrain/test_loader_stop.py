"""Loader workers never outlive their process: SIGTERM during a many-worker data load shuts
them down with it, and a parent killed outright takes them with it within a second or so
(torch's own check runs between batches, after up to 5 s idle). Worker counts and model inputs
far beyond any sane run are refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner
from helpers import alive, assert_one_line_error, children_of, kill_parent_only

from fractaldb.cli import main
from fractaldb.core.workers import worker_limit

WORKERS = 6
# a training load through the engine's DataSource, each sample slow, SIGTERM handled as the
# `fractaldb` command does
LOAD = f"""
import sys, time
import torch
from fractaldb.core.stopping import Terminated, terminate_like_interrupt
from pretrain.engine.data import DatasetData

class Slow(torch.utils.data.Dataset):
    def __len__(self):
        return 100_000

    def __getitem__(self, i):
        time.sleep(1.0)  # a heavy sample: each worker is mid-batch for 2 s at a time
        return torch.zeros(3), 0

data = DatasetData(Slow(), None, num_classes=1, manifest_sha256=None, workers={WORKERS})
try:
    with terminate_like_interrupt():
        for k, _ in enumerate(data.train_loader(0, batch_size=2, seed=0, rank=0, world_size=1)):
            print("batch", k, flush=True)
except Terminated:
    sys.exit(143)
"""
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}


def start_loading() -> tuple[subprocess.Popen, set[int]]:
    """Start the load; return it and its workers once a first batch came through."""
    proc = subprocess.Popen([sys.executable, "-c", LOAD], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    line = proc.stdout.readline()
    assert line.startswith("batch"), line + proc.communicate()[1]
    workers = children_of(proc.pid)
    assert len(workers) >= WORKERS, workers
    return proc, workers


def cleanup(proc: subprocess.Popen, workers: set[int]) -> None:
    """Whatever failed, leave nothing running."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for w in workers:
        if alive(w):
            os.kill(w, signal.SIGKILL)


def test_sigterm_during_a_many_worker_load_leaves_no_process():
    proc, workers = start_loading()
    try:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 143, stderr
        deadline = time.time() + 2
        while any(alive(w) for w in workers) and time.time() < deadline:
            time.sleep(0.05)
        assert not any(alive(w) for w in workers), "loader workers outlived their process"
    finally:
        cleanup(proc, workers)


def test_loader_workers_end_when_their_process_is_killed():
    proc, workers = start_loading()
    try:
        # torch's workers finish their queued batches first (4 s here), and then wait 5 s
        assert not kill_parent_only(proc, workers, seconds=1.5), "orphaned loader workers"
    finally:
        cleanup(proc, workers)


def test_worker_counts_far_beyond_the_cores_are_refused(tmp_path):
    too_many = str(worker_limit() + 1)
    runs = {
        "pretrain": ["pretrain", "supervised", "--recipe", "tiny-cpu", "--data", str(tmp_path),
                     "--workers", too_many, "--out", str(tmp_path / "run")],
        "finetune": ["finetune", "--dataset", "folder", "--init", "scratch", "--model",
                     "vit_tiny_patch16_224", "--data-root", str(tmp_path), "--workers", too_many,
                     "--out", str(tmp_path / "ft")],
        "render": ["render", "--workers", too_many, "--out", str(tmp_path / "shards")],
        "search": ["search", "-k", "2", "--workers", too_many, "--out", str(tmp_path / "c.json")],
    }  # fmt: skip
    for args in runs.values():
        result = CliRunner().invoke(main, args)
        assert_one_line_error(result, f"--workers {too_many} is more than the limit of")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_model_input_beyond_the_renderer_size_limit_is_refused(tmp_path):
    args = ["pretrain", "supervised", "--recipe", "tiny-cpu", "--data", str(tmp_path),
            "--img-size", "100000", "--out", str(tmp_path / "run")]  # fmt: skip
    assert_one_line_error(CliRunner().invoke(main, args), "over the limit of 4096 px")
    assert not (tmp_path / "run").exists()
