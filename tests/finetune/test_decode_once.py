"""Small image folders are decoded once (finetune/datasets.py DecodedOnce), not every epoch."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures_downstream import make_image_folder

from finetune.datasets import build_datasets
from shards.badsamples import UndecodableSample


def test_small_folder_is_decoded_once_and_survives_its_files(tmp_path):
    root = make_image_folder(tmp_path / "photos", per_class=4)
    ds = build_datasets("folder", root, val_per_class=1)
    first = [np.asarray(ds.train[i][0]) for i in range(len(ds.train))]
    for f in root.rglob("*.png"):
        f.write_bytes(b"")  # were they read again, every image would now be unreadable
    again = [np.asarray(ds.train[i][0]) for i in range(len(ds.train))]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert np.asarray(ds.test[0][0]).shape == first[0].shape


def test_an_unreadable_photo_stays_unreadable_on_every_access(tmp_path):
    root = make_image_folder(tmp_path / "photos", per_class=3)
    (root / "cat" / "img_0.png").write_bytes(b"not an image")
    ds = build_datasets("folder", root, val_per_class=1)
    for _ in range(2):
        with pytest.raises(UndecodableSample, match="img_0.png"):
            ds.train[0]


def test_large_folders_decode_on_access(tmp_path, monkeypatch):
    import finetune.datasets as datasets

    monkeypatch.setattr(datasets, "DECODE_ONCE_MAX_IMAGES", 3)
    root = make_image_folder(tmp_path / "photos", per_class=4)
    ds = build_datasets("folder", root, val_per_class=1)
    (root / "cat" / "img_0.png").write_bytes(b"")
    with pytest.raises(UndecodableSample):
        ds.train[0]


def test_a_small_subset_of_a_large_folder_is_decoded_once(tmp_path, monkeypatch):
    import finetune.datasets as datasets

    monkeypatch.setattr(datasets, "DECODE_ONCE_MAX_IMAGES", 6)  # the folder holds 12
    root = make_image_folder(tmp_path / "photos", per_class=4)
    ds = build_datasets("folder", root, val_per_class=1, train_per_class=1)  # 3 + 3 used
    first = np.asarray(ds.train[0][0])
    for f in root.rglob("*.png"):
        f.write_bytes(b"")
    assert np.array_equal(np.asarray(ds.train[0][0]), first)
    assert np.asarray(ds.test[0][0]).shape == first.shape
