"""DeiT's distillation through attention in fine-tuning: loss values on hand-made logits, a tiny
distilled DeiT taught by a tiny CNN through the command (loss falls, heads averaged at eval,
exact resume), plain-ViT weights into the distilled model, and one-line errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from click.testing import CliRunner
from fixtures_downstream import make_image_folder
from helpers import assert_one_line_error, read_metrics
from safetensors.torch import load_file, save_file

from finetune.cli import finetune
from finetune.distill import distillation_loss
from finetune.task import FinetuneTask
from finetune.weights import load_state_into
from pretrain.engine.models import create_model

ARCH = ["--model-arg", "patch_size=8", "--model-arg", "depth=2", "--model-arg", "embed_dim=32",
        "--model-arg", "num_heads=2"]  # fmt: skip
STUDENT = ["--model", "deit_tiny_distilled_patch16_224", *ARCH]
FAST = ["--img-size", "32", "--batch-size", "4", "--epochs", "1", "--lr", "0.01", "--device",
        "cpu", "--workers", "0", "--amp", "none", "--log-every", "1", "--set", "warmup_epochs=0"]  # fmt: skip
# plain cross-entropy on un-mixed, lightly augmented images: the loss can fall in a few steps
CALM = ["--set", "mixup=0", "--set", "cutmix=0", "--set", "smoothing=0", "--set", "reprob=0",
        "--set", "auto_augment=", "--set", "color_jitter=0", "--set", "scale=[0.9,1.0]"]  # fmt: skip

LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])  # distillation head, 2 x 3
TEACHER = torch.tensor([[0.1, 2.0, 0.3], [1.0, 0.0, 4.0]])  # argmax: 1, 2


def _log_softmax(row: list[float]) -> list[float]:
    z = math.log(sum(math.exp(v) for v in row))
    return [v - z for v in row]


def test_hard_distillation_loss_equals_hand_computed():
    base = torch.tensor(0.7)
    loss, term = distillation_loss("hard", base, LOGITS, TEACHER, alpha=0.5, tau=1.0)
    # cross-entropy of the distillation head against the teacher's argmax (1 and 2)
    ce = -(_log_softmax([2.0, 0.5, -1.0])[1] + _log_softmax([0.0, 1.0, 3.0])[2]) / 2
    assert term.item() == pytest.approx(ce, rel=1e-6)
    assert loss.item() == pytest.approx((0.7 + ce) / 2, rel=1e-6)  # DeiT: the plain average


def test_soft_distillation_loss_equals_hand_computed():
    base, tau, alpha = torch.tensor(0.7), 2.0, 0.3
    loss, term = distillation_loss("soft", base, LOGITS, TEACHER, alpha=alpha, tau=tau)
    kl = 0.0
    for s_row, t_row in zip(LOGITS.tolist(), TEACHER.tolist(), strict=True):
        log_s = _log_softmax([v / tau for v in s_row])
        log_t = _log_softmax([v / tau for v in t_row])
        kl += sum(math.exp(lt) * (lt - ls) for ls, lt in zip(log_s, log_t, strict=True))
    expected = kl * tau * tau / LOGITS.numel()  # DeiT's losses.py: sum / number of logits
    assert term.item() == pytest.approx(expected, rel=1e-5)
    assert loss.item() == pytest.approx((1 - alpha) * 0.7 + alpha * expected, rel=1e-5)


def _tiny(name: str, num_classes: int = 3):
    args = {"patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}
    return create_model(name, img_size=32, num_classes=num_classes, **args)


def test_plain_vit_weights_load_with_only_the_distillation_parts_new():
    torch.manual_seed(0)
    plain, distilled = _tiny("vit_tiny_patch16_224"), _tiny("deit_tiny_distilled_patch16_224")
    lines: list[str] = []
    summary = load_state_into(distilled, plain.state_dict(), "plain.safetensors", lines.append)
    # both heads start fresh (a fine-tune never starts from the source's classifier)
    new = ["dist_token", "head.bias", "head.weight", "head_dist.bias", "head_dist.weight"]
    assert sorted(summary["missing_keys"]) == new
    assert summary["unexpected"] == 0 and sorted(summary["dropped_head"]) == new[1:3]
    report = "\n".join(lines)
    assert "init: missing keys (5): dist_token, head.weight, head.bias, head_dist.weight" in report
    assert "the source has no distillation token" in report
    assert "distillation token" in summary["resampled"][0]
    got, src = distilled.state_dict(), plain.state_dict()
    for key, value in src.items():
        if key != "pos_embed" and not key.startswith("head."):
            assert torch.equal(got[key], value), key
    # class position, a copy of it for the distillation token, then the unchanged 4x4 grid
    assert torch.equal(got["pos_embed"][:, 0], src["pos_embed"][:, 0])
    assert torch.equal(got["pos_embed"][:, 1], src["pos_embed"][:, 0])
    assert torch.equal(got["pos_embed"][:, 2:], src["pos_embed"][:, 1:])


def run(*args: str):
    res = CliRunner().invoke(finetune, [*FAST, *args])  # later options win
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res


@pytest.fixture(scope="module")
def folder_and_teacher(tmp_path_factory):
    """3 image classes and a tiny CNN (timm's test_resnet) fine-tuned on them as the teacher."""
    root = tmp_path_factory.mktemp("distill")
    make_image_folder(root / "imgs", per_class=6)
    data = ["--dataset", "folder", "--data-root", str(root / "imgs"), "--val-per-class", "2"]
    teacher = root / "teacher"
    res = run(*data, "--init", "scratch", "--model", "test_resnet", *CALM, "--epochs", "2",
              "--out", str(teacher))  # fmt: skip
    assert res.exit_code == 0, res.output
    return data, teacher


def test_distilled_deit_learns_from_a_cnn_teacher_and_resumes_exactly(
    tmp_path, folder_and_teacher, monkeypatch
):
    data, teacher = folder_and_teacher
    args = [*data, "--init", "scratch", *STUDENT, *CALM, "--teacher", str(teacher),
            "--distillation", "hard", "--epochs", "4", "--lr", "0.05"]  # fmt: skip
    res = run(*args, "--out", str(tmp_path / "a"))
    assert res.exit_code == 0, res.output
    assert "distillation: hard (alpha=0.5, tau=1.0) from teacher test_resnet" in res.output
    steps = read_metrics(tmp_path / "a", "train")
    assert {"loss_cls", "loss_distill"} <= set(steps[0])
    for s in steps:  # alpha 0.5: the logged loss is the average of the two terms
        assert s["loss"] == pytest.approx((s["loss_cls"] + s["loss_distill"]) / 2, rel=1e-5)
    epochs = read_metrics(tmp_path / "a", "epoch")
    assert epochs[-1]["loss"] < 0.8 * epochs[0]["loss"]

    # the teacher's identity and its own top-1 are in the run's config and results.json
    cfg = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())
    t_results = json.loads((teacher / "results.json").read_text())
    info = cfg["teacher_info"]
    assert info["model"] == "test_resnet" and info["num_classes"] == 3
    assert info["top1"] == t_results["last"]["top1"] and info["top1_dataset"] == "folder"
    assert info["sha256"].startswith("sha256:") and len(info["sha256"]) == 71
    assert json.loads((tmp_path / "a" / "results.json").read_text())["teacher"] == info

    # interrupted after epoch 2's results but before its checkpoint, then resumed
    original = FinetuneTask.on_epoch_logged

    def crash_in_epoch_two(self, epoch, metrics, out_dir):
        original(self, epoch, metrics, out_dir)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(FinetuneTask, "on_epoch_logged", crash_in_epoch_two)
    assert run(*args, "--out", str(tmp_path / "b")).exit_code != 0
    monkeypatch.setattr(FinetuneTask, "on_epoch_logged", original)
    res = run(*args, "--out", str(tmp_path / "b"), "--resume", "auto")
    assert res.exit_code == 0 and "resumed from" in res.output, res.output
    resumed = read_metrics(tmp_path / "b", "train")
    assert [s["step"] for s in resumed] == [s["step"] for s in steps]
    for x, y in zip(steps, resumed, strict=True):
        for k in ("loss", "loss_cls", "loss_distill"):
            assert x[k] == pytest.approx(y[k], rel=1e-6, abs=1e-7), (x["step"], k)
    wa, wb = (load_file(str(tmp_path / r / "model.safetensors")) for r in "ab")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

    # evaluation: the distilled model averages its class and distillation heads
    model = _tiny("deit_tiny_distilled_patch16_224")
    model.load_state_dict(wa)
    model.set_distilled_training(True)
    x = torch.randn(2, 3, 32, 32)
    model.train()
    assert isinstance(model(x), tuple)  # training returns both heads
    model.eval()
    with torch.no_grad():
        tokens = model.forward_features(x)
        both = (model.head(tokens[:, 0]) + model.head_dist(tokens[:, 1])) / 2
        assert torch.allclose(model(x), both, atol=1e-6)


def test_distillation_needs_a_distilled_model(tmp_path, folder_and_teacher):
    data, teacher = folder_and_teacher
    res = run(*data, "--init", "scratch", "--model", "vit_tiny_patch16_224", *ARCH,
              "--teacher", str(teacher), "--distillation", "hard", "--out", str(tmp_path / "r"))  # fmt: skip
    assert_one_line_error(res, "has no", "distillation token", "deit_tiny_distilled_patch16_224")


def test_teacher_with_another_class_count_is_one_line(tmp_path, folder_and_teacher):
    data, teacher = folder_and_teacher
    make_image_folder(tmp_path / "five", classes=("a", "b", "c", "d", "e"), per_class=3)
    res = run("--dataset", "folder", "--data-root", str(tmp_path / "five"), "--val-per-class", "1",
              "--init", "scratch", *STUDENT, "--teacher", str(teacher), "--distillation", "soft",
              "--out", str(tmp_path / "r"))  # fmt: skip
    assert_one_line_error(res, "predicts 3 classes, the data has 5", "same dataset")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--distillation", "hard"], "needs a teacher"),
        (["--teacher", "TEACHER"], "--distillation is none"),
        (["--teacher", "nowhere", "--distillation", "hard"], "--teacher nowhere does not exist"),
    ],
)
def test_inconsistent_distillation_options_are_one_line(
    tmp_path, folder_and_teacher, extra, message
):
    data, teacher = folder_and_teacher
    extra = [str(teacher) if e == "TEACHER" else e for e in extra]
    res = run(*data, "--init", "scratch", *STUDENT, *extra, "--out", str(tmp_path / "r"))
    assert_one_line_error(res, message)


def test_weights_file_without_its_json_is_one_line(tmp_path, folder_and_teacher):
    data, teacher = folder_and_teacher
    lone = tmp_path / "lone.safetensors"
    save_file(load_file(str(teacher / "model.safetensors")), str(lone))
    res = run(*data, "--init", "scratch", *STUDENT, "--teacher", str(lone),
              "--distillation", "hard", "--out", str(tmp_path / "r"))  # fmt: skip
    assert_one_line_error(res, "lone.json is missing")
