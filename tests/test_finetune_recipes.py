"""Recipes are data with sources; layer-wise lr decay comes from timm's optimizer factory."""

from __future__ import annotations

import pytest

from finetune.model import create_model, freeze_for_linear_probe
from finetune.optim import build_optimizer
from finetune.recipe import list_recipes, load_recipe, scaled_lr
from fractaldb.errors import FractalDBError

TINY = {"patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}


def test_builtin_recipes_cite_sources():
    assert list_recipes() == ["adamw-cifar", "deit-cifar-sgd", "mae-finetune"]
    for name in list_recipes():
        r = load_recipe(name)
        assert r["description"].strip() and r["source"].strip()


def test_deit_cifar_recipe_matches_reference():
    r = load_recipe("deit-cifar-sgd")
    assert (r["opt"], r["momentum"], r["weight_decay"]) == ("sgd", 0.9, 1e-4)
    assert (r["epochs"], r["batch_size"], r["img_size"]) == (1000, 768, 224)
    assert r["warmup_epochs"] == 10 and r["task"] == "finetune"
    assert r["reprob"] == 0.0 and r["drop_path"] == 0.0
    assert scaled_lr(r, 768) == pytest.approx(0.015)  # 0.01 x 768 / 512


def test_adamw_and_mae_recipes():
    a = load_recipe("adamw-cifar")
    assert (a["opt"], a["blr"], a["weight_decay"]) == ("adamw", 7.5e-6, 0.05)
    assert (a["mixup"], a["cutmix"], a["drop_path"]) == (0.8, 1.0, 0.1)
    assert a["auto_augment"].startswith("rand-")
    m = load_recipe("mae-finetune")
    assert 0.65 <= m["layer_decay"] <= 0.75 and m["drop_path"] == 0.1
    assert scaled_lr(m, 1024) == pytest.approx(2e-3)  # 5e-4 x 1024 / 256
    assert scaled_lr({**m, "lr": 0.1}, 1024) == 0.1  # an absolute lr wins


def test_layer_decay_groups_from_timm():
    model = create_model("vit_tiny_patch16_224", 3, img_size=32, model_args=TINY)
    opt = build_optimizer(model, load_recipe("mae-finetune"), lr=1e-3)
    scales = sorted({round(g["lr_scale"], 6) for g in opt.param_groups})
    # depth 2 -> layers: embeddings, block 0, block 1, head: scales 0.65^3 .. 1
    assert scales == [round(0.65**k, 6) for k in (3, 2, 1, 0)]
    assert type(opt).__name__ == "AdamW" and opt.param_groups[0]["betas"] == (0.9, 0.999)


def test_optimizer_only_sees_trainable_params_in_linear_probe():
    model = create_model("vit_tiny_patch16_224", 3, img_size=32, model_args=TINY)
    freeze_for_linear_probe(model)
    opt = build_optimizer(model, load_recipe("deit-cifar-sgd"), lr=0.1)
    assert sum(len(g["params"]) for g in opt.param_groups) == 2


def test_unknown_and_bad_recipes(tmp_path):
    with pytest.raises(FractalDBError, match="unknown recipe"):
        load_recipe("nope")
    bad = tmp_path / "r.yaml"
    bad.write_text("epochs: 3\n")
    with pytest.raises(FractalDBError, match="lacks description, source, batch_size"):
        load_recipe(str(bad))
