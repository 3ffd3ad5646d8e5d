"""GPU renderer (fractaldb.gpu) in Numba's CUDA simulator: tiny images, equality with the CPU."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fractaldb import gpu
from fractaldb.categories import Category, CategorySet
from fractaldb.cli import main
from fractaldb.core.errors import FractalDBError
from fractaldb.ifs import det_probs
from fractaldb.render import render_instance
from fractaldb.settings import RenderSettings
from shards.presets import Layout
from shards.tario import file_sha256
from shards.writer import write_shards
from tests.helpers import assert_one_line_error

SIERPINSKI = np.array(
    [[0.5, 0, 0, 0.5, 0, 0], [0.5, 0, 0, 0.5, 0.5, 0], [0.5, 0, 0, 0.5, 0.25, 0.5]], float
)
FERN = np.array(
    [
        [0.85, 0.04, -0.04, 0.85, 0, 1.6],
        [0.2, -0.26, 0.23, 0.22, 0, 1.6],
        [-0.15, 0.28, 0.26, 0.24, 0, 0.44],
        [0, 0, 0, 0.16, 0, 0],
    ]
)
DIVERGENT = np.array([[1.7, 0.3, -0.2, 1.7, 1, 0], [1.7, 0, 0, -1.7, 0, 1]])
NAN_MAP = np.array([[np.nan, 0, 0, 0.5, 0, 0], [0.5, 0, 0, 0.5, 0.5, 0.5]])


def make_set(*systems: np.ndarray) -> CategorySet:
    cats = tuple(Category(maps=m, probs=det_probs(m), fill_rate=0.0) for m in systems)
    return CategorySet(categories=cats, sampler="fractaldb")


CATS = make_set(SIERPINSKI, FERN)
TINY = RenderSettings(image_size=16, points=203, seed=5)  # 203: exercises the n % 8 tail
# Plain, all four flips, a parameter variant (instance 4 -> variant 1), another render.
CELLS = [(0, 0), (1, 1), (1, 2), (0, 3), (1, 4), (0, 101)]


def cpu_images(cats: CategorySet, cells, settings: RenderSettings) -> list[np.ndarray]:
    return [render_instance(cats, c, i, settings) for c, i in cells]


@pytest.mark.parametrize("mode", ["point", "patch"])
@pytest.mark.parametrize("color", ["gray", "color", "hue"])
def test_exact_mode_equals_the_cpu_renderer(mode, color):
    settings = TINY.replace(mode=mode, color=color)
    got = gpu.render_batch_to_host(CATS, CELLS, settings)
    want = cpu_images(CATS, CELLS, settings)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype == np.uint8 and g.shape == w.shape
        assert g.tobytes() == w.tobytes()
    assert all(w.any() for w in want)


def test_device_array_is_the_host_image_and_colour_is_hwc():
    settings = TINY.replace(image_size=24, color="color")
    dev = gpu.render_batch(CATS, CELLS[:3], settings)
    # A device array (the simulator's stand-in lacks __cuda_array_interface__).
    assert hasattr(dev, "copy_to_host")
    assert dev.shape == (3, 24, 24, 3)
    host = dev.copy_to_host()
    for g, w in zip(host, cpu_images(CATS, CELLS[:3], settings), strict=True):
        assert np.array_equal(g, w)


def test_divergent_and_nan_systems_are_handled_as_on_the_cpu():
    cats = make_set(DIVERGENT, NAN_MAP, SIERPINSKI)
    cells = [(0, 0), (1, 0), (2, 0)]
    for settings in (TINY.replace(points=400), TINY.replace(points=400, color="hue")):
        got = gpu.render_batch_to_host(cats, cells, settings)
        for g, w in zip(got, cpu_images(cats, cells, settings), strict=True):
            assert np.array_equal(g, w)


def test_batches_are_deterministic_and_independent_of_their_company():
    settings = TINY.replace(image_size=24)
    a = gpu.render_batch(CATS, CELLS, settings).copy_to_host()
    b = gpu.render_batch(CATS, CELLS, settings).copy_to_host()
    alone = gpu.render_batch(CATS, CELLS[4:5], settings).copy_to_host()
    assert a.tobytes() == b.tobytes()
    assert np.array_equal(a[4], alone[0])


def test_fast_mode_is_deterministic_framed_and_not_the_exact_pixels():
    settings = TINY.replace(image_size=24, points=2000, mode="point")
    cells = [(0, 0), (1, 0)]
    a = gpu.render_batch(CATS, cells, settings, "fast").copy_to_host()
    b = gpu.render_batch(CATS, cells, settings, "fast").copy_to_host()
    exact = gpu.render_batch(CATS, cells, settings, "exact").copy_to_host()
    assert a.tobytes() == b.tobytes()
    assert set(np.unique(a)) <= {0, 127}
    for f, e in zip(a, exact, strict=True):
        assert not np.array_equal(f, e)
        # Same attractor in the same frame: the lit pixels mostly coincide.
        overlap = np.logical_and(f > 0, e > 0).sum() / max((f > 0).sum(), 1)
        assert overlap > 0.5


def test_bad_mode_and_hue_on_the_device_are_one_line_errors():
    with pytest.raises(FractalDBError, match="unknown GPU render mode 'turbo'"):
        gpu.render_batch(CATS, CELLS, TINY, "turbo")
    with pytest.raises(FractalDBError, match="hue colour"):
        gpu.render_batch(CATS, CELLS, TINY.replace(color="hue"))


def test_no_cuda_is_a_one_line_error(monkeypatch, tmp_path):
    monkeypatch.setattr(gpu, "cuda_available", lambda: False)
    monkeypatch.setattr(gpu, "numba_cuda_installed", lambda: True)  # the extra is optional
    with pytest.raises(FractalDBError, match="no CUDA GPU"):
        gpu.render_batch(CATS, CELLS, TINY)
    CATS.save(tmp_path / "cats.json")
    res = CliRunner().invoke(
        main,
        [
            "render",
            "--categories",
            str(tmp_path / "cats.json"),
            "--out",
            str(tmp_path / "o"),
            "--device",
            "cuda",
            "--quiet",
        ],
    )
    assert_one_line_error(res, "--device cuda", "no CUDA GPU", "fix:")
    assert not (tmp_path / "o").exists()


def test_no_cuda_without_the_simulator_exits_2_in_one_line(tmp_path):
    CATS.save(tmp_path / "cats.json")
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0"}
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            "from fractaldb.cli import main; main()",
            "render",
            "--categories",
            str(tmp_path / "cats.json"),
            "--out",
            str(tmp_path / "o"),
            "--device",
            "cuda",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: --device cuda"), res.stderr


def test_render_device_cuda_writes_the_cpu_shards_byte_for_byte(tmp_path):
    settings = TINY.replace(image_size=16, points=300)
    layout = Layout(instances_per_category=6, samples_per_shard=5, format="png")
    cpu, dev = tmp_path / "cpu", tmp_path / "gpu"
    write_shards(CATS, settings, layout, cpu, workers=1, progress=False)
    report = write_shards(
        CATS, settings, layout, dev, workers=2, progress=False, batch_size=4, device="cuda"
    )
    assert report.finalized and report.written == 3
    names = sorted(p.name for p in cpu.glob("*.tar"))
    assert names == sorted(p.name for p in dev.glob("*.tar")) and len(names) == 3
    for n in names:
        assert file_sha256(cpu / n) == file_sha256(dev / n)
    cpu_m = json.loads((cpu / "manifest.json").read_text())
    gpu_m = json.loads((dev / "manifest.json").read_text())
    assert cpu_m["dataset_id"] == gpu_m["dataset_id"]
    assert cpu_m["render_devices"] == ["cpu"]
    assert len(gpu_m["render_devices"]) == 1 and gpu_m["render_devices"][0].startswith("cuda:")
    assert all(r["device"].startswith("cuda:") for r in gpu_m["shards"])


PTX_CHECK = """
import re, types
from numba import cuda, types as t
import numba.cuda.dispatcher as dispatcher
# No GPU here: device functions ask the current device for its compute capability.
dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))
import fractaldb.gpu_kernels as g
sig = (t.float64[:, :, ::1], t.uint8[:, ::1], t.uint64[::1], t.int64, t.int64, t.float64,
       t.boolean, t.uint8[:, :, ::1])
exact, _ = cuda.compile_ptx(g.exact_kernel.py_func, sig, cc=(9, 0))
fast, _ = cuda.compile_ptx(g.fast_kernel.py_func, sig[:-1] + (t.uint32[:, :, ::1],), cc=(9, 0))
print(len(re.findall(r"\\bfma\\.", exact)), len(re.findall(r"\\bmul\\.rn\\.f64", exact)),
      len(re.findall(r"\\bfma\\.", fast)))
"""


@pytest.mark.skipif(
    importlib.util.find_spec("numba_cuda") is None, reason="needs the cuda extra (numba-cuda)"
)
def test_exact_kernel_compiles_for_a_real_gpu_without_fma():
    """Compile to PTX (no GPU needed): the exact kernel has no FMA; plain code gets some."""
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0"}
    res = subprocess.run(
        [sys.executable, "-c", PTX_CHECK],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=Path(__file__).parents[2],
    )
    assert res.returncode == 0, res.stderr[-2000:]
    fma_exact, mul_exact, fma_fast = map(int, res.stdout.split())
    assert fma_exact == 0 and mul_exact > 0
    assert fma_fast > 0  # NVVM contracts a * b + c even without fastmath


def load_benchmark(monkeypatch):
    """benchmarks/render_gpu.py as the module `render_gpu` (its CPU workers unpickle it)."""
    path = Path(__file__).parents[2] / "benchmarks" / "render_gpu.py"
    spec = importlib.util.spec_from_file_location("render_gpu", path)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "render_gpu", bench)
    spec.loader.exec_module(bench)
    return bench


def test_render_gpu_benchmark_runs_in_the_simulator(monkeypatch, capsys):
    """benchmarks/render_gpu.py --json with tiny settings (figures meaningless here)."""
    bench = load_benchmark(monkeypatch)
    tiny = ["--image-size", "16", "--points", "200", "--categories", "4", "--batch", "4",
            "--seconds", "0", "--cpu-images", "4", "--sample", "4", "--json"]  # fmt: skip
    assert bench.main(tiny) == 0
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rep["simulator"] is True and rep["sample_images"] == 4
    assert rep["pixel_equal_fraction"] == 1.0 and rep["images_equal"] == 4
    for key in ("gpu_images_per_s", "gpu_fast_images_per_s", "cpu_images_per_s_all_cores",
                "ratio", "fractaldb_1k_seconds"):  # fmt: skip
        assert rep[key] > 0


def test_render_gpu_benchmark_training_ratio_runs_on_cpu(monkeypatch, capsys):
    """--train on a CPU device: synthetic and on-the-fly engine runs, one step each."""
    bench = load_benchmark(monkeypatch)
    tiny = ["--image-size", "16", "--points", "100", "--categories", "2", "--batch", "2",
            "--seconds", "0", "--cpu-images", "2", "--sample", "2", "--json", "--train",
            "--train-device", "cpu", "--train-img-size", "32", "--train-batch", "2",
            "--train-steps", "1", "--train-warmup", "0", "--train-models",
            "supervised:deit_tiny_patch16_224", "--train-model-arg", "depth=1",
            "--train-model-arg", "patch_size=8"]  # fmt: skip
    assert bench.main(tiny) == 0
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [(t["task"], t["model"]) for t in rep["train"]] == [
        ("supervised", "deit_tiny_patch16_224")
    ]
    for t in rep["train"]:
        assert t["onthefly_gpu_images_per_s"] > 0 and t["onthefly_ratio"] > 0


def test_missing_cuda_extra_names_the_install_command(monkeypatch):
    monkeypatch.setattr(gpu, "cuda_available", lambda: False)
    monkeypatch.setattr(gpu, "numba_cuda_installed", lambda: False)
    with pytest.raises(FractalDBError) as err:
        gpu.require_cuda("--render-device cuda", "--render-device cpu")
    msg = str(err.value)
    assert "\n" not in msg and "needs numba-cuda" in msg and gpu.INSTALL_CUDA in msg
    assert msg.endswith("or use --render-device cpu")


def test_render_gpu_benchmark_without_cuda_is_one_line(monkeypatch, capsys):
    bench = load_benchmark(monkeypatch)
    monkeypatch.setattr(gpu, "cuda_available", lambda: False)
    monkeypatch.setattr(gpu, "numba_cuda_installed", lambda: True)  # the extra is optional
    assert bench.main(["--json"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no CUDA GPU" in err[0]
