"""Smoke tests of benchmarks/train_throughput.py on CPU (tiny ViT at 32 px, a few steps)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

TINY = [
    "--device", "cpu", "--model", "vit_tiny_patch16_224", "--img-size", "32",
    "--model-arg", "patch_size=8", "--model-arg", "depth=2", "--model-arg", "embed_dim=32",
    "--model-arg", "num_heads=2", "--batch-size", "16", "--steps", "3", "--warmup", "1",
    "--workers", "0",
]  # fmt: skip


@pytest.fixture(scope="module")
def bench():
    path = Path(__file__).parents[2] / "benchmarks" / "train_throughput.py"
    spec = importlib.util.spec_from_file_location("train_throughput", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: the cores are shared


def run_json(bench, capsys, *args: str) -> dict:
    assert bench.main([*TINY, "--json", *args]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1  # --json prints one line, the engine's report is kept out
    return json.loads(lines[0])


def test_synthetic_supervised_and_mae_on_cpu(bench, capsys):
    rep = run_json(bench, capsys, "--no-shards")
    assert rep["device"].startswith("CPU") and rep["batch_size"] == 16
    (sup,) = rep["results"]
    assert sup["task"] == "supervised" and sup["synthetic_images_per_s"] > 0
    assert "shards_ratio" not in sup
    rep = run_json(bench, capsys, "--task", "mae")  # MAE: synthetic unless --data is given
    (mae,) = rep["results"]
    assert mae["task"] == "mae" and mae["model"] == "vit_tiny_patch16_224"
    assert mae["synthetic_images_per_s"] > 0 and "shards_images_per_s" not in mae
    # the human-readable report names the device beside the figures
    assert bench.main([*TINY, "--no-shards"]) == 0
    out = capsys.readouterr().out
    assert "synthetic" in out and "img/s" in out and "[CPU" in out


def test_suite_plan_and_errors(bench, capsys):
    args = bench.parse_args(["--suite"])
    assert bench.plan(args) == [
        ("supervised", "deit_tiny_patch16_224", ["synthetic", "shards", "shards_cpu_augment"]),
        ("mae", "vit_tiny_patch16_224", ["synthetic", "shards"]),
        ("mae", "vit_base_patch16_224", ["synthetic", "shards"]),
    ]
    assert bench.main([*TINY, "--data", "/no/such/shards"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("Error: ") and "fix:" in err


def test_shards_versus_synthetic_ratio(bench, capsys, tmp_path):
    rep = run_json(bench, capsys, "--render-categories", "2", "--render-instances", "8")
    (sup,) = rep["results"]
    assert rep["data"] == "rendered"
    assert sup["shards_images_per_s"] > 0 and sup["synthetic_images_per_s"] > 0
    assert sup["shards_cpu_augment_images_per_s"] > 0
    assert sup["shards_ratio"] == pytest.approx(
        sup["shards_images_per_s"] / sup["synthetic_images_per_s"]
    )
    assert sup["shards_cpu_augment_ratio"] == pytest.approx(
        sup["shards_cpu_augment_images_per_s"] / sup["synthetic_images_per_s"]
    )
    # MAE from shards too (device augmentation)
    data = bench.render_shards(tmp_path, 32, 2, 8)
    rep = run_json(bench, capsys, "--task", "mae", "--data", str(data), "--no-compile",
                   "--set", "decoder_depth=1", "--set", "decoder_dim=32", "--set", "decoder_heads=2")  # fmt: skip
    (mae,) = rep["results"]
    assert mae["shards_images_per_s"] > 0 and "shards_ratio" in mae


def test_runs_as_a_script_next_to_benchmarks_shards(tmp_path):
    # benchmarks/shards.py must not shadow the shards package when the script runs directly
    import subprocess
    import sys

    script = Path(__file__).parents[2] / "benchmarks" / "train_throughput.py"
    empty = tmp_path / "empty"
    empty.mkdir()
    res = subprocess.run(
        [sys.executable, str(script), *TINY, "--data", str(empty)],
        capture_output=True, text=True, timeout=120, cwd=script.parent,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr[-2000:]
    # the error comes from the real shards loader, not from a failed import
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and "_info.json" in last, last


def test_augment_batch_benchmark_runs_on_cpu(capsys):
    path = Path(__file__).parents[2] / "benchmarks" / "augment_batch.py"
    spec = importlib.util.spec_from_file_location("augment_batch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = ["--device", "cpu", "--batch", "4", "--size", "40", "--out", "16", "--repeats", "1",
            "--pil-images", "2", "--json"]  # fmt: skip
    assert module.main(args) == 0
    rep = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert rep["device"].startswith("CPU") and [r["workload"] for r in rep["results"]] == [
        "crop",
        "recipe",
    ]
    for r in rep["results"]:
        assert r["ours_images_per_s"] > 0 and r["pil_one_process_images_per_s"] > 0
        if "kornia_images_per_s" in r:  # only where kornia happens to be installed
            assert r["ours_over_kornia"] > 0
