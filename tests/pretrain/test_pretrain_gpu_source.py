"""Pre-training from the GPU renderer (pretrain.gpu_source) in Numba's CUDA simulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from click.testing import CliRunner

from fractaldb import gpu
from fractaldb.cli import main
from fractaldb.core.errors import FractalDBError
from fractaldb.render import render_instance
from fractaldb.search import search_categories
from pretrain.gpu_source import GpuOnTheFlyData
from pretrain.shards_source import OnTheFlyData
from pretrain.supervised import SupervisedTask
from shards.onthefly import OnTheFlyDataset
from shards.presets import load_preset
from tests.helpers import assert_one_line_error, read_metrics, train_straight_and_resumed

RENDER = {"image_size": 16, "points": 200, "mode": "point"}


@pytest.fixture(scope="module")
def cats_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("cats") / "categories.json"
    search_categories(4, sampler="sigma", seed=0).save(path)
    return path


def make_source(cats_path, cls=GpuOnTheFlyData, samples=16, **cfg_over):
    cfg = {"device": "cpu", "model_args": {}, "img_size": 16, "mean": [0.5] * 3,
           "std": [0.5] * 3, **cfg_over}  # fmt: skip
    extra = {"cfg": cfg} if cls is GpuOnTheFlyData else {}
    return cls(str(cats_path), None, None, "fractaldb-1k", 4, None, 0, samples,
               render_overrides=RENDER, **extra)  # fmt: skip


def test_batches_are_the_cpu_renders_of_the_stream_as_uint8(cats_path):
    data = make_source(cats_path)
    loader = data.train_loader(1, batch_size=4, seed=3, rank=0, world_size=1)
    assert len(loader) == 4
    x, y = next(iter(loader))
    cells = loader.cells(0)
    ds = OnTheFlyDataset(data.categories, data.settings, 4, seed=3, epoch=1, samples_per_epoch=16)
    assert cells == [ds.cell(p) for p in range(4)]
    assert y.dtype == torch.int64 and y.tolist() == [c for c, _ in cells]
    # the device augmentation's input: uint8 (B, C, H, W), gray stays one channel
    assert x.shape == (4, 1, 16, 16) and x.dtype == torch.uint8
    for img, (c, i) in zip(x, cells, strict=True):
        want = render_instance(data.categories, c, i, data.settings)  # gray, 0 or 127
        assert torch.equal(img[0], torch.from_numpy(want))


def test_gpu_rendering_needs_the_device_augmentation(cats_path):
    with pytest.raises(FractalDBError, match="--augment device"):
        make_source(cats_path, augment="cpu")


GLOO_STREAM = """
import json, sys
import torch
import torch.distributed as dist
from pretrain.engine import distributed as D
from pretrain.gpu_source import GpuOnTheFlyData
info = D.init_distributed("cpu")
cfg = {"device": "cpu", "model_args": {}, "img_size": 16, "mean": [0.5] * 3, "std": [0.5] * 3}
data = GpuOnTheFlyData(sys.argv[1], None, None, "fractaldb-1k", 4, None, 0, 16,
                       render_overrides=json.loads(sys.argv[3]), cfg=cfg)
out = {}
for epoch in (3,):
    loader = data.train_loader(epoch, batch_size=4, seed=7, rank=info.rank,
                               world_size=info.world_size)
    cells, labels = [], []
    for b, (x, y) in enumerate(loader):
        assert tuple(x.shape) == (4, 1, 16, 16) and x.dtype == torch.uint8
        cells += loader.cells(b)
        labels += y.tolist()
    out[epoch] = {"cells": cells, "labels": labels}
gathered = [None] * info.world_size
dist.all_gather_object(gathered, out)
if info.rank == 0:
    json.dump(gathered, open(sys.argv[2], "w"))
D.cleanup()
"""


def test_two_gloo_ranks_draw_disjoint_parts_of_the_stream(cats_path, tmp_path):
    script, result = tmp_path / "stream.py", tmp_path / "stream.json"
    script.write_text(GLOO_STREAM)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", str(script), str(cats_path), str(result), json.dumps(RENDER)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_ENABLE_CUDASIM": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    ranks = json.loads(result.read_text())
    data = make_source(cats_path, cls=OnTheFlyData)
    for epoch in ("3",):
        per_rank = [[tuple(c) for c in r[epoch]["cells"]] for r in ranks]
        assert all(len(c) == 8 for c in per_rank)
        assert not set(per_rank[0]) & set(per_rank[1])
        # Together: the epoch's whole permutation of the 4 x 4 grid, rank r at r, r + 2, ...
        ds = OnTheFlyDataset(data.categories, data.settings, 4, seed=7, epoch=int(epoch),
                             samples_per_epoch=16)  # fmt: skip
        assert per_rank[0] == [ds.cell(p) for p in range(0, 16, 2)]
        assert per_rank[1] == [ds.cell(p) for p in range(1, 16, 2)]
        for r in ranks:
            assert r[epoch]["labels"] == [c for c, _ in r[epoch]["cells"]]


def test_resume_continues_the_stream_exactly(cats_path, tiny_config, tmp_path):
    cfg = tiny_config(epochs=2, batch_size=4, samples_per_epoch=8, img_size=16, augment="device")
    data = make_source(cats_path, samples=8, **{k: cfg[k] for k in ("img_size", "mean", "std")})
    ref, got, straight, resumed = train_straight_and_resumed(cfg, SupervisedTask, data, tmp_path)
    assert [e["step"] for e in straight] == [e["step"] for e in resumed] == [1, 2, 3, 4]
    assert [e["loss"] for e in straight] == [e["loss"] for e in resumed]
    assert len({e["loss"] for e in straight}) == 4  # the batches differ
    assert got["loss"] == ref["loss"]
    # An epoch's batches are a function of (seed, epoch, rank) only: a new order every epoch.
    first = data.train_loader(0, batch_size=4, seed=0, rank=0, world_size=1)
    second = data.train_loader(1, batch_size=4, seed=0, rank=0, world_size=1)
    assert first.cells(0) != second.cells(0)


def run_cli(*args):
    return CliRunner().invoke(main, ["pretrain", "supervised", "--recipe", "tiny-cpu", *args])


def test_cli_renders_on_the_gpu_and_records_the_settings(cats_path, tmp_path):
    out = tmp_path / "run"
    res = run_cli("--on-the-fly", str(cats_path), "--render-device", "cuda", "--device", "cpu",
                  "--image-size", "16", "--points", "200", "--mode", "point", "--img-size", "16",
                  "--model-arg", "patch_size=8", "--samples-per-epoch", "16", "--batch-size",
                  "8", "--epochs", "1", "--set", "instances_per_category=4", "--out", str(out))  # fmt: skip
    assert res.exit_code == 0, res.output
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    want = load_preset("fractaldb-1k").render.replace(**RENDER)  # the preset's other settings
    assert cfg["render"] == want.to_dict() and cfg["render_device"] == "cuda"
    assert cfg["gpu_mode"] == "exact"
    setup = read_metrics(out, "setup")[0]
    # The category set is identified by its canonical hash: reformatting the file keeps it.
    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps(json.loads(cats_path.read_text()), indent=4))
    a = make_source(cats_path, cls=OnTheFlyData)
    b = make_source(pretty, cls=OnTheFlyData)
    assert a.manifest_sha256 == b.manifest_sha256 == setup["manifest_sha256"]
    fast = OnTheFlyData(str(cats_path), None, None, "fractaldb-1k", 4, None, 0, 16,
                        render_overrides=RENDER, gpu_mode="fast")  # fmt: skip
    assert fast.manifest_sha256 != a.manifest_sha256


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--render-device", "cpu", "--gpu-mode", "fast"], ["--gpu-mode fast", "fix:"]),
        (["--render-device", "cuda", "--color", "hue"], ["hue colour", "fix:"]),
        (["--set", "gpu_mode=turbo"], ["unknown GPU render mode 'turbo'"]),
        (["--set", "render_device=tpu"], ["unknown render device 'tpu'"]),
        (
            ["--render-device", "cuda", "--points", "0"],
            ["points must be an integer in [1, 1,000,000,000]"],
        ),
    ],
)
def test_bad_render_options_are_one_line_errors(cats_path, tmp_path, args, needles):
    res = run_cli("--on-the-fly", str(cats_path), "--device", "cpu", *args,
                  "--out", str(tmp_path / "r"))  # fmt: skip
    assert_one_line_error(res, *needles)


def test_render_device_cuda_without_cuda_is_a_one_line_error(cats_path, tmp_path, monkeypatch):
    monkeypatch.setattr(gpu, "cuda_available", lambda: False)
    monkeypatch.setattr(gpu, "numba_cuda_installed", lambda: True)  # the extra is optional
    res = run_cli("--on-the-fly", str(cats_path), "--device", "cpu", "--render-device", "cuda",
                  "--out", str(tmp_path / "r"))  # fmt: skip
    assert_one_line_error(res, "--render-device cuda", "no CUDA GPU")
    assert not (tmp_path / "r").exists()


def test_auto_renders_in_loader_workers_on_a_cpu_device(cats_path):
    from pretrain.sources import resolve_render_device

    cfg = {"render_device": "auto", "gpu_mode": "exact", "device": "cpu", "render": {}}
    assert resolve_render_device(cfg) == "cpu"
    assert resolve_render_device({**cfg, "render_device": "cuda"}) == "cuda"  # simulator
