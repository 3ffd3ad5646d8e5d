"""MAE pre-training on the engine (CPU, tiny ViT): learning, exact resume, export, pictures, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import timm
import torch
import yaml
from click.testing import CliRunner
from helpers import assert_one_line_error, read_metrics, train_straight_and_resumed

from fractaldb.cli import main
from pretrain.engine.checkpoint import load_checkpoint
from pretrain.engine.data import TensorData, synthetic_data
from pretrain.engine.loop import train
from pretrain.mae_picture import RECON_LABEL_WIDTH, reconstruction_grid
from pretrain.mae_task import MAETask

TINY_ARGS = {"patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: the cores are shared


def mae_config(**overrides):
    """The mae-tiny-cpu recipe at embed dim 32, logging every step."""
    from pretrain.engine.config import resolve_config

    base = {"log_every": 1, "seed": 0, "device": "cpu", "amp": "none", "workers": 0}
    cfg = resolve_config(MAETask.defaults, "mae-tiny-cpu", {**base, **overrides}, "mae")
    cfg["model_args"].update(TINY_ARGS)
    return cfg


def trained_mae(run: Path, cfg: dict):
    """The MAE as it was after the run's last epoch, rebuilt from RUN/last.pt."""
    task = MAETask()
    task.setup(cfg, None)
    model = task.build_model()
    load_checkpoint(run / "last.pt", model=model)
    return model.eval()


def test_loss_falls_val_loss_pictures_and_timm_export(tmp_path):
    cfg = mae_config(epochs=3, recon_every=2, recon_images=5)
    data = synthetic_data(4, 32, 32)
    out = train(cfg, MAETask(), data, tmp_path)

    steps, epochs = read_metrics(tmp_path, "train"), read_metrics(tmp_path, "epoch")
    assert [e["step"] for e in steps] == list(range(1, 3 * 128 // 16 + 1))
    first, last = np.mean([e["loss"] for e in steps[:4]]), np.mean([e["loss"] for e in steps[-4:]])
    assert last < 0.9 * first, (first, last)
    assert [e["val_samples"] for e in epochs] == [32] * 3
    assert epochs[-1]["val_loss"] < epochs[0]["val_loss"]
    assert out["val_loss"] == epochs[-1]["val_loss"]

    # pictures every 2 epochs and after the last, of the first validation images
    names = sorted(p.name for p in tmp_path.glob("reconstruction-*.png"))
    assert names == ["reconstruction-epoch002.png", "reconstruction-epoch003.png"]
    model = trained_mae(tmp_path, cfg)
    expected = reconstruction_grid(
        model, data.val_images[:5], seed=0, mean=[0.5] * 3, std=[0.5] * 3
    )
    png = cv2.imread(str(tmp_path / "reconstruction-epoch003.png"))[..., ::-1]
    assert png.shape == expected.shape == (3 * 96 + 4 * 2, RECON_LABEL_WIDTH + 5 * 96 + 7 * 2, 3)
    assert np.abs(png.astype(int) - expected.astype(int)).max() <= 1

    # the encoder alone, through timm's own pretrained loading, with the args in model.json
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["num_classes"] == 0 and meta["model_args"]["img_size"] == 32
    torch.manual_seed(123)  # different random init: the weights must come from the file
    enc = timm.create_model(
        cfg["model"],
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(tmp_path / "model.safetensors")),
        num_classes=0,
        **meta["model_args"],
    ).eval()
    x = data.val_images[:4]
    with torch.no_grad():
        torch.testing.assert_close(enc.forward_features(x), model.forward_features(x))
        # and the features differ from a fresh encoder's: training reached the file
        fresh = timm.create_model(cfg["model"], num_classes=0, **meta["model_args"]).eval()
        assert not torch.allclose(fresh.forward_features(x), model.forward_features(x))


def test_resume_after_crash_matches_uninterrupted_run(tmp_path):
    # warm-up + cosine, drop-path and the random masks must all replay after the resume
    cfg = mae_config(epochs=2, warmup_epochs=1, drop_path=0.1, recon_every=1)
    data = synthetic_data(4, 16, 32)
    ref, got, a, b = train_straight_and_resumed(cfg, MAETask, data, tmp_path)
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert [e["step"] for e in a] == [e["step"] for e in b] == list(range(1, 9))
    assert [e["lr"] for e in a] == pytest.approx([e["lr"] for e in b], rel=1e-12)
    assert [e["loss"] for e in a] == pytest.approx([e["loss"] for e in b], rel=1e-4)
    # the masks really are random per step: losses are not all equal by construction
    assert len({round(e["loss"], 6) for e in a}) == len(a)
    assert got["val_loss"] == pytest.approx(ref["val_loss"], rel=1e-4)
    for name in ("reconstruction-epoch001.png", "reconstruction-epoch002.png"):
        pa, pb = cv2.imread(str(full / name)), cv2.imread(str(cut / name))
        assert np.abs(pa.astype(int) - pb.astype(int)).max() <= 1, name


def test_pictures_without_validation_use_the_first_training_batch(tmp_path):
    cfg = mae_config(epochs=1, recon_images=3)
    data = synthetic_data(4, 8, 32)
    nodata = TensorData(data.images, data.labels, manifest_sha256="x")
    train(cfg, MAETask(), nodata, tmp_path)
    assert not [e for e in read_metrics(tmp_path, "epoch") if "val_loss" in e]
    first = next(iter(nodata.train_loader(0, batch_size=16, seed=0, rank=0, world_size=1)))[0]
    expected = reconstruction_grid(trained_mae(tmp_path, cfg), first[:3], seed=0)
    png = cv2.imread(str(tmp_path / "reconstruction-epoch001.png"))[..., ::-1]
    assert np.abs(png.astype(int) - expected.astype(int)).max() <= 1


def test_gray_encoder_gets_one_channel_images(tmp_path):
    from PIL import Image

    cfg = mae_config(epochs=1)
    cfg["model_args"]["in_chans"] = 1
    task = MAETask()
    rgb = Image.fromarray(np.full((48, 48, 3), 255, np.uint8))
    for tf in (task.train_transform(cfg), task.eval_transform(cfg)):
        x = tf(rgb)
        assert x.shape == (1, 32, 32) and torch.allclose(x, torch.ones_like(x))
    gray = synthetic_data(4, 8, 32)
    data = TensorData(gray.images[:, :1], gray.labels, gray.val_images[:, :1], gray.val_labels)
    train(cfg, task, data, tmp_path)
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["model_args"]["in_chans"] == 1
    assert cv2.imread(str(tmp_path / "reconstruction-epoch001.png")) is not None


def invoke(*args: str):
    return CliRunner().invoke(main, ["pretrain", "mae", *args])


def test_cli_options_reach_the_run(tmp_path):
    run = tmp_path / "run"
    res = invoke(
        "--recipe", "mae-tiny-cpu", "--data", "synthetic:4", "--samples-per-epoch", "32",
        "--device", "cpu", "--epochs", "1", "--out", str(run), "--mask-ratio", "0.5",
        "--decoder-dim", "16", "--decoder-depth", "1", "--decoder-heads", "2",
        "--no-norm-pix-loss", "--model-arg", "embed_dim=32", "--log-every", "1",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["task"] == "mae" and cfg["mask_ratio"] == 0.5 and cfg["norm_pix_loss"] is False
    assert (cfg["decoder_dim"], cfg["decoder_depth"], cfg["decoder_heads"]) == (16, 1, 2)
    model = trained_mae(run, cfg)
    assert model.decoder_embed.out_features == 16 and model.mask_ratio == 0.5
    assert [e["loss"] > 0 for e in read_metrics(run, "train")] == [True, True]
    assert (run / "model.safetensors").is_file()
    assert (run / "reconstruction-epoch001.png").is_file()


def test_cli_default_recipe_and_bad_input(tmp_path):
    res = invoke("--out", str(tmp_path / "p"), "--print-config")
    assert res.exit_code == 0, res.output
    cfg = yaml.safe_load(res.output)
    assert (cfg["model"], cfg["mask_ratio"], cfg["decoder_dim"]) == (
        "vit_tiny_patch16_224",
        0.75,
        192,
    )

    tiny = ["--recipe", "mae-tiny-cpu", "--data", "synthetic", "--device", "cpu"]
    for ratio in ("0", "1", "-0.2", "1.5"):
        out = tmp_path / f"r{ratio}"
        assert_one_line_error(invoke(*tiny, "--out", str(out), "--mask-ratio", ratio), "mask ratio")
        assert not out.exists()  # refused before anything was written
    out = tmp_path / "size"
    assert_one_line_error(invoke(*tiny, "--out", str(out), "--img-size", "36"), "does not divide")
    assert not out.exists()
    assert_one_line_error(
        invoke(*tiny, "--out", str(tmp_path / "d"), "--decoder-dim", "30"), "decoder dim"
    )
    assert_one_line_error(
        invoke(*tiny, "--out", str(tmp_path / "i"), "--set", "interpolation=cubic"),
        "interpolation",
    )
    assert_one_line_error(
        invoke(*tiny, "--out", str(tmp_path / "m"), "--model", "resnet18"), "resnet18", "fix:"
    )


def test_gray_mae_from_rendered_shards_with_held_out_set(tmp_path):
    from fractaldb.search import search_categories
    from fractaldb.settings import RenderSettings
    from shards.presets import Layout
    from shards.writer import write_shards

    cats = search_categories(2, sampler="sigma", seed=2)
    render = RenderSettings(image_size=32, points=2000, mode="patch", seed=1)
    layout = Layout(instances_per_category=16, samples_per_shard=16)
    write_shards(cats, render, layout, tmp_path / "train", workers=1, progress=False)
    layout = Layout(instances_per_category=4, samples_per_shard=16)
    write_shards(cats, render.replace(seed=99), layout, tmp_path / "val", workers=1, progress=False)
    run = tmp_path / "run"
    res = invoke(
        "--recipe", "mae-tiny-cpu", "--device", "cpu", "--workers", "0", "--epochs", "1",
        "--data", str(tmp_path / "train"), "--val-data", str(tmp_path / "val"),
        "--out", str(run), "--model-arg", "in_chans=1", "--model-arg", "embed_dim=32",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    epoch = read_metrics(run, "epoch")[-1]
    assert epoch["val_samples"] == 8 and np.isfinite(epoch["val_loss"])
    assert json.loads((run / "model.json").read_text())["model_args"]["in_chans"] == 1
    assert (run / "reconstruction-epoch001.png").is_file()


@pytest.mark.parametrize(
    "recipe", ["mae-vit-tiny-fractal", "mae-vit-small-fractal", "mae-tiny-cpu"]
)
def test_mae_recipes_resolve_for_the_task(recipe):
    from pretrain.engine.config import resolve_config

    cfg = resolve_config(MAETask.defaults, recipe, {}, "mae")  # unknown keys would raise
    task = MAETask()
    task.setup(cfg, None)  # shapes checked on the meta device
    assert task.in_chans == 3 and cfg["opt_betas"] == [0.9, 0.95] and cfg["lr_base_size"] == 256


def test_two_process_gloo_mae_run_through_torchrun(tmp_path):
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    run = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "pretrain.cli", "mae", "--recipe", "mae-tiny-cpu", "--data", "synthetic:4",
        "--samples-per-epoch", "64", "--batch-size", "16", "--micro-batch", "4", "--epochs", "1",
        "--device", "cpu", "--out", str(run), "--log-every", "1", "--model-arg", "embed_dim=32",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert res.stdout.count("final weights:") == 1
    assert [e["step"] for e in read_metrics(run, "train")] == [1, 2, 3, 4]
    # every held-out sample once across the two ranks, with the fixed validation masks
    epoch = read_metrics(run, "epoch")[-1]
    assert epoch["val_samples"] == 4 * 4 and np.isfinite(epoch["val_loss"])
    assert [p.name for p in run.glob("reconstruction-*.png")] == ["reconstruction-epoch001.png"]
    keys = set(load_file(run / "model.safetensors"))
    assert "pos_embed" in keys and not any("decoder" in k or "mask_token" in k for k in keys)
