"""`fractaldb finetune` end to end on the engine: every downstream fixture through the real
command, init from a tiny pre-training run, linear probe, results.json + report, resume, errors."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from fixtures_downstream import (
    accept_fixture_md5,
    make_cifar10,
    make_cifar100,
    make_flowers102,
    make_image_folder,
    make_pets,
)
from safetensors.torch import load_file, save_file

from finetune.cli import finetune, report
from finetune.task import FinetuneTask
from pretrain.cli import pretrain

ARCH = ["--model-arg", "patch_size=8", "--model-arg", "depth=2", "--model-arg", "embed_dim=32",
        "--model-arg", "num_heads=2"]  # fmt: skip
TINY = ["--model", "vit_tiny_patch16_224", *ARCH]
# a few optimizer steps on CPU; the recipe (deit-cifar-sgd) supplies everything else
FAST = ["--img-size", "32", "--batch-size", "4", "--epochs", "1", "--lr", "0.01", "--device",
        "cpu", "--workers", "0", "--amp", "none", "--log-every", "1", "--set", "warmup_epochs=0"]  # fmt: skip


def run(*args: str):
    res = CliRunner().invoke(finetune, [*FAST, *args])  # later options win
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res


def results(path) -> dict:
    return json.loads((path / "results.json").read_text())


@pytest.mark.parametrize(
    ("dataset", "builder", "sizes"),
    [
        ("cifar10", make_cifar10, (20, 6, 10)),
        ("cifar100", make_cifar100, (10, 5, 100)),
        ("pets", make_pets, (6, 3, 3)),
        ("flowers102", make_flowers102, (9, 6, 102)),
    ],
)
def test_each_fixture_trains_one_epoch_through_the_command(
    tmp_path, monkeypatch, dataset, builder, sizes
):
    md5s = builder(tmp_path)
    if md5s:
        accept_fixture_md5(monkeypatch, dataset, md5s)
    out = tmp_path / "run"
    res = run("--dataset", dataset, "--data-root", str(tmp_path), "--init", "scratch",
              "--out", str(out), *TINY)  # fmt: skip
    assert res.exit_code == 0, res.output
    n_train, n_test, n_classes = sizes
    assert f"data: {dataset} ({n_train} train" in res.output
    assert f"/ {n_test} test [test], {n_classes} classes)" in res.output
    assert "built vit_tiny_patch16_224: depth 2, width 32, image size 32 px" in res.output
    r = results(out)
    assert (r["dataset"], r["num_classes"], r["epochs"], r["epochs_done"]) == (
        dataset, n_classes, 1, 1
    )  # fmt: skip
    # evaluated on the whole test split, every epoch
    epoch = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()][-1]
    assert epoch["type"] == "epoch" and epoch["val_samples"] == n_test
    # results.json names the held-out split once: "test"
    assert r["history"][-1]["test_samples"] == n_test and "val_samples" not in r["history"][-1]
    assert r["best"]["selected_on"] == "test" and r["best"]["optimistic"] is True
    assert r["last"]["top1"] == pytest.approx(epoch["val_top1"])
    assert r["last"]["top5"] == pytest.approx(epoch[f"val_top{min(5, n_classes)}"])
    assert 0 <= r["best"]["top1"] <= r["best"]["top5"] <= 100
    assert r["dataset_sha256"].startswith("sha256:") and r["init"]["kind"] == "scratch"
    assert (out / "model.safetensors").is_file() and (out / "last.pt").is_file()
    if dataset == "cifar10":  # the report reads the real results.json
        res = CliRunner().invoke(report, [str(out)])
        assert res.exit_code == 0, res.output
        row = res.output.splitlines()[2]
        assert row.startswith(
            f"| scratch | cifar10 | vit_tiny_patch16_224 | 32 | deit-cifar-sgd | 1/1 | "
            f"{r['last']['top1']:.2f} | {r['best']['top1']:.2f} | {r['best']['top5']:.2f} |"
        )


@pytest.fixture(scope="module")
def pretrain_run(tmp_path_factory):
    """A tiny supervised pre-training run at 48 px (6x6 grid) on 5 synthetic classes."""
    out = tmp_path_factory.mktemp("pre") / "run"
    res = CliRunner().invoke(pretrain, ["supervised", "--recipe", "tiny-cpu", "--data", "synthetic:5",
        "--img-size", "48", "--samples-per-epoch", "32", "--epochs", "1", "--device", "cpu",
        *ARCH, "--set", "mean=[0.4,0.4,0.4]", "--out", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    return out


def test_finetune_from_pretraining_run_loads_its_weights(tmp_path, pretrain_run):
    make_image_folder(tmp_path / "imgs", per_class=4)
    out = tmp_path / "ft"
    # no --model: model, architecture and normalisation come from the run's config.yaml
    res = run("--dataset", "folder", "--data-root", str(tmp_path / "imgs"), "--val-per-class", "1",
              "--init", str(pretrain_run), "--out", str(out))  # fmt: skip
    assert res.exit_code == 0, res.output
    pre = load_file(str(pretrain_run / "model.safetensors"))
    assert f"init: loaded {len(pre) - 2}/{len(pre)} tensors" in res.output
    assert "init: pos_embed: resampled grid 6x6 -> 4x4" in res.output
    assert "init: dropped classifier with a different shape: head." in res.output
    init = results(out)["init"]
    assert init["pretrain_config"]["img_size"] == 48
    assert sorted(init["dropped_head"]) == ["head.bias", "head.weight"]
    assert init["manifest_hash"] == "synthetic-0"  # from the engine's metrics.jsonl
    assert results(out)["normalize"]["mean"] == [0.4] * 3
    final = load_file(str(out / "model.safetensors"))
    assert final["head.weight"].shape == (3, 32) and pre["head.weight"].shape == (5, 32)
    assert final["pos_embed"].shape == (1, 17, 32)
    # full fine-tuning moved the backbone (the probe below must not)
    assert not torch.equal(final["blocks.1.mlp.fc2.weight"], pre["blocks.1.mlp.fc2.weight"])


def test_gray_pretrained_run_fine_tunes_on_rgb_photos(tmp_path):
    import yaml

    from pretrain.engine.models import create_model

    arch = {"patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}
    gray = create_model("vit_tiny_patch16_224", img_size=32, num_classes=0, in_chans=1, **arch)
    run_dir = tmp_path / "gray_mae"  # what a gray MAE run (--model-arg in_chans=1) leaves
    run_dir.mkdir()
    pre = {k: v.contiguous() for k, v in gray.state_dict().items()}
    save_file(pre, str(run_dir / "model.safetensors"))
    config = {"task": "mae", "model": "vit_tiny_patch16_224", "img_size": 32,
              "model_args": {**arch, "in_chans": 1}, "mean": [0.5], "std": [0.5]}  # fmt: skip
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    make_image_folder(tmp_path / "imgs", per_class=4)  # RGB photos
    out = tmp_path / "ft"
    res = run("--dataset", "folder", "--data-root", str(tmp_path / "imgs"), "--val-per-class", "1",
              "--init", str(run_dir), "--out", str(out))  # fmt: skip
    assert res.exit_code == 0, res.output
    note = "patch_embed.proj.weight: adapted 1 -> 3 input channels with timm's adapt_input_conv"
    assert f"init: {note}" in res.output
    assert any(n.startswith(note) for n in results(out)["init"]["resampled"])
    assert results(out)["normalize"] == {"mean": [0.5] * 3, "std": [0.5] * 3}
    final = load_file(str(out / "model.safetensors"))
    assert final["patch_embed.proj.weight"].shape == (32, 3, 8, 8)
    assert f"init: loaded {len(pre)}/{len(pre) + 2} tensors" in res.output  # all but the head


def test_gray_supervised_run_fine_tunes_on_rgb_photos(tmp_path):
    """A real gray pre-training (in_chans=1, the DeiT recipe's default augmentation) whose
    weights then initialise an RGB fine-tune: kernels adapted, every backbone tensor loaded."""
    pre_run = tmp_path / "gray_sup"
    res = CliRunner().invoke(pretrain, ["supervised", "--data", "synthetic:2", *TINY,
        "--model-arg", "in_chans=1", "--img-size", "32", "--samples-per-epoch", "8", "--epochs",
        "1", "--batch-size", "4", "--device", "cpu", "--workers", "0", "--out", str(pre_run)])  # fmt: skip
    assert res.exit_code == 0, res.output
    pre = load_file(str(pre_run / "model.safetensors"))
    assert pre["patch_embed.proj.weight"].shape == (32, 1, 8, 8)
    make_image_folder(tmp_path / "imgs", per_class=4)  # RGB photos
    out = tmp_path / "ft"
    res = run("--dataset", "folder", "--data-root", str(tmp_path / "imgs"), "--val-per-class", "1",
              "--init", str(pre_run), "--out", str(out))  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "patch_embed.proj.weight: adapted 1 -> 3 input channels" in res.output
    final = load_file(str(out / "model.safetensors"))
    assert final["patch_embed.proj.weight"].shape == (32, 3, 8, 8)


def test_linear_probe_trains_only_the_head(tmp_path, pretrain_run):
    from timm.layers import resample_abs_pos_embed

    make_image_folder(tmp_path / "imgs", per_class=4)
    out = tmp_path / "probe"
    res = run("--dataset", "folder", "--data-root", str(tmp_path / "imgs"), "--val-split", "0.25",
              "--init", str(pretrain_run), "--out", str(out), "--linear-probe",
              "--epochs", "2", "--save-every", "1")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "linear probe (2 trainable tensors: the head)" in res.output
    pre = load_file(str(pretrain_run / "model.safetensors"))
    final = load_file(str(out / "model.safetensors"))
    after_one = torch.load(out / "checkpoint-0001.pt", weights_only=True)["model"]
    pos = resample_abs_pos_embed(pre["pos_embed"], new_size=[4, 4], num_prefix_tokens=1)
    for key, value in final.items():
        if key.startswith("head."):
            assert not torch.equal(value, after_one[key]), key  # the head keeps learning
        else:
            expected = pos if key == "pos_embed" else pre[key]
            assert torch.equal(value, expected) and torch.equal(after_one[key], expected), key
    assert results(out)["linear_probe"] is True and results(out)["epochs_done"] == 2


def test_resume_continues_results_and_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    make_image_folder(tmp_path / "imgs", per_class=4)
    args = ["--dataset", "folder", "--data-root", str(tmp_path / "imgs"), "--val-per-class", "1",
            "--init", "scratch", *TINY, "--epochs", "2"]  # fmt: skip
    assert run(*args, "--out", str(tmp_path / "a")).exit_code == 0

    original = FinetuneTask.on_epoch_logged

    def crash_in_epoch_two(self, epoch, metrics, out_dir):
        original(self, epoch, metrics, out_dir)
        if epoch == 1:
            raise KeyboardInterrupt  # after results.json, before the epoch's checkpoint

    monkeypatch.setattr(FinetuneTask, "on_epoch_logged", crash_in_epoch_two)
    assert run(*args, "--out", str(tmp_path / "b")).exit_code != 0
    assert results(tmp_path / "b")["epochs_done"] == 2  # written, but the checkpoint is epoch 1
    monkeypatch.setattr(FinetuneTask, "on_epoch_logged", original)
    res = run(*args, "--out", str(tmp_path / "b"), "--resume", "auto")
    assert res.exit_code == 0 and "resumed from" in res.output, res.output
    a, b = results(tmp_path / "a"), results(tmp_path / "b")
    assert [h["epoch"] for h in b["history"]] == [1, 2]
    assert a["history"] == b["history"] and a["best"] == b["best"]
    wa, wb = (load_file(str(tmp_path / r / "model.safetensors")) for r in "ab")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_print_config_resolves_recipe_options_and_init_run(tmp_path, pretrain_run):
    import yaml

    res = CliRunner().invoke(finetune, ["--dataset", "cifar10", "--data-root", str(tmp_path),
        "--init", str(pretrain_run), "--recipe", "mae-finetune", "--img-size", "64",
        "--model-arg", "depth=1", "--set", "std=[0.3,0.3,0.3]", "--out", str(tmp_path / "r"),
        "--linear-probe", "--print-config"])  # fmt: skip
    assert res.exit_code == 0, res.output
    cfg = yaml.safe_load(res.output)
    assert (cfg["task"], cfg["model"], cfg["img_size"], cfg["layer_decay"]) == (
        "finetune", "vit_tiny_patch16_224", 64, 0.65
    )  # fmt: skip
    # recipe < pre-training architecture < --model-arg
    assert cfg["model_args"] == {"global_pool": "avg", "patch_size": 8, "depth": 1,
                                 "embed_dim": 32, "num_heads": 2}  # fmt: skip
    assert cfg["mean"] == [0.4] * 3 and cfg["std"] == [0.3] * 3  # run's mean, explicit std
    assert cfg["linear_probe"] is True and cfg["drop_path"] == 0.0
    assert (cfg["dataset"], cfg["data"], cfg["init"]) == (
        "cifar10",
        str(tmp_path),
        str(pretrain_run),
    )


def test_incompatible_init_stops_with_one_line(tmp_path):
    make_image_folder(tmp_path / "imgs", per_class=4)  # 6 training images >= batch 4
    wide = {"patch_embed.proj.weight": torch.zeros(64, 3, 8, 8), "cls_token": torch.zeros(1, 1, 64)}
    save_file(wide, str(tmp_path / "wide.safetensors"))
    save_file({"fc.weight": torch.zeros(3, 3)}, str(tmp_path / "resnet.safetensors"))
    for name, message in (("wide", "does not fit the model"), ("resnet", "no tensor matches")):
        res = run("--dataset", "folder", "--data-root", str(tmp_path / "imgs"), "--val-split",
                  "0.5", "--init", str(tmp_path / f"{name}.safetensors"), "--out",
                  str(tmp_path / name), *TINY)  # fmt: skip
        assert res.exit_code == 2 and message in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1
        assert not (tmp_path / name / "results.json").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--dataset", "mnist"], "unknown dataset 'mnist'"),
        (["--dataset", "cifar10"], "does not exist; fix: pass --download"),
        (["--dataset", "cifar10", "--recipe", "nope"], "unknown recipe 'nope'"),
        (["--dataset", "cifar10", "--model-arg", "depth"], "expects KEY=VALUE"),
        (["--dataset", "cifar10", "--set", "mixupp=0"], "unknown configuration key 'mixupp'"),
        (["--dataset", "pets", "--val-per-class", "5"], "only apply to --dataset folder"),
        (["--dataset", "cifar10", "--init", "nothing/here"], "--init nothing/here does not exist"),
        (["--dataset", "cifar10", "--set", "init_weights=w.safetensors"], "classifier head"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, extra, message):
    args = [
        "--data-root",
        str(tmp_path / "absent"),
        "--init",
        "scratch",
        "--out",
        str(tmp_path / "r"),
    ]
    res = CliRunner().invoke(finetune, [*args, *TINY, *FAST, *extra])
    assert res.exit_code == 2, res.output
    assert len(res.output.strip().splitlines()) == 1 and message in res.output, res.output


def test_help_and_registration():
    from fractaldb.cli import main

    res = CliRunner().invoke(main, ["finetune", "--help"])
    assert res.exit_code == 0 and "Examples:" in res.output
    for option in ("--val-per-class", "--linear-probe", "--resume", "--amp", "--seed"):
        assert option in res.output
    assert "--on-the-fly" not in res.output and "--val-data" not in res.output


def test_init_run_supplies_image_size_and_warmup_warns(tmp_path, pretrain_run):
    make_image_folder(tmp_path / "imgs", per_class=4)
    out = tmp_path / "ft"
    no_size = [a for a in FAST if a not in ("--img-size", "32", "--set", "warmup_epochs=0")]
    # no --model, no --img-size: the 48 px run is fine-tuned at 48 px (no grid resampling);
    # the recipe's 10 warm-up epochs outlast the one-epoch run: one warning line
    res = CliRunner().invoke(finetune, [*no_size, "--dataset", "folder", "--data-root",
        str(tmp_path / "imgs"), "--val-per-class", "1", "--init", str(pretrain_run),
        "--out", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert results(out)["img_size"] == 48 and "resampled grid" not in res.output
    warnings = [ln for ln in res.output.splitlines() if ln.startswith("warning: warmup_epochs")]
    assert warnings == [
        "warning: warmup_epochs 10 is not shorter than the run's 1 epochs, so the lr never "
        "leaves its warm-up ramp; fix: --set warmup_epochs=0"
    ]
    assert load_file(str(out / "model.safetensors"))["pos_embed"].shape == (1, 37, 32)


def test_batch_larger_than_the_training_set_is_refused(tmp_path):
    make_image_folder(tmp_path / "imgs", per_class=4)
    res = run("--dataset", "folder", "--data-root", str(tmp_path / "imgs"), "--val-per-class",
              "1", "--init", "scratch", *TINY, "--batch-size", "768", "--out", str(tmp_path / "r"))  # fmt: skip
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert lines == [
        "Error: --batch-size 768 is larger than the 9 training samples of an epoch; fix: "
        "--batch-size 8 (or less), or more training data"
    ]
