"""Frozen-feature evaluation: k-NN and linear probe (finetune/probe.py) and `fractaldb probe`."""

from __future__ import annotations

import json

import torch
from click.testing import CliRunner
from fixtures_downstream import make_image_folder
from safetensors.torch import load_file

from finetune.cli import probe, report
from finetune.probe import extract_features, fit_linear_probe, knn_top1, linear_probe_top1


def clusters(n_per_class: int, num_classes: int, dim: int = 16, spread: float = 0.05, seed=0):
    """Points around well-separated random unit centres, one centre per class."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(num_classes, dim, generator=g), dim=1)
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    feats = centres[labels] + spread * torch.randn(len(labels), dim, generator=g)
    return feats, labels


def test_knn_and_linear_probe_are_perfect_on_separated_clusters():
    train, val = clusters(30, 5, seed=0), clusters(10, 5, seed=1)
    # the same centres (seeded alike) for both splits, new noise
    val = (clusters(30, 5, seed=0)[0][::3] + 0.01, clusters(30, 5, seed=0)[1][::3])
    assert knn_top1(*train, *val, num_classes=5) == 100.0
    assert linear_probe_top1(*train, *val, num_classes=5) == 100.0


def test_knn_and_linear_probe_are_near_chance_on_shuffled_labels():
    feats, labels = clusters(80, 5, seed=0)
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(3))]
    train, val = (feats[::2], shuffled[::2]), (feats[1::2], shuffled[1::2])
    # chance is 20 %; 200 validation points give a standard error of about 3 points
    assert abs(knn_top1(*train, *val, num_classes=5) - 20.0) < 12.0
    assert abs(linear_probe_top1(*train, *val, num_classes=5) - 20.0) < 12.0


def test_linear_probe_folds_the_standardisation_into_its_weights():
    feats, labels = clusters(20, 3, seed=0)
    feats = feats * 100 + 7  # far from standardised
    head = fit_linear_probe(feats, labels, 3)
    assert (head(feats).argmax(1) == labels).all()


def test_features_leave_the_backbone_unchanged_and_in_its_mode():
    import timm

    model = timm.create_model(
        "vit_tiny_patch16_224", img_size=16, patch_size=8, depth=1, embed_dim=32, num_heads=2,
        num_classes=3,
    )  # fmt: skip
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = [(torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])) for _ in range(2)]
    feats, labels = extract_features(model, batches, torch.device("cpu"))
    assert feats.shape == (8, 32) and labels.tolist() == [0, 1, 2, 0] * 2
    assert model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_probe_command_writes_both_figures_and_leaves_the_weights_unchanged(tmp_path):
    from finetune.cli import finetune

    root = make_image_folder(tmp_path / "photos", per_class=6)
    tiny = ["--model", "vit_tiny_patch16_224", "--img-size", "16", "--model-arg", "patch_size=8",
            "--model-arg", "depth=1", "--model-arg", "embed_dim=32", "--model-arg", "num_heads=2",
            "--device", "cpu", "--workers", "0"]  # fmt: skip
    data = ["--dataset", "folder", "--data-root", str(root), "--val-per-class", "2"]
    run = tmp_path / "run"
    res = CliRunner().invoke(
        finetune,
        [*data, *tiny, "--init", "scratch", "--recipe", "finetune-cpu", "--epochs", "1",
         "--batch-size", "4", "--out", str(run)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    weights = run / "model.safetensors"
    before = weights.read_bytes()
    out = tmp_path / "probe"
    res = CliRunner().invoke(probe, [*data, *tiny, "--init", str(run), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "k-NN top-1" in res.output
    got = json.loads((out / "probe.json").read_text())
    assert got["train_samples"] == 12 and got["test_samples"] == 6 and got["num_classes"] == 3
    assert 0.0 <= got["knn_top1"] <= 100.0 and 0.0 <= got["linear_top1"] <= 100.0
    assert got["init_summary"]["loaded"] > 0
    assert weights.read_bytes() == before
    assert load_file(str(weights))  # still a readable weights file
    # the report lists the probe beside the fine-tuning run it probed
    res = CliRunner().invoke(report, [str(out), str(run)])
    assert res.exit_code == 0, res.output
    assert "| scratch | folder | vit_tiny_patch16_224 | 16 | finetune-cpu | 1/1 |" in res.output
    assert f"| run | folder | vit_tiny_patch16_224 | 16 | {got['knn_top1']:.2f} | " in res.output
    assert "warning" not in res.output


def test_probe_leaves_an_unreadable_photo_out_and_counts_it(tmp_path):
    root = make_image_folder(tmp_path / "photos", per_class=5)
    # sorts last in its class: one of its 2 validation photos (cat: 4 train, 1 + 1 bad val)
    (root / "cat" / "img_9.png").write_bytes(b"")
    out = tmp_path / "probe"
    res = CliRunner().invoke(
        probe,
        ["--dataset", "folder", "--data-root", str(root), "--val-per-class", "2", "--init",
         "scratch", "--model", "vit_tiny_patch16_224", "--img-size", "16", "--model-arg",
         "patch_size=8", "--model-arg", "depth=1", "--model-arg", "embed_dim=32",
         "--model-arg", "num_heads=2", "--device", "cpu", "--workers", "0", "--out", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    got = json.loads((out / "probe.json").read_text())
    assert got["unreadable"] == 1 and got["test_samples"] == 5 and got["train_samples"] == 10
    assert "1 unreadable left out" in res.output
    # random weights: the architecture built is said, and kept with the figures
    assert "built vit_tiny_patch16_224: depth 1, width 32, image size 16 px, 0." in res.output
    arch = got["init_summary"]["architecture"]
    assert (arch["depth"], arch["width"], arch["img_size"]) == (1, 32, 16) and arch["params"] > 0
