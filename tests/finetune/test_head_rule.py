"""A fine-tune always starts from a fresh classifier head, even when the pre-training run's class
count equals the downstream one (MAE's fine-tuning re-initialises the head after loading)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from fixtures_downstream import make_image_folder
from safetensors.torch import load_file, save_file

from finetune.cli import finetune
from finetune.task import FinetuneTask
from finetune.weights import load_init, load_state_into
from pretrain.cli import pretrain
from pretrain.engine.models import create_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: the cores are shared

ARCH = {"patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}
ARCH_ARGS = [a for k, v in ARCH.items() for a in ("--model-arg", f"{k}={v}")]


def tiny(name: str = "vit_tiny_patch16_224", num_classes: int = 3):
    return create_model(name, img_size=32, num_classes=num_classes, **ARCH)


def trained_like(model):
    """The model with every tensor moved off its initialisation (a stand-in for training)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    return model


def test_same_class_count_loads_everything_but_the_head(tmp_path):
    torch.manual_seed(1)
    pre = trained_like(tiny())
    save_file(
        {k: v.contiguous() for k, v in pre.state_dict().items()}, str(tmp_path / "w.safetensors")
    )
    torch.manual_seed(0)
    fresh = tiny()
    torch.manual_seed(0)
    model = tiny()
    lines: list[str] = []
    summary = load_init(model, str(tmp_path / "w.safetensors"), echo=lines.append)
    got, src = model.state_dict(), pre.state_dict()
    for key in src:
        if key.startswith("head."):
            assert torch.equal(got[key], fresh.state_dict()[key]), key
            assert not torch.equal(got[key], src[key]), key
        else:
            assert torch.equal(got[key], src[key]), key
    assert summary["head"] == "fresh"
    assert sorted(summary["dropped_head"]) == ["head.bias", "head.weight"]
    assert summary["loaded"] == len(src) - 2 and summary["missing"] == 2
    assert any(line.startswith("init: classifier head starts fresh") for line in lines), lines


def test_distilled_checkpoint_gives_both_heads_fresh():
    torch.manual_seed(1)
    pre = trained_like(tiny("deit_tiny_distilled_patch16_224"))
    torch.manual_seed(0)
    fresh = tiny("deit_tiny_distilled_patch16_224").state_dict()
    torch.manual_seed(0)
    model = tiny("deit_tiny_distilled_patch16_224")
    summary = load_state_into(model, pre.state_dict(), "distilled", echo=lambda line: None)
    heads = ["head.bias", "head.weight", "head_dist.bias", "head_dist.weight"]
    assert sorted(summary["dropped_head"]) == heads
    for key in heads:
        assert torch.equal(model.state_dict()[key], fresh[key]), key
    assert torch.equal(model.dist_token, pre.dist_token)


def test_finetune_with_matching_class_count_starts_from_a_fresh_head(tmp_path, monkeypatch):
    # a pre-training run on 3 classes fine-tuned on 3 classes, against a scratch run of the
    # same seed: both must start from the same (timm-initialised) head
    pre = tmp_path / "pre"
    res = CliRunner().invoke(pretrain, ["supervised", "--recipe", "tiny-cpu", "--data",
        "synthetic:3", "--samples-per-epoch", "32", "--epochs", "1", "--device", "cpu",
        "--model", "vit_tiny_patch16_224", *ARCH_ARGS, "--out", str(pre)])  # fmt: skip
    assert res.exit_code == 0, res.output
    starts: list[dict[str, torch.Tensor]] = []
    build = FinetuneTask.build_model

    def recording_build(self):
        model = build(self)
        starts.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return model

    monkeypatch.setattr(FinetuneTask, "build_model", recording_build)
    imgs = make_image_folder(tmp_path / "imgs", per_class=4)  # 3 classes
    common = ["--dataset", "folder", "--data-root", str(imgs), "--val-per-class", "1",
              "--img-size", "32", "--batch-size", "4", "--epochs", "1", "--device", "cpu",
              "--workers", "0", "--amp", "none", "--set", "warmup_epochs=0"]  # fmt: skip
    res = CliRunner().invoke(finetune, [*common, "--init", str(pre), "--out", str(tmp_path / "ft")])
    assert res.exit_code == 0, res.output
    log = res.output
    res = CliRunner().invoke(finetune, [*common, "--init", "scratch", "--model",
        "vit_tiny_patch16_224", *ARCH_ARGS, "--out", str(tmp_path / "scratch")])  # fmt: skip
    assert res.exit_code == 0, res.output
    (start, scratch), trained = starts, load_file(str(pre / "model.safetensors"))
    assert trained["head.weight"].shape == start["head.weight"].shape == (3, 32)
    assert not torch.equal(start["head.weight"], trained["head.weight"])
    assert torch.equal(start["head.weight"], scratch["head.weight"])  # timm's fresh init
    assert torch.equal(start["head.bias"], torch.zeros(3))
    assert torch.equal(start["blocks.1.mlp.fc2.weight"], trained["blocks.1.mlp.fc2.weight"])
    assert "init: classifier head starts fresh" in log
    init = json.loads((tmp_path / "ft" / "results.json").read_text())["init"]
    assert init["head"] == "fresh"
    assert sorted(init["dropped_head"]) == ["head.bias", "head.weight"]
