"""The renderer-side CLI: search, preview, quickstart and bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from fractaldb.cli import main


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False, standalone_mode=True)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """Run the real console entry point (one-line errors are printed by the group's main)."""
    code = "from fractaldb.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
    )


def test_search_then_preview(tmp_path):
    out = tmp_path / "cats.json"
    res = run_cli("search", "-k", "4", "--seed", "2", "--workers", "2", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "wrote 4 categories" in res.stdout
    png = tmp_path / "p.png"
    res = run_cli(
        "preview",
        "-c",
        str(out),
        "-o",
        str(png),
        "--image-size",
        "64",
        "--points",
        "3000",
        "--instances",
        "0,1",
        "--tile",
        "32",
    )
    assert res.returncode == 0, res.stderr
    import cv2

    img = cv2.imread(str(png))
    assert img is not None and img.shape[1] == 64 and img.shape[0] > 4 * 32


@pytest.mark.parametrize(
    "args, needle",
    [
        (["search", "--num-categories", "-1", "--out", "x.json"], "--num-categories"),
        (["search", "-k", "3", "--sampler", "mandelbrot", "--out", "x.json"], "--sampler"),
        (["search", "-k", "3", "--set", "colour=1", "--out", "x.json"], "sampler setting"),
        (["preview", "--categories", "missing.json"], "not found"),
        (["preview", "--categories", "BAD", "--out", "p.png"], "malformed"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, args, needle):
    (tmp_path / "BAD").write_text("[1, 2")
    args = [
        str(tmp_path / a) if a in ("missing.json", "BAD", "x.json", "p.png") else a for a in args
    ]
    res = run_cli(*args)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), res.stderr
    assert needle in lines[0]
    assert "Traceback" not in res.stderr


def test_renderer_package_imports_without_torch():
    code = (
        "import sys, fractaldb.cli, fractaldb.commands, fractaldb.render, fractaldb.search, "
        "fractaldb.preview; from click.testing import CliRunner; "
        "CliRunner().invoke(fractaldb.cli.main, ['--help']); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
