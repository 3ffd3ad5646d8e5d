"""Two CPU ranks through torchrun (gloo): data split, global batch, rank-0-only outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from safetensors.torch import load_file


def test_two_process_gloo_run_through_torchrun(tmp_path):
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "pretrain.cli",
        "supervised",
        "--recipe",
        "tiny-cpu",
        "--data",
        "synthetic:4",
        "--samples-per-epoch",
        "128",
        "--batch-size",
        "16",
        "--micro-batch",
        "4",
        "--epochs",
        "2",
        "--device",
        "cpu",
        "--out",
        str(run),
        "--log-every",
        "1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    # only rank 0 prints the summary
    assert res.stdout.count("final weights:") == 1
    assert "global 16 = 2 ranks x 8 (micro-batch 4 x 2 accumulation steps)" in res.stdout
    entries = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    setup = entries[0]
    assert setup["world_size"] == 2 and setup["steps_per_epoch"] == 128 // 16
    train = [e for e in entries if e["type"] == "train"]
    assert [e["step"] for e in train] == list(range(1, 17))  # one writer, no duplicates
    epochs = [e for e in entries if e["type"] == "epoch"]
    assert epochs[-1]["loss"] < train[0]["loss"]
    # validation covers every held-out sample exactly once across the two ranks
    assert epochs[-1]["val_samples"] == 4 * 8
    assert "head.weight" in load_file(run / "model.safetensors")
