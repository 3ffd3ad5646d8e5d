"""The device data path end to end on CPU: uint8 batches from shards and from the on-the-fly
renderer, augmented by Task.augment; training behaves like the PIL path; exact resume."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from helpers import read_metrics, train_straight_and_resumed

from fractaldb.cli import main
from pretrain.engine.config import resolve_config
from pretrain.shards_source import ShardsData
from pretrain.supervised import SupervisedTask

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def gray_shards(tmp_path_factory):
    """4 gray fractal categories at 40 px: 48 training instances each, 8 held out."""
    from fractaldb.search import search_categories
    from fractaldb.settings import RenderSettings
    from shards.presets import Layout
    from shards.writer import write_shards

    root = tmp_path_factory.mktemp("fdb-gray")
    cats = search_categories(4, sampler="sigma", seed=2)
    render = RenderSettings(
        image_size=40, points=2000, mode="patch", scheme="jitter", jitter=0.05, flips=False,
        seed=1, color="gray",
    )  # fmt: skip
    write_shards(cats, render, Layout(instances_per_category=48, samples_per_shard=32),
                 root / "train", workers=1, progress=False)  # fmt: skip
    write_shards(cats, render.replace(seed=99), Layout(instances_per_category=8,
                 samples_per_shard=32), root / "val", workers=1, progress=False)  # fmt: skip
    return root


class RecordingTask(SupervisedTask):
    """Remembers what the loader delivered and what reached the model."""

    def augment(self, batch):
        self.loaded = (batch[0].dtype, tuple(batch[0].shape))
        return super().augment(batch)

    def train_step(self, model, batch):
        self.model_input = (batch[0].dtype, tuple(batch[0].shape))
        return super().train_step(model, batch)


def tiny(task, **over):
    base = {"log_every": 1, "seed": 0, "device": "cpu", "amp": "none", "workers": 0}
    return resolve_config(task.defaults, "tiny-cpu", {**base, **over}, task.name)


def shards_source(cfg, task, root):
    return ShardsData(str(root / "train"), str(root / "val"), task.train_transform(cfg),
                      task.eval_transform(cfg), 0, cfg["samples_per_epoch"])  # fmt: skip


def test_gray_shards_reach_the_model_as_three_channels_only_on_the_device(gray_shards, tmp_path):
    from pretrain.engine.loop import train

    task = RecordingTask()
    cfg = tiny(task, augment="device", epochs=1, batch_size=32, samples_per_epoch=64)
    train(cfg, task, shards_source(cfg, task, gray_shards), tmp_path / "dev")
    assert task.loaded == (torch.uint8, (32, 1, 40, 40))  # workers decode only, gray stays 1-ch
    assert task.model_input == (torch.float32, (32, 3, 32, 32))
    task = RecordingTask()
    cfg = tiny(task, augment="cpu", epochs=1, batch_size=32, samples_per_epoch=64)
    train(cfg, task, shards_source(cfg, task, gray_shards), tmp_path / "cpu")
    assert task.loaded == (torch.float32, (32, 3, 32, 32))  # the PIL path: RGB floats


def invoke(*args):
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize("augment", ["device", "cpu"])
def test_tiny_supervised_learns_from_shards_on_both_paths(gray_shards, tmp_path, augment):
    run = tmp_path / augment
    res = invoke(
        "pretrain", "supervised", "--recipe", "tiny-cpu", "--device", "cpu", "--augment", augment,
        "--data", str(gray_shards / "train"), "--val-data", str(gray_shards / "val"),
        "--out", str(run), "--epochs", "5", "--batch-size", "32", "--lr", "2e-3",
        "--workers", "0", "--set", "scale=[0.9, 1.0]", "--set", "smoothing=0",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert f"augmentation ({augment}" in res.output
    epochs = read_metrics(run, "epoch")
    assert epochs[-1]["loss"] < 0.85 * epochs[0]["loss"]
    assert epochs[-1]["val_top1"] > 40.0  # chance: 25 %


@pytest.mark.parametrize("augment", ["device", "cpu"])
def test_tiny_mae_learns_from_shards_on_both_paths(gray_shards, tmp_path, augment):
    run = tmp_path / augment
    res = invoke(
        "pretrain", "mae", "--recipe", "mae-tiny-cpu", "--device", "cpu", "--augment", augment,
        "--data", str(gray_shards / "train"), "--out", str(run), "--epochs", "4",
        "--batch-size", "32", "--workers", "0", "--log-every", "1",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    steps = [e["loss"] for e in read_metrics(run, "train")]
    assert sum(steps[-4:]) < 0.9 * sum(steps[:4])
    assert (run / "reconstruction-epoch004.png").is_file()


def test_on_the_fly_renders_uint8_and_trains_on_the_device(gray_shards, tmp_path):
    run = tmp_path / "fly"
    res = invoke(
        "pretrain", "supervised", "--recipe", "tiny-cpu", "--device", "cpu",
        "--augment", "device", "--on-the-fly", str(gray_shards / "train" / "categories.json"),
        "--set", "render_preset=quickstart", "--set", "instances_per_category=16",
        "--samples-per-epoch", "64", "--out", str(run), "--epochs", "4", "--batch-size", "16",
        "--lr", "2e-3", "--workers", "0", "--set", "scale=[0.9, 1.0]", "--set", "smoothing=0",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    epochs = read_metrics(run, "epoch")
    assert epochs[-1]["loss"] < epochs[0]["loss"]


def test_resume_on_the_device_path_matches_an_uninterrupted_run(gray_shards, tmp_path):
    # crops, RandAugment, erasing, mixup and drop-path all drawn per (seed, epoch, rank)
    task = SupervisedTask()
    cfg = tiny(task, augment="device", epochs=2, batch_size=16, samples_per_epoch=64,
               mixup=0.8, cutmix=1.0, reprob=0.25, drop_path=0.1, warmup_epochs=1)  # fmt: skip
    data = shards_source(cfg, task, gray_shards)
    ref, got, a, b = train_straight_and_resumed(cfg, SupervisedTask, data, tmp_path)
    assert [e["step"] for e in a] == [e["step"] for e in b] == list(range(1, 9))
    assert [e["loss"] for e in a] == pytest.approx([e["loss"] for e in b], rel=1e-4)
    assert got["val_top1"] == ref["val_top1"]


@pytest.mark.parametrize("dataset", ["cifar10", "flowers102"])
def test_finetune_on_photos_decodes_in_workers_and_augments_on_the_device(
    tmp_path, monkeypatch, dataset
):
    from fixtures_downstream import accept_fixture_md5, make_cifar10, make_flowers102

    from finetune.cli import finetune
    from pretrain.engine.augment import PhotoToUint8

    builder = {"cifar10": make_cifar10, "flowers102": make_flowers102}[dataset]
    md5s = builder(tmp_path)
    if md5s:
        accept_fixture_md5(monkeypatch, dataset, md5s)
    out = tmp_path / "run"
    res = CliRunner().invoke(finetune, [
        "--dataset", dataset, "--data-root", str(tmp_path), "--init", "scratch",
        "--model", "vit_tiny_patch16_224", "--model-arg", "patch_size=8", "--model-arg",
        "depth=2", "--model-arg", "embed_dim=32", "--model-arg", "num_heads=2",
        "--img-size", "32", "--batch-size", "4", "--epochs", "1", "--lr", "0.01",
        "--device", "cpu", "--workers", "0", "--amp", "none", "--augment", "device",
        "--set", "warmup_epochs=0", "--out", str(out),
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "augmentation (device, batched)" in res.output
    assert read_metrics(out, "epoch")[-1]["val_samples"] > 0
    # the worker side: any photo -> uint8 (3, size, size), nothing else
    from PIL import Image

    photo = Image.new("L", (50, 30), 200)
    tensor = PhotoToUint8(32)(photo)
    assert tensor.dtype == torch.uint8 and tuple(tensor.shape) == (3, 32, 32)
    assert int(tensor.min()) == int(tensor.max()) == 200
