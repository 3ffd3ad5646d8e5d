"""Hugging Face image models (`--model hf:cvt-13`): a tiny CvT pre-trains on fractal shards and
fine-tunes from that run; RUN/hf loads with `from_pretrained` and gives the same logits; the
missing extra and MAE on `hf:` are one-line errors."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from click.testing import CliRunner
from fixtures_downstream import make_image_folder
from helpers import assert_one_line_error, read_metrics

from fractaldb.cli import main
from pretrain.engine.models import create_model, load_exported

transformers = pytest.importorskip("transformers", reason="the dev group installs transformers")

TINY_CVT = ["--model", "hf:cvt-13", "--model-arg", "depth=[1,2,3]", "--model-arg",
            "embed_dim=[16,32,48]", "--model-arg", "num_heads=[1,1,2]"]  # fmt: skip
ENGINE = ["--device", "cpu", "--workers", "0", "--amp", "none", "--img-size", "32",
          "--set", "warmup_epochs=0", "--log-every", "1"]  # fmt: skip
LIGHT = ["--set", "mixup=0", "--set", "cutmix=0", "--set", "smoothing=0", "--set", "reprob=0",
         "--set", "auto_augment=", "--set", "scale=[0.9,1.0]", "--set", "drop_path=0"]  # fmt: skip


def invoke(*args: str):
    res = CliRunner().invoke(main, list(args))
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res


@pytest.fixture(scope="module")
def fractal_shards(tmp_path_factory):
    """3 fractal categories at 32 px: 16 training and 4 held-out instances each."""
    from fractaldb.search import search_categories
    from fractaldb.settings import RenderSettings
    from shards.presets import Layout
    from shards.writer import write_shards

    root = tmp_path_factory.mktemp("fdb-hf")
    cats = search_categories(3, sampler="sigma", seed=2)
    render = RenderSettings(
        image_size=32, points=2000, mode="patch", scheme="jitter", jitter=0.05, flips=False, seed=1
    )
    write_shards(cats, render, Layout(instances_per_category=16, samples_per_shard=32),
                 root / "train", workers=1, progress=False)  # fmt: skip
    write_shards(cats, render.replace(seed=99), Layout(instances_per_category=4,
                 samples_per_shard=32), root / "val", workers=1, progress=False)  # fmt: skip
    return root


def _same_logits(folder, weights, num_classes: int) -> None:
    """RUN/hf (from_pretrained, offline) and RUN/model.safetensors give the same logits."""
    from transformers import CvtForImageClassification

    hf = CvtForImageClassification.from_pretrained(str(folder), local_files_only=True).eval()
    ours = load_exported(weights).eval()
    assert hf.config.num_labels == num_classes
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = ours(x)
        assert expected.shape == (3, num_classes)
        assert torch.allclose(hf(pixel_values=x).logits, expected, atol=1e-6)


def test_tiny_cvt_pretrains_on_shards_fine_tunes_and_exports_for_from_pretrained(
    fractal_shards, tmp_path
):
    pre = tmp_path / "pre"
    res = invoke("pretrain", "supervised", "--recipe", "tiny-cpu", *TINY_CVT, *ENGINE, *LIGHT,
                 "--data", str(fractal_shards / "train"), "--val-data", str(fractal_shards / "val"),
                 "--epochs", "3", "--batch-size", "12", "--lr", "2e-3", "--ema",
                 "--out", str(pre))  # fmt: skip
    assert res.exit_code == 0, res.output
    epochs = read_metrics(pre, "epoch")
    assert epochs[-1]["loss"] < epochs[0]["loss"]
    assert epochs[-1]["val_samples"] == 12 and "val_ema_top1" in epochs[-1]
    _same_logits(pre / "hf", pre / "model.safetensors", 3)
    _same_logits(pre / "hf-ema", pre / "model_ema.safetensors", 3)
    meta = json.loads((pre / "model.json").read_text())
    assert meta["architecture"] == "hf:cvt-13" and "from_pretrained('hf')" in meta["load_with"]

    # fine-tune from the run: the model and its args come from RUN/config.yaml
    make_image_folder(tmp_path / "imgs", classes=("a", "b", "c", "d"), per_class=4)
    ft = tmp_path / "ft"
    res = invoke("finetune", "--dataset", "folder", "--data-root", str(tmp_path / "imgs"),
                 "--val-per-class", "1", "--init", str(pre), *ENGINE, *LIGHT, "--epochs", "2",
                 "--batch-size", "4", "--lr", "1e-3", "--out", str(ft))  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "dropped classifier with a different shape: model.classifier." in res.output
    assert "init: missing keys (2): model.classifier.weight, model.classifier.bias" in res.output
    _same_logits(ft / "hf", ft / "model.safetensors", 4)
    pre_state = load_exported(pre / "model.safetensors").state_dict()
    ft_state = load_exported(ft / "model.safetensors").state_dict()
    stage2 = [k for k in pre_state if k.startswith("model.cvt.encoder.stages.2.") and "weight" in k]
    assert any(not torch.equal(ft_state[k], pre_state[k]) for k in stage2)  # not frozen
    assert json.loads((ft / "results.json").read_text())["model"] == "hf:cvt-13"


def test_cvt_presets_match_the_paper_sizes():
    # Wu et al. 2021, table 2: CvT-13 20M and CvT-21 32M parameters (ImageNet-1k head)
    for name, millions in (("hf:cvt-13", 20.0), ("hf:cvt-21", 31.6)):
        with torch.device("meta"):
            model = create_model(name, num_classes=1000)
        assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(millions, abs=0.1)


def test_hf_without_the_extra_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    res = invoke("pretrain", "supervised", "--recipe", "tiny-cpu", "--model", "hf:cvt-13",
                 *ENGINE, "--data", "synthetic:3", "--out", str(tmp_path / "r"))  # fmt: skip
    assert_one_line_error(res, "transformers", "pip install 'fractaldb[hf]'")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["pretrain", "mae", "--recipe", "mae-tiny-cpu", "--model", "hf:cvt-13"], ["MAE needs a timm ViT"]),
        (["pretrain", "supervised", "--recipe", "tiny-cpu", "--model", "hf:cvt-99"], ["hf:cvt-13, hf:cvt-21"]),
        (["pretrain", "supervised", "--recipe", "tiny-cpu", "--model", "hf:cvt-13",
          "--model-arg", "depth=[1,1,1]"], ["depth=[1, 1, 1]", "depth=[1,2,3]"]),
    ],
)  # fmt: skip
def test_bad_hf_input_is_one_line(tmp_path, args, needles):
    res = invoke(*args, *ENGINE, "--data", "synthetic:3", "--out", str(tmp_path / "r"))
    assert_one_line_error(res, *needles)
