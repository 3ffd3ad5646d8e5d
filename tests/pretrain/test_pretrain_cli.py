"""`fractaldb pretrain`: recipes, config resolution, end-to-end CLI run, one-line errors."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner
from helpers import assert_one_line_error

from fractaldb.cli import main
from pretrain.engine.config import config_notes, effective_color_jitter, list_recipes, load_recipe

# RandAugment as DeiT's main.py (--aa default) and the FractalDB-ViT / VisualAtom configs run it
# (REFERENCE.md sections 4 and 10): inc1 makes the colour ops' strength grow with magnitude
DEIT_RAND_AUGMENT = "rand-m9-mstd0.5-inc1"
TINY = ["--recipe", "tiny-cpu", "--device", "cpu", "--workers", "0"]


def invoke(*args: str):
    return CliRunner().invoke(main, ["pretrain", "supervised", *args])


def test_recipes_are_data_with_citations():
    assert {"deit-tiny-fractaldb", "tiny-cpu"} <= set(list_recipes())
    for name in list_recipes():
        r = load_recipe(name)
        assert r["description"] and r["source"], name
    r = load_recipe("deit-tiny-fractaldb")
    expected = {
        "model": "deit_tiny_patch16_224",
        "blr": 5e-4,
        "lr_base_size": 512,
        "opt": "adamw",
        "weight_decay": 0.05,
        "epochs": 300,
        "warmup_epochs": 5,
        "warmup_lr": 1e-6,
        "min_lr": 1e-5,
        "drop_path": 0.1,
        "hflip": 0.0,
        "color_jitter": 0.4,
        "auto_augment": DEIT_RAND_AUGMENT,
        "reprob": 0.25,
        "mixup": 0.8,
        "cutmix": 1.0,
        "mixup_switch_prob": 0.5,
        "smoothing": 0.1,
        "mean": [0.5] * 3,
        "std": [0.5] * 3,
    }
    assert {k: r[k] for k in expected} == expected


def test_deit_preset_and_supervised_default_use_deits_rand_augment(tmp_path):
    from pretrain.supervised import SupervisedTask

    assert load_recipe("deit-tiny-fractaldb")["auto_augment"] == DEIT_RAND_AUGMENT
    assert SupervisedTask.defaults["auto_augment"] == DEIT_RAND_AUGMENT
    # what a run without a recipe resolves to
    res = invoke("--model", "vit_tiny_patch16_224", "--out", str(tmp_path), "--print-config")
    assert res.exit_code == 0, res.output
    assert yaml.safe_load(res.output)["auto_augment"] == DEIT_RAND_AUGMENT


def test_print_config_applies_overrides_in_order(tmp_path):
    res = invoke(
        *TINY,
        "--out",
        str(tmp_path),
        "--epochs",
        "7",
        "--model-arg",
        "depth=3",
        "--set",
        "mixup=0.5",
        "--set",
        "scale=[0.5, 1.0]",
        "--print-config",
    )
    assert res.exit_code == 0, res.output
    cfg = yaml.safe_load(res.output)
    assert cfg["epochs"] == 7 and cfg["mixup"] == 0.5 and cfg["scale"] == [0.5, 1.0]
    assert cfg["model_args"] == {"patch_size": 8, "depth": 3, "embed_dim": 64, "num_heads": 2}
    # the printed config is itself a valid recipe
    (tmp_path / "again.yaml").write_text(res.output)
    res2 = invoke(
        "--recipe", str(tmp_path / "again.yaml"), "--out", str(tmp_path), "--print-config"
    )
    assert yaml.safe_load(res2.output) == cfg


# the DeiT recipe's augmentation: colour jitter 0.4 written, RandAugment on
RAND_AUGMENT = ["--set", "color_jitter=0.4", "--set", f"auto_augment={DEIT_RAND_AUGMENT}"]
JITTER_OFF = "off: RandAugment replaces it, as in timm and DeiT"


def test_cli_trains_and_writes_run_folder(tmp_path):
    run = tmp_path / "run"
    res = invoke(
        *TINY,
        *RAND_AUGMENT,
        "--data",
        "synthetic:4",
        "--samples-per-epoch",
        "64",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--out",
        str(run),
    )
    assert res.exit_code == 0, res.output
    assert "lr 0.001 (--lr)" in res.output and "label_smoothing=0.1" in res.output
    # config.yaml and the printed summary say what runs; config.yaml still loads as a recipe
    assert f"color_jitter: 0.4  # {JITTER_OFF}\n" in (run / "config.yaml").read_text()
    assert f"color_jitter=0.4 ({JITTER_OFF})" in res.output
    assert yaml.safe_load((run / "config.yaml").read_text())["color_jitter"] == 0.4
    # a short summary by default: the ~65 keys are in config.yaml (and with --verbose)
    head = res.output.split("epoch 1/1")[0].splitlines()
    assert len(head) <= 8 and "mixup_switch_prob" not in res.output, head
    assert f"all of it in {run / 'config.yaml'} (--verbose prints it)" in res.output
    assert "mixup_switch_prob: 0.5" in (run / "config.yaml").read_text()
    for f in ("config.yaml", "metrics.jsonl", "last.pt", "model.safetensors", "model.json"):
        assert (run / f).is_file(), f
    entries = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert entries[-1]["type"] == "epoch" and "val_top1" in entries[-1]
    # rerunning the finished run with --resume auto just re-exports
    res = invoke(
        *TINY,
        *RAND_AUGMENT,
        "--data",
        "synthetic:4",
        "--samples-per-epoch",
        "64",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--out",
        str(run),
        "--resume",
        "auto",
        "--verbose",
    )
    assert res.exit_code == 0 and "resumed from" in res.output, res.output
    assert f"resolved configuration (also in {run / 'config.yaml'}):" in res.output
    assert (run / "config.yaml").read_text().rstrip() in res.output


@pytest.mark.parametrize(
    ("color_jitter", "auto_augment", "runs"),
    [
        (0.4, DEIT_RAND_AUGMENT, 0.0),
        (0.4, "augmix-m5-w3", 0.0),
        (0.4, "3a", 0.4),  # DeiT III's 3-Augment keeps colour jitter
        (0.4, None, 0.4),
        (0.0, DEIT_RAND_AUGMENT, 0.0),
    ],
)
def test_effective_color_jitter_is_what_timm_builds(color_jitter, auto_augment, runs):
    from timm.data import create_transform
    from torchvision.transforms import ColorJitter

    cfg = {"color_jitter": color_jitter, "auto_augment": auto_augment}
    assert effective_color_jitter(cfg) == runs
    built = create_transform(
        32, is_training=True, color_jitter=color_jitter, auto_augment=auto_augment
    )
    jitter = [t for t in built.transforms if isinstance(t, ColorJitter)]
    assert bool(jitter and jitter[0].brightness) == bool(runs)
    assert ("color_jitter" in config_notes(cfg)) == bool(color_jitter and not runs)


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (
            ["--model", "vit_tiny_patch16_22", "--data", "synthetic:4"],
            ["unknown timm model", "vit_tiny_patch16_224"],
        ),
        (["--data", "/no/such/shards"], ["/no/such/shards", "no such file"]),
        ([], ["no training data"]),
        (
            [
                "--data",
                "synthetic:4",
                "--batch-size",
                "6",
                "--micro-batch",
                "3",
                "--set",
                "mixup=0.8",
            ],
            ["even per-rank batch"],
        ),
        (["--data", "synthetic:4", "--set", "mixupp=0.8"], ["unknown configuration key", "mixup"]),
        (["--data", "synthetic:4", "--set", "epochs=ten"], ["should be a number"]),
        (["--data", "synthetic:4", "--model-arg", "depth"], ["KEY=VALUE"]),
        (["--data", "synthetic:4", "--model-arg", "no_such_arg=1"], ["timm could not build"]),
        (["--data", "synthetic:4", "--resume", "/no/ckpt.pt"], ["no such checkpoint"]),
    ],
)
def test_bad_input_gives_one_line_error(tmp_path, args, needles):
    assert_one_line_error(invoke(*TINY, "--out", str(tmp_path / "r"), *args), *needles)


def test_unknown_recipe_suggests_close_names(tmp_path):
    res = invoke("--recipe", "deit-tiny-fractal", "--data", "synthetic", "--out", str(tmp_path))
    assert_one_line_error(res, "unknown recipe", "deit-tiny-fractaldb")


@pytest.fixture(scope="module")
def gray_render(tmp_path_factory):
    """A tiny gray render: 2 categories x 8 instances (train) and x 2 (held out), 16 px."""
    from fractaldb.search import search_categories
    from fractaldb.settings import RenderSettings
    from shards.presets import Layout
    from shards.writer import write_shards

    root = tmp_path_factory.mktemp("gray")
    cats = search_categories(2, sampler="sigma", seed=2)
    render = RenderSettings(image_size=16, points=300, mode="point", scheme="none", flips=False,
                            color="gray")  # fmt: skip
    write_shards(cats, render, Layout(instances_per_category=8, samples_per_shard=8),
                 root / "train", workers=1, progress=False)  # fmt: skip
    write_shards(cats, render.replace(seed=9), Layout(instances_per_category=2,
                 samples_per_shard=8), root / "val", workers=1, progress=False)  # fmt: skip
    return root


GRAY_MODEL = ["--model", "vit_tiny_patch16_224", "--img-size", "32", "--model-arg", "patch_size=8",
              "--model-arg", "depth=2", "--model-arg", "embed_dim=32", "--model-arg",
              "num_heads=2", "--model-arg", "in_chans=1"]  # fmt: skip


@pytest.mark.parametrize("augment", ["cpu", "device"])
@pytest.mark.parametrize("auto_augment", ["null", DEIT_RAND_AUGMENT])
def test_gray_pretraining_runs_on_every_augmentation_path(gray_render, tmp_path, augment,
                                                          auto_augment):  # fmt: skip
    """The DeiT recipe's defaults (jitter or RandAugment, erasing, mixup) into a 1-channel ViT."""
    out = tmp_path / "run"
    res = invoke("--data", str(gray_render / "train"), "--val-data", str(gray_render / "val"),
                 *GRAY_MODEL, "--device", "cpu", "--workers", "0", "--epochs", "1",
                 "--batch-size", "4", "--augment", augment, "--set", f"auto_augment={auto_augment}",
                 "--out", str(out))  # fmt: skip
    assert res.exit_code == 0, res.output
    from safetensors.torch import load_file

    assert load_file(str(out / "model.safetensors"))["patch_embed.proj.weight"].shape[1] == 1
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(m.get("val_samples") == 4 for m in metrics)
