"""Fine-tuning recipes are the engine's recipes: data with sources, layer decay from timm."""

from __future__ import annotations

import pytest
import torch
from timm.optim import create_optimizer_v2

from finetune.config import recipe_path
from finetune.model import freeze_for_linear_probe
from finetune.task import FinetuneTask
from fractaldb.core.errors import FractalDBError
from pretrain.engine.config import list_recipes, load_recipe, resolve_config
from pretrain.engine.loop import plan_batch
from pretrain.engine.models import create_model

TINY = {"patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}


def resolved(name: str, **overrides) -> dict:
    return resolve_config(FinetuneTask.defaults, recipe_path(name), overrides, "finetune")


def test_builtin_recipes_cite_sources_and_resolve_strictly():
    assert list_recipes("finetune") == [
        "adamw-cifar",
        "deit-cifar-sgd",
        "deit-distill",
        "finetune-cpu",
        "mae-finetune",
    ]
    for name in list_recipes("finetune"):
        r = load_recipe(name, "finetune")
        assert r["description"].strip() and r["source"].strip() and r["task"] == "finetune"
        resolved(name)  # every key is one the engine or the task knows


def test_deit_cifar_recipe_matches_reference():
    r = resolved("deit-cifar-sgd")
    assert (r["opt"], r["momentum"], r["weight_decay"]) == ("sgd", 0.9, 1e-4)
    assert (r["epochs"], r["batch_size"], r["img_size"]) == (1000, 768, 224)
    assert r["warmup_epochs"] == 10 and r["reprob"] == 0.0 and r["drop_path"] == 0.0
    assert r["hflip"] == 0.5
    assert plan_batch(r, 1).lr == pytest.approx(0.015)  # 0.01 x 768 / 512


def test_deit_distill_recipe_is_deits_hard_distillation_on_the_cifar_recipe():
    d, base = resolved("deit-distill"), resolved("deit-cifar-sgd")
    assert (d["distillation"], d["distillation_alpha"], d["distillation_tau"]) == ("hard", 0.5, 1.0)
    assert "_distilled_" in d["model"] and "Touvron" in d["source"] and "main.py" in d["source"]
    same = ("opt", "blr", "momentum", "weight_decay", "epochs", "batch_size", "warmup_epochs")
    assert all(d[k] == base[k] for k in same)


def test_adamw_and_mae_recipes():
    a = resolved("adamw-cifar")
    assert (a["opt"], a["blr"], a["weight_decay"]) == ("adamw", 7.5e-6, 0.05)
    assert (a["mixup"], a["cutmix"], a["drop_path"]) == (0.8, 1.0, 0.1)
    assert a["auto_augment"].startswith("rand-")
    m = resolved("mae-finetune")
    assert 0.65 <= m["layer_decay"] <= 0.75 and m["drop_path"] == 0.1
    assert plan_batch(m, 4).lr == pytest.approx(2e-3)  # 5e-4 x 1024 / 256, any rank count
    assert plan_batch(resolved("mae-finetune", lr=0.1), 1).lr == 0.1  # an absolute lr wins


def _engine_optimizer(model, cfg):
    # the same call the engine makes
    return create_optimizer_v2(
        model,
        opt=cfg["opt"],
        lr=1e-3,
        weight_decay=cfg["weight_decay"],
        momentum=cfg["momentum"],
        layer_decay=cfg["layer_decay"],
        betas=tuple(cfg["opt_betas"]) if cfg["opt_betas"] else None,
    )


def test_layer_decay_groups_from_timm():
    model = create_model("vit_tiny_patch16_224", img_size=32, num_classes=3, **TINY)
    opt = _engine_optimizer(model, resolved("mae-finetune"))
    scales = sorted({round(g["lr_scale"], 6) for g in opt.param_groups})
    # depth 2 -> layers: embeddings, block 0, block 1, head: scales 0.65^3 .. 1
    assert scales == [round(0.65**k, 6) for k in (3, 2, 1, 0)]
    assert type(opt).__name__ == "AdamW" and opt.param_groups[0]["betas"] == (0.9, 0.999)


def test_optimizer_only_sees_trainable_params_in_linear_probe():
    model = create_model("vit_tiny_patch16_224", img_size=32, num_classes=3, **TINY)
    freeze_for_linear_probe(model)
    cfg = resolved("deit-cifar-sgd")
    opt = _engine_optimizer(model, {**cfg, "opt_betas": None})
    params = [p for g in opt.param_groups for p in g["params"]]
    assert len(params) == 2 and all(p.shape[0] == 3 for p in params)
    assert all(isinstance(p, torch.nn.Parameter) for p in params)


def test_unknown_and_bad_recipes(tmp_path):
    with pytest.raises(FractalDBError, match="unknown recipe 'nope'.*deit-cifar-sgd"):
        recipe_path("nope")
    with pytest.raises(FractalDBError, match="not found"):
        recipe_path(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "r.yaml"
    bad.write_text("task: finetune\nepochz: 3\n")
    with pytest.raises(FractalDBError, match="unknown configuration key 'epochz'.*epochs"):
        resolve_config(FinetuneTask.defaults, recipe_path(str(bad)), {}, "finetune")
