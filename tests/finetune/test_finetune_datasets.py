"""Downstream fixtures read through the real torchvision loaders via finetune.datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fixtures_downstream import (
    accept_fixture_md5,
    make_cifar10,
    make_cifar100,
    make_flowers102,
    make_image_folder,
    make_pets,
)

from finetune.datasets import build_datasets, fingerprint, holdout_indices
from finetune.task import FinetuneTask
from fractaldb.core.errors import FractalDBError
from pretrain.engine.config import resolve_config


def test_cifar10_fixture_through_torchvision(tmp_path, monkeypatch):
    accept_fixture_md5(monkeypatch, "cifar10", make_cifar10(tmp_path, per_batch=4, n_test=6))
    data = build_datasets("cifar10", tmp_path)
    assert len(data.train) == 20 and len(data.test) == 6
    assert data.num_classes == 10 and data.classes[0] == "airplane"
    img, label = data.train[5]
    assert img.size == (32, 32) and label == 5
    # the channel-major row layout decodes to the colour the fixture encoded for the label
    assert np.asarray(img).reshape(-1, 3).mean(0) == pytest.approx(
        [5 * 53 % 256, 5 * 101 % 256, 5 * 197 % 256], abs=6
    )


def test_cifar100_fixture_uses_fine_labels(tmp_path, monkeypatch):
    accept_fixture_md5(monkeypatch, "cifar100", make_cifar100(tmp_path, n_train=10, n_test=5))
    data = build_datasets("cifar100", tmp_path)
    assert (len(data.train), len(data.test), data.num_classes) == (10, 5, 100)
    assert [data.train[i][1] for i in range(3)] == [0, 7, 14]


def test_cifar_without_md5_patch_is_reported_as_corrupted(tmp_path):
    make_cifar10(tmp_path)
    with pytest.raises(FractalDBError, match="not found or corrupted.*--download"):
        build_datasets("cifar10", tmp_path)


def test_pets_fixture_category_labels(tmp_path):
    make_pets(tmp_path, n_trainval=2, n_test=1)
    data = build_datasets("pets", tmp_path)
    assert (len(data.train), len(data.test)) == (6, 3)
    assert data.classes == ["Abyssinian", "American Bulldog", "Bengal"]
    assert sorted({data.test[i][1] for i in range(3)}) == [0, 1, 2]


def test_flowers_trains_on_train_plus_val(tmp_path, monkeypatch):
    accept_fixture_md5(monkeypatch, "flowers102", make_flowers102(tmp_path, num_classes=3))
    task = FinetuneTask()
    cfg = resolve_config(task.defaults, None, {"img_size": 32}, task.name)
    data = build_datasets(
        "flowers102",
        tmp_path,
        train_transform=task.train_transform(cfg),
        eval_transform=task.eval_transform(cfg),
    )
    assert (len(data.train), len(data.test), data.num_classes) == (9, 6, 102)
    assert data.splits == {"train": "train+val", "test": "test"}
    img, label = data.test[0]
    assert tuple(img.shape) == (3, 32, 32) and label == 0


def test_folder_val_split_is_deterministic_per_class(tmp_path):
    make_image_folder(tmp_path / "imgs", per_class=4)
    a = build_datasets("folder", tmp_path / "imgs", val_split=0.25)
    b = build_datasets("folder", tmp_path / "imgs", val_split=0.25)
    assert (len(a.train), len(a.test)) == (9, 3)
    assert a.test.indices == b.test.indices == [3, 7, 11]  # last image of each class
    assert a.classes == ["cat", "dog", "fox"]


def test_folder_test_root_and_mismatch(tmp_path):
    make_image_folder(tmp_path / "train", per_class=2)
    make_image_folder(tmp_path / "test", per_class=1)
    data = build_datasets("folder", tmp_path / "train", test_root=tmp_path / "test")
    assert (len(data.train), len(data.test)) == (6, 3)
    make_image_folder(tmp_path / "other", classes=("cat", "owl"), per_class=1)
    with pytest.raises(FractalDBError, match="classes differ"):
        build_datasets("folder", tmp_path / "train", test_root=tmp_path / "other")
    with pytest.raises(FractalDBError, match="exactly one of"):
        build_datasets("folder", tmp_path / "train")
    with pytest.raises(FractalDBError, match="exactly one of"):
        build_datasets("folder", tmp_path / "train", val_split=0.5, val_per_class=1)


def test_val_per_class_holds_out_the_last_files_of_each_class(tmp_path):
    # the layout of the shipped CIFAR-10 JPEG folder: train/<class>/NNNN.jpg
    root = make_image_folder(tmp_path / "train", per_class=5, pattern="{k:04d}.jpg")
    data = build_datasets("folder", root, val_per_class=2)
    assert (len(data.train), len(data.test)) == (9, 6)
    held = [data.test.dataset.samples[i][0] for i in data.test.indices]
    assert [str(Path(p).relative_to(root)) for p in held] == [
        f"{c}/{k:04d}.jpg" for c in ("cat", "dog", "fox") for k in (3, 4)
    ]
    assert data.splits["test"].endswith("last 2 per class")
    with pytest.raises(FractalDBError, match="leaves nothing to train on"):
        build_datasets("folder", root, val_per_class=5)


def test_train_per_class_keeps_the_first_training_files_of_each_class(tmp_path):
    root = make_image_folder(tmp_path / "train", per_class=6, pattern="{k:04d}.jpg")
    data = build_datasets("folder", root, val_per_class=2, train_per_class=3)
    assert (len(data.train), len(data.test)) == (9, 6)  # validation unchanged
    kept = [data.train.dataset.samples[i][0] for i in data.train.indices]
    assert [str(Path(p).relative_to(root)) for p in kept] == [
        f"{c}/{k:04d}.jpg" for c in ("cat", "dog", "fox") for k in (0, 1, 2)
    ]
    assert "first 3 per class" in data.splits["train"]
    # more than a class holds: all of it; a separate test folder is left whole
    assert len(build_datasets("folder", root, val_per_class=2, train_per_class=9).train) == 12
    other = make_image_folder(tmp_path / "test", per_class=2)
    sep = build_datasets("folder", root, test_root=other, train_per_class=1)
    assert (len(sep.train), len(sep.test)) == (3, 6)
    with pytest.raises(FractalDBError, match="--train-per-class 0"):
        build_datasets("folder", root, val_per_class=2, train_per_class=0)
    with pytest.raises(FractalDBError, match="only apply to --dataset folder"):
        build_datasets("cifar10", root, train_per_class=3)


def test_fingerprint_follows_samples_not_location(tmp_path):
    a = make_image_folder(tmp_path / "a", per_class=3)
    b = make_image_folder(tmp_path / "b", per_class=3)
    fa = fingerprint(build_datasets("folder", a, val_per_class=1))
    assert fa == fingerprint(build_datasets("folder", b, val_per_class=1))
    assert fa != fingerprint(build_datasets("folder", a, val_split=0.67))
    (a / "cat" / "img_0.png").rename(a / "cat" / "img_9.png")
    assert fa != fingerprint(build_datasets("folder", a, val_per_class=1))


def test_holdout_never_empties_a_class():
    train, held = holdout_indices([0, 0, 0, 1, 2, 2], 0.9)
    assert held == [1, 2, 5] and train == [0, 3, 4]  # class 1 (one image) keeps it


def test_bad_dataset_inputs(tmp_path):
    with pytest.raises(FractalDBError, match="unknown dataset 'mnist'"):
        build_datasets("mnist", tmp_path)
    with pytest.raises(FractalDBError, match=r"does not exist.*--download"):
        build_datasets("cifar10", tmp_path / "missing")
    with pytest.raises(FractalDBError, match="only apply to --dataset folder"):
        build_datasets("pets", tmp_path, val_split=0.1)
    make_image_folder(tmp_path / "one", classes=("cat",), per_class=2)
    with pytest.raises(FractalDBError, match="at least two"):
        build_datasets("folder", tmp_path / "one", val_split=0.5)


def test_download_flag_reaches_torchvision(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    calls = []

    def fake_download(self):  # stands in for the network: writes what the archive would hold
        calls.append(self.root)
        accept_fixture_md5(monkeypatch, "cifar10", make_cifar10(self.root))

    monkeypatch.setattr(CIFAR10, "download", fake_download)
    data = build_datasets("cifar10", tmp_path / "new", download=True)
    assert calls and calls[0] == str(tmp_path / "new") and len(data.test) == 6


@pytest.mark.parametrize("dataset", ["folder", "flowers102", "cifar10"])
def test_train_probe_is_a_fixed_training_subset_under_the_eval_transform(
    tmp_path, monkeypatch, dataset
):
    from finetune.datasets import train_probe

    if dataset == "folder":
        make_image_folder(tmp_path, per_class=4)
        data = build_datasets("folder", tmp_path, train_transform="train", val_per_class=1)
    else:
        builder = make_flowers102 if dataset == "flowers102" else make_cifar10
        accept_fixture_md5(monkeypatch, dataset, builder(tmp_path))
        data = build_datasets(dataset, tmp_path, train_transform="train")

    def eval_tf(img):
        return ("eval", img.size)

    n = len(data.train)
    probe = train_probe(data.train, eval_tf, samples=5)
    assert probe.indices == [i * n // 5 for i in range(5)]  # evenly spread, the same every time
    assert train_probe(data.train, eval_tf, samples=5).indices == probe.indices
    for image, label in (probe[k] for k in range(5)):
        assert image[0] == "eval" and 0 <= label < data.num_classes
    # the training set keeps its own transform (the string stands for the augmentation)
    base = data.train
    while hasattr(base, "dataset") or hasattr(base, "datasets"):
        base = base.dataset if hasattr(base, "dataset") else base.datasets[0]
    assert base.transform == "train"
    assert train_probe(data.train, eval_tf, samples=10**6).indices == list(range(n))
