"""Loading pre-trained weights into a fine-tuning model (tiny ViTs, CPU)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import save_file

from finetune.model import freeze_for_linear_probe
from finetune.weights import load_init
from fractaldb.core.errors import FractalDBError
from pretrain.engine.models import create_model

TINY = {"patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}
NAME = "vit_tiny_patch16_224"


def tiny(num_classes: int, img_size: int, **kw):
    return create_model(NAME, img_size=img_size, num_classes=num_classes, **{**TINY, **kw})


def save(model, path):
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_pretrain_run_at_other_size_loads_with_new_head_and_grid(tmp_path):
    torch.manual_seed(0)
    pre = tiny(num_classes=7, img_size=48)  # 6x6 grid, 7 fractal classes
    run = tmp_path / "run"
    run.mkdir()
    save(pre, run / "model.safetensors")
    (run / "config.yaml").write_text(yaml.safe_dump({"model": NAME}))
    # the engine records the data's manifest hash in the setup line of metrics.jsonl
    setups = [{"type": "setup", "manifest_sha256": h} for h in ("old", "abc123")]
    (run / "metrics.jsonl").write_text("".join(json.dumps(s) + "\n" for s in setups) + "{cut")
    model = tiny(num_classes=3, img_size=32)  # 4x4 grid, 3 downstream classes
    lines = []
    summary = load_init(model, str(run), echo=lines.append)
    assert summary["loaded"] == len(model.state_dict()) - 2  # all but head.weight/bias
    assert sorted(summary["dropped_head"]) == ["head.bias", "head.weight"]
    assert summary["manifest_hash"] == "abc123" and summary["pretrain_config"]["model"] == NAME
    assert model.pos_embed.shape == (1, 1 + 16, 32)
    assert torch.equal(model.pos_embed[:, :1], pre.pos_embed[:, :1])  # class token untouched
    assert not torch.equal(model.pos_embed[:, 1:5], pre.pos_embed[:, 1:5])
    assert torch.equal(model.blocks[1].mlp.fc2.weight, pre.blocks[1].mlp.fc2.weight)
    assert any("6x6 -> 4x4" in line for line in lines)
    assert any(line.startswith("init: missing keys (2): head.weight, head.bias") for line in lines)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 3)


def test_pt_file_with_model_key_and_patch_size_change(tmp_path):
    pre = tiny(num_classes=3, img_size=32, patch_size=16)  # 2x2 grid, 16 px kernels
    torch.save({"model": pre.state_dict(), "epoch": 3}, tmp_path / "ckpt.pth")
    model = tiny(num_classes=3, img_size=32)
    summary = load_init(model, str(tmp_path / "ckpt.pth"), echo=lambda s: None)
    assert summary["loaded"] == len(model.state_dict()) - 2  # all but the head
    assert model.patch_embed.proj.weight.shape[-2:] == (8, 8)
    assert len(summary["resampled"]) == 2
    # same shape, still fresh (tests/finetune/test_head_rule.py)
    assert not torch.equal(model.head.weight, pre.head.weight)


def test_gray_pretrained_weights_load_into_an_rgb_model(tmp_path):
    from timm.models import adapt_input_conv

    torch.manual_seed(0)
    gray = tiny(num_classes=3, img_size=32, in_chans=1).eval()
    save(gray, tmp_path / "gray.safetensors")
    model = tiny(num_classes=3, img_size=32).eval()  # RGB
    lines = []
    summary = load_init(model, str(tmp_path / "gray.safetensors"), echo=lines.append)
    assert summary["loaded"] == len(model.state_dict()) - 2  # all but the (fresh) head
    kernels = gray.patch_embed.proj.weight
    assert torch.equal(model.patch_embed.proj.weight, adapt_input_conv(3, kernels, base_chans=1))
    # repeated and scaled by 1/3: a gray photo in RGB gives the gray model's answer
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        rgb_features = model.forward_features(x.expand(-1, 3, -1, -1))
        torch.testing.assert_close(rgb_features, gray.forward_features(x), rtol=1e-4, atol=1e-5)
    assert "init: patch_embed.proj.weight: adapted 1 -> 3 input channels with timm's " in "\n".join(
        lines
    )


def test_mae_encoder_only_and_full_checkpoints(tmp_path):
    enc = tiny(num_classes=0, img_size=32)  # encoder-only: no head at all
    save(enc, tmp_path / "enc.safetensors")
    model = tiny(num_classes=5, img_size=32)
    s = load_init(model, str(tmp_path / "enc.safetensors"), echo=lambda s: None)
    assert s["loaded"] == len(model.state_dict()) - 2 and s["unexpected"] == 0
    assert torch.equal(model.blocks[0].attn.qkv.weight, enc.blocks[0].attn.qkv.weight)

    full = {f"encoder.{k}": v for k, v in enc.state_dict().items()}
    full["decoder_embed.weight"] = torch.zeros(16, 32)
    full["mask_token"] = torch.zeros(1, 1, 16)
    save_file(full, str(tmp_path / "mae_full.safetensors"))
    model = tiny(num_classes=5, img_size=32)
    lines = []
    s = load_init(model, str(tmp_path / "mae_full.safetensors"), echo=lines.append)
    assert s["key_prefix"] == "encoder." and s["unexpected"] == 2
    assert s["loaded"] == len(model.state_dict()) - 2
    assert torch.equal(model.pos_embed, enc.pos_embed)


def test_incompatible_weights_stop_with_an_error(tmp_path):
    wide = tiny(num_classes=3, img_size=32, embed_dim=64, num_heads=2)
    save(wide, tmp_path / "wide.safetensors")
    with pytest.raises(FractalDBError, match="does not fit the model"):
        load_init(tiny(3, 32), str(tmp_path / "wide.safetensors"), echo=lambda s: None)
    save_file({"conv1.weight": torch.zeros(4, 3, 3, 3)}, str(tmp_path / "resnet.safetensors"))
    with pytest.raises(FractalDBError, match="no tensor matches"):
        load_init(tiny(3, 32), str(tmp_path / "resnet.safetensors"), echo=lambda s: None)


def test_bad_sources(tmp_path):
    with pytest.raises(FractalDBError, match="does not exist"):
        load_init(tiny(3, 32), str(tmp_path / "nope"))
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(FractalDBError, match="no model.safetensors"):
        load_init(tiny(3, 32), str(tmp_path / "empty_run"))
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(FractalDBError, match="unknown weights format"):
        load_init(tiny(3, 32), str(tmp_path / "w.npz"))
    torch.save({"opt": "not tensors"}, tmp_path / "bad.pt")
    with pytest.raises(FractalDBError, match="no state dict"):
        load_init(tiny(3, 32), str(tmp_path / "bad.pt"))


def test_scratch_loads_nothing_on_purpose():
    s = load_init(tiny(3, 32), "scratch", echo=lambda s: None)
    assert s["kind"] == "scratch" and s["loaded"] == 0


def test_linear_probe_freezes_all_but_head():
    model = tiny(3, 32)
    assert freeze_for_linear_probe(model) == ["head.weight", "head.bias"]
    assert sum(p.requires_grad for p in model.parameters()) == 2


def test_unknown_model_is_one_error():
    with pytest.raises(FractalDBError, match="unknown timm model"):
        create_model("no_such_model", num_classes=3)
