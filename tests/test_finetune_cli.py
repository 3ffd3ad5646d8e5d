"""`fractaldb finetune` on the downstream fixtures (plan only, --dry-run) and its bad-input errors."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from fixtures_downstream import (
    accept_fixture_md5,
    make_cifar10,
    make_cifar100,
    make_flowers102,
    make_image_folder,
    make_pets,
)
from safetensors.torch import save_file

from finetune.cli import finetune
from finetune.model import create_model

TINY_ARGS = ["--model", "vit_tiny_patch16_224", "--img-size", "32", "--model-arg", "patch_size=8",
             "--model-arg", "depth=2", "--model-arg", "embed_dim=32", "--model-arg", "num_heads=2"]  # fmt: skip


def run(args):
    return CliRunner().invoke(finetune, [*args, *TINY_ARGS, "--dry-run"])


@pytest.mark.parametrize(
    ("dataset", "builder", "expect"),
    [
        ("cifar10", make_cifar10, "cifar10 (20 train / 6 test, 10 classes)"),
        ("cifar100", make_cifar100, "cifar100 (10 train / 5 test, 100 classes)"),
        ("pets", make_pets, "pets (6 train / 3 test, 3 classes)"),
        ("flowers102", make_flowers102, "flowers102 (9 train / 6 test, 102 classes)"),
    ],
)
def test_each_fixture_through_the_command(tmp_path, monkeypatch, dataset, builder, expect):
    md5s = builder(tmp_path)
    if md5s:
        accept_fixture_md5(monkeypatch, dataset, md5s)
    res = run(
        [
            "--dataset",
            dataset,
            "--data-root",
            str(tmp_path),
            "--init",
            "scratch",
            "--out",
            str(tmp_path / "r"),
        ]
    )
    assert res.exit_code == 0, res.output
    assert f"finetune: {expect}, vit_tiny_patch16_224 at 32px" in res.output
    assert "init: scratch" in res.output


def test_folder_with_pretrained_weights_and_linear_probe(tmp_path):
    make_image_folder(tmp_path / "imgs", per_class=3)
    pre = create_model("vit_tiny_patch16_224", 10, img_size=64,
                       model_args={"patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2})  # fmt: skip
    save_file(
        {k: v.contiguous() for k, v in pre.state_dict().items()}, str(tmp_path / "w.safetensors")
    )
    res = run(["--dataset", "folder", "--data-root", str(tmp_path / "imgs"), "--val-split", "0.34",
               "--init", str(tmp_path / "w.safetensors"), "--out", str(tmp_path / "r"), "--linear-probe"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "init: pos_embed: resampled grid 8x8 -> 4x4" in res.output
    assert (
        "folder (6 train / 3 test, 3 classes)" in res.output and "2 trainable tensors" in res.output
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--dataset", "mnist"], "unknown dataset 'mnist'"),
        (["--dataset", "cifar10"], "does not exist; fix: pass --download"),
        (["--dataset", "cifar10", "--recipe", "nope"], "unknown recipe 'nope'"),
        (["--dataset", "cifar10", "--model-arg", "depth"], "is not KEY=VALUE"),
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
    res = CliRunner().invoke(finetune, [*args, *extra, *TINY_ARGS])
    assert res.exit_code == 2, res.output
    assert len(res.output.strip().splitlines()) == 1 and message in res.output


def test_incompatible_init_stops(tmp_path):
    make_image_folder(tmp_path / "imgs", per_class=2)
    save_file({"fc.weight": __import__("torch").zeros(3, 3)}, str(tmp_path / "resnet.safetensors"))
    res = run(["--dataset", "folder", "--data-root", str(tmp_path / "imgs"), "--val-split", "0.5",
               "--init", str(tmp_path / "resnet.safetensors"), "--out", str(tmp_path / "r")])  # fmt: skip
    assert res.exit_code == 2 and "no tensor matches the model" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_help_has_examples():
    res = CliRunner().invoke(finetune, ["--help"])
    assert res.exit_code == 0 and "Examples:" in res.output and "--linear-probe" in res.output


def test_registered_in_the_fractaldb_script(tmp_path):
    from fractaldb.cli import main

    res = CliRunner().invoke(main, ["report", str(tmp_path / "none")])
    assert res.exit_code == 2 and "does not exist" in res.output
    res = CliRunner().invoke(main, ["finetune", "--help"])
    assert res.exit_code == 0 and "--val-split" in res.output


def test_model_and_normalisation_come_from_the_pretraining_run(tmp_path):
    import yaml

    from finetune.prepare import FinetuneOptions, prepare

    tiny = {"patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2, "img_size": 48}
    pre = create_model("vit_tiny_patch16_224", 5, model_args=tiny)
    run = tmp_path / "pretrain_run"
    run.mkdir()
    save_file(
        {k: v.contiguous() for k, v in pre.state_dict().items()}, str(run / "model.safetensors")
    )
    config = {
        "model": "vit_tiny_patch16_224",
        "model_args": tiny,
        "mean": [0.2] * 3,
        "std": [0.3] * 3,
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    make_image_folder(tmp_path / "imgs", per_class=2)
    opts = FinetuneOptions(dataset="folder", data_root=str(tmp_path / "imgs"), init=str(run),
                           val_split=0.5, img_size=32, epochs=2, batch_size=4)  # fmt: skip
    setup = prepare(opts, echo=lambda s: None)
    assert setup.model_name == "vit_tiny_patch16_224" and setup.model.patch_embed.grid_size == (
        4,
        4,
    )
    assert setup.results["normalize"] == {"mean": [0.2] * 3, "std": [0.3] * 3}
    assert setup.results["init"]["loaded"] == len(setup.model.state_dict()) - 2
    assert setup.results["init"]["pretrain_config"]["model_args"]["depth"] == 2
    assert setup.lr == pytest.approx(0.01 * 4 / 512)
