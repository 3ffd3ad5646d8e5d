"""benchmarks/gpu_suite.py: the smoke run end to end (CPU, Numba's simulator), isolation of
its parts (a part that raises or hangs is recorded and the next one runs) and the figures'
goals."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "gpu_suite.py"


@pytest.fixture(scope="module")
def suite():
    spec = importlib.util.spec_from_file_location("gpu_suite", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_suite"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("gpu_suite", None)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite") / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(out)],
                         capture_output=True, text=True, timeout=4000, env=env)  # fmt: skip
    print(f"gpu_suite.py --smoke: {time.perf_counter() - t0:.0f} s")  # shown with -s / -rA
    return res, out


def test_smoke_runs_every_part_and_reports_every_figure_beside_its_goal(suite, smoke):
    res, out = smoke
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    report = json.loads((out / "gpu_suite.json").read_text())
    assert report["smoke"] is True
    assert list(report["parts"]) == list(suite.PARTS)
    for name, part in report["parts"].items():
        assert part["status"] == "ok", (name, part)
        assert Path(part["log"]).is_file() and part["seconds"] > 0
    env = report["environment"]
    # torch.__version__ may carry a local tag (2.9.1+cu128) that the wheel's metadata lacks
    public = env["torch"].split("+")[0] == metadata.version("torch").split("+")[0]
    assert public and env["numba"] == metadata.version("numba")
    assert env["cuda"]
    try:  # the cuda extra is optional: CI runs without it, the GPU image has it
        assert env["numba_cuda"] == metadata.version("numba-cuda")
    except metadata.PackageNotFoundError:
        assert env["numba_cuda"] is None
    for key in ("gpu", "driver"):  # None here (no GPU); named on a GPU machine
        assert key in env
    assert env["numba_simulator"] is True and env["torch_cuda_available"] is False

    rows = report["figures"]
    assert [(r["part"], r["key"]) for r in rows] == [(f.part, f.key) for f in suite.FIGURES]
    for r in rows:
        assert isinstance(r["value"], (int, float)) and r["part_status"] == "ok", r
        assert (r["goal"] is None) == (r["meets"] is None) == (r["goal_text"] == ""), r
    goals = {(r["part"], r["key"]): r["goal"] for r in rows}
    assert goals["render", "gpu_exact_images_per_s"] == {"op": ">=", "value": 50_000}
    assert goals["train_deit", "shards_images_per_s"] == {"op": ">=", "value": 11_000}
    assert goals["train_deit", "synthetic_compiled_images_per_s"] == {"op": ">=", "value": 12_000}
    assert goals["train_deit", "shards_ratio"] == {"op": ">=", "value": 0.9}
    assert goals["train_deit", "onthefly_ratio"] == {"op": ">=", "value": 0.9}

    figures = {(r["part"], r["key"]): r["value"] for r in rows}
    # the simulator runs the exact kernel: the CPU renderer's pixels
    assert figures["render", "pixel_equal_fraction"] == 1.0
    assert figures["render_64", "images_equal_fraction"] == 1.0
    assert figures["contour", "images_equal_fraction"] == 1.0
    assert goals["contour", "small_batch_ms_per_image"] == {"op": "<=", "value": 0.019}
    deit = report["parts"]["train_deit"]["figures"]
    assert deit["shards_ratio"] == pytest.approx(
        deit["shards_images_per_s"] / deit["synthetic_compiled_images_per_s"]
    )
    # the real `fractaldb pretrain` ran to its end on the GPU-rendering path
    pre = report["parts"]["pretrain"]["figures"]
    assert pre["command"].startswith("fractaldb pretrain supervised")
    assert pre["exit_code"] == 0 and pre["steps"] == 2 and pre["fallbacks"] == 0
    assert pre["render_device"] == "cuda" and pre["final_loss"] > 0

    md = (out / "gpu_suite.md").read_text()
    assert md in res.stdout  # the table is printed
    for f in suite.FIGURES:
        assert f"| {f.part} | {f.label} |" in md
    assert "| >= 50,000 |" in md and "| >= 0.9 |" in md


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_a_part_that_raises_or_hangs_is_recorded_and_the_next_part_runs(suite, tmp_path):
    py = sys.executable
    pids = tmp_path / "pids"
    boom = suite.Part("boom", [py, "-c", (
        "import json, os\n"
        "open(os.environ['GPU_SUITE_RESULT'], 'w').write(json.dumps({'measured_before': 1.5}))\n"
        "raise RuntimeError('boom in a part')")], 60)  # fmt: skip
    hang = suite.Part("hang", [py, "-c", (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen(['sleep', '300'])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "time.sleep(300)")], 3)  # fmt: skip
    argv = ["--smoke", "--out", str(tmp_path / "out")]
    render = next(p for p in suite.plan_parts(suite.parse_args(argv), argv) if p.name == "render")
    report = suite.run_parts([boom, hang, render], tmp_path / "out", 900, {"torch": "x"}, True,
                             echo=lambda line: None)  # fmt: skip

    parts = report["parts"]
    assert parts["boom"]["status"] == "failed" and parts["boom"]["exit_code"] == 1
    assert parts["boom"]["error"] == "RuntimeError: boom in a part"
    assert parts["boom"]["figures"] == {"measured_before": 1.5}  # kept
    assert parts["hang"]["status"] == "timeout" and parts["hang"]["seconds"] < 30
    assert "timed out after 3 s" in parts["hang"]["error"]
    for pid in map(int, pids.read_text().split()):  # the part and what it started are stopped
        assert not _alive(pid)
    assert parts["render"]["status"] == "ok"
    assert parts["render"]["figures"]["pixel_equal_fraction"] == 1.0

    on_disk = json.loads((tmp_path / "out" / "gpu_suite.json").read_text())
    assert on_disk["parts"]["boom"]["error"] == "RuntimeError: boom in a part"
    rows = {(r["part"], r["key"]): r for r in on_disk["figures"]}
    assert rows["render", "gpu_exact_images_per_s"]["value"] > 0
    assert rows["train_deit", "shards_ratio"]["value"] is None
    assert rows["train_deit", "shards_ratio"]["part_status"] == "not run"
    md = (tmp_path / "out" / "gpu_suite.md").read_text()
    assert "| boom | failed |" in md and "RuntimeError: boom in a part" in md
    assert "| hang | timeout |" in md


def test_figures_are_judged_against_their_goals(suite):
    parts = {"render": {"status": "ok", "figures": {"gpu_exact_images_per_s": 61_000.0,
                                                    "fractaldb_1k_seconds": 25.0}},
             "train_deit": {"status": "timeout", "figures": {"shards_ratio": 0.95}}}  # fmt: skip
    rows = {(r["part"], r["key"]): r for r in suite.collect_figures(parts)}
    assert rows["render", "gpu_exact_images_per_s"]["meets"] is True
    assert rows["render", "fractaldb_1k_seconds"]["meets"] is False  # goal <= 20 s
    assert rows["train_deit", "shards_ratio"]["meets"] is True  # kept from a timed-out part
    assert rows["train_deit", "shards_images_per_s"]["value"] is None
    assert rows["train_deit", "shards_images_per_s"]["part_status"] == "timeout"
    assert rows["render", "gpu_fast_images_per_s"]["goal"] is None
    report = {"environment": {"gpu": "NVIDIA H200"}, "smoke": False, "started_utc": "now",
              "parts": parts, "figures": list(rows.values())}  # fmt: skip
    md = suite.markdown(report)
    assert "| render | GPU exact, 256 px / 100k points | 61,000 images/s | >= 50,000 | yes |" in md
    assert "| 25 s | <= 20 | **no** |" in md and "NVIDIA H200" in md
    assert (
        "| train_deit | DeiT-Tiny 224: shards, device augmentation | - | >= 11,000 | (timeout) |"
        in md
    )


def test_without_a_gpu_the_suite_stops_in_one_line(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=900, env=env)  # fmt: skip
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: no usable CUDA GPU"), res.stderr
    assert "--smoke" in lines[0]
    assert not (tmp_path / "out").exists()  # nothing left behind
