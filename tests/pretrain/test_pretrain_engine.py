"""The training engine on CPU: learning, exact resume, accumulation, export, NaN stop."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from helpers import CrashAtEpoch, read_metrics, train_straight_and_resumed

from pretrain.engine.checkpoint import load_checkpoint
from pretrain.engine.data import synthetic_data
from pretrain.engine.loop import NonFiniteLoss, plan_batch, train
from pretrain.supervised import SupervisedTask

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: the cores are shared


class NaNFromEpoch(CrashAtEpoch):
    """Feeds NaN images from `epoch` on, so the loss becomes non-finite."""

    def train_loader(self, epoch, **kw):
        loader = self.inner.train_loader(epoch, **kw)
        if epoch < self.epoch:
            return loader
        return [(x * float("nan"), y) for x, y in loader]


def test_loss_falls_and_val_accuracy_beats_chance(tmp_path, tiny_config):
    cfg = tiny_config(epochs=3)
    out = train(cfg, SupervisedTask(), synthetic_data(4, 32, 32), tmp_path)
    steps = read_metrics(tmp_path, "train")
    epochs = read_metrics(tmp_path, "epoch")
    assert len(steps) == 3 * 128 // 16
    assert sum(e["loss"] for e in steps[-4:]) < 0.8 * sum(e["loss"] for e in steps[:4])
    assert all({"step", "epoch", "loss", "lr", "images_per_s"} <= set(e) for e in steps)
    assert epochs[-1]["val_top1"] == out["val_top1"]
    assert out["val_top1"] > 60.0  # chance is 25 %
    assert (tmp_path / "config.yaml").is_file()
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_resume_after_crash_matches_uninterrupted_run(tmp_path, tiny_config):
    # Mixup (numpy RNG), drop-path (torch RNG), warm-up and EMA all have to survive the resume.
    cfg = tiny_config(
        epochs=2, mixup=0.8, cutmix=1.0, drop_path=0.1, warmup_epochs=1, ema=True, ema_decay=0.9
    )
    data = synthetic_data(4, 16, 32)
    ref, got, a, b = train_straight_and_resumed(cfg, SupervisedTask, data, tmp_path)
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert [e["step"] for e in a] == [e["step"] for e in b] == list(range(1, 9))
    assert [e["lr"] for e in a] == pytest.approx([e["lr"] for e in b], rel=1e-12)
    assert [e["loss"] for e in a] == pytest.approx([e["loss"] for e in b], rel=1e-4)
    assert got["val_top1"] == ref["val_top1"]
    assert got["val_ema_top1"] == ref["val_ema_top1"]
    w_full = load_checkpoint(full / "last.pt")
    w_cut = load_checkpoint(cut / "last.pt")
    for k, v in w_full["ema"].items():
        torch.testing.assert_close(w_cut["ema"][k], v, rtol=1e-4, atol=1e-6)


def test_checkpoint_contents_and_refusals(tmp_path, tiny_config):
    cfg = tiny_config(epochs=1, save_every=1)
    data = synthetic_data(4, 8, 32)
    train(cfg, SupervisedTask(), data, tmp_path)
    raw = torch.load(tmp_path / "checkpoint-0001.pt", map_location="cpu", weights_only=True)
    assert {
        "model",
        "optimizer",
        "scheduler",
        "scaler",
        "ema",
        "epoch",
        "global_step",
        "rng",
        "data_position",
        "config",
        "manifest_sha256",
    } <= set(raw)
    assert raw["manifest_sha256"] == "synthetic-0" and raw["config"]["epochs"] == 1
    assert set(raw["rng"]) == {"torch", "numpy", "python", "cuda"}
    assert not list(tmp_path.glob("*.tmp*"))
    # the periodic copy is a hard link to the epoch's last.pt, not a second file
    assert (tmp_path / "checkpoint-0001.pt").stat().st_ino == (tmp_path / "last.pt").stat().st_ino
    # Fresh start over an existing run, changed settings, or other data: refused, not mixed.
    from fractaldb.core.errors import FractalDBError

    with pytest.raises(FractalDBError, match="already holds a checkpoint"):
        train(cfg, SupervisedTask(), data, tmp_path)
    with pytest.raises(FractalDBError, match=r"settings differ.*\(lr\)"):
        train({**cfg, "lr": 0.5}, SupervisedTask(), data, tmp_path, resume="auto")
    with pytest.raises(FractalDBError, match="manifest hash"):
        train(cfg, SupervisedTask(), synthetic_data(4, 8, 32, seed=1), tmp_path, resume="auto")


def test_gradient_accumulation_matches_full_batch(tmp_path, tiny_config):
    data = synthetic_data(4, 8, 32)
    train(tiny_config(epochs=1), SupervisedTask(), data, tmp_path / "full")
    train(tiny_config(epochs=1, micro_batch=8), SupervisedTask(), data, tmp_path / "acc")
    a, b = read_metrics(tmp_path / "full", "train"), read_metrics(tmp_path / "acc", "train")
    assert read_metrics(tmp_path / "acc", "setup")[0]["accum_steps"] == 2
    assert [e["loss"] for e in a] == pytest.approx([e["loss"] for e in b], rel=1e-4)


def test_batch_plan_and_lr_scaling(tiny_config):
    plan = plan_batch(tiny_config(batch_size=64, lr=None, blr=5e-4, micro_batch=8), 4)
    assert (plan.per_rank, plan.micro_batch, plan.accum_steps) == (16, 8, 2)
    assert plan.lr == pytest.approx(5e-4 * 64 / 512)
    from fractaldb.core.errors import FractalDBError

    with pytest.raises(FractalDBError, match="split evenly"):
        plan_batch(tiny_config(batch_size=30), 4)


def test_exported_safetensors_load_in_timm_with_same_logits(tmp_path, tiny_config):
    cfg = tiny_config(epochs=1)
    task = SupervisedTask()
    train(cfg, task, synthetic_data(4, 8, 32), tmp_path)
    trained = task.build_model()
    load_checkpoint(tmp_path / "last.pt", model=trained)
    meta = json.loads((tmp_path / "model.json").read_text())
    loaded = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(tmp_path / "model.safetensors"), num_classes=4),
        **meta["model_args"],
    )
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(loaded.eval()(x), trained.eval()(x), rtol=0, atol=0)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, tiny_config):
    cfg = tiny_config(epochs=3)
    data = synthetic_data(4, 8, 32)
    with pytest.raises(NonFiniteLoss) as err:
        train(cfg, SupervisedTask(), NaNFromEpoch(data, 1), tmp_path)
    msg = err.value.format_message()
    assert "\n" not in msg and "non-finite loss" in msg and "last.pt" in msg
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
