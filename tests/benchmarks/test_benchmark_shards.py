"""Smoke test of benchmarks/shards.py generation figures (tiny images, a few hundred)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "shards.py"


def test_generation_figures_with_one_worker_and_all_cores():
    args = ["--generate-only", "--generate-images", "600", "--image-size", "32",
            "--points", "1000", "--cores", "2", "--json"]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stdout.splitlines()
    result = json.loads(line)
    assert result["generate_images"] == 608 and result["cores"] == 2
    for key in ("generate_images_per_s_one_worker", "generate_images_per_s_per_core"):
        assert result[key] > 0
    assert result["generate_scaling"] > 0 and result["bytes_per_image"] > 1024
    assert result["generate_cpu_ms_per_image_all_cores"] > 0
    assert set(result["meets_floors"]) == {"generate_images_per_s_per_core", "generate_scaling"}
