"""timm's RandAugment through every shipped recipe's training transform, on real photos.

Pillow 13 refuses to posterize to 0 bits, which timm's 'PosterizeIncreasing' asks for at the
top of RandAugment's magnitude range: about one image in a thousand. A few thousand real
CIFAR-10 photos (from ../shared/data beside the checkout, as in CI) go through each recipe.
Without that folder (a fresh clone) the tests are skipped with the reason; .ci/run sets
FRACTALDB_REQUIRE_SHARED=1, which makes them required.
"""

from __future__ import annotations

import io
import os
import random
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

PHOTOS_TAR = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10-train-jpg.tar.gz"
EVERY = 16  # 50,000 / 16 = 3,125 photos, all ten classes


@pytest.fixture(scope="module")
def photos() -> list[bytes]:
    """Every EVERY-th JPEG of the real CIFAR-10 training photos, read from the tar stream."""
    if not PHOTOS_TAR.is_file():
        missing = f"real photos not found at {PHOTOS_TAR} (../shared beside the checkout)"
        if os.environ.get("FRACTALDB_REQUIRE_SHARED") == "1":  # .ci/run: CI has ../shared
            pytest.fail(f"{missing}; FRACTALDB_REQUIRE_SHARED=1 makes these tests required")
        pytest.skip(f"{missing}; set FRACTALDB_REQUIRE_SHARED=1 to make them required")
    kept: list[bytes] = []
    with tarfile.open(PHOTOS_TAR, "r|gz") as tar:
        index = 0
        for member in tar:
            if member.isfile() and member.name.endswith(".jpg"):
                if index % EVERY == 0:
                    kept.append(tar.extractfile(member).read())
                index += 1
    assert len(kept) > 3000
    return kept


def shipped_recipes_with_augment() -> list[tuple[str, str]]:
    """(package, recipe) for every shipped supervised / fine-tuning recipe using RandAugment."""
    from pretrain.engine.config import list_recipes, load_recipe

    found = []
    for package in ("finetune", "pretrain"):
        for name in list_recipes(package):
            recipe = load_recipe(name, package)
            if recipe.get("task", "supervised") in ("supervised", "finetune") and recipe.get(
                "auto_augment"
            ):
                found.append((package, name))
    return found


def training_transform(package: str, name: str):
    """The recipe's training transform; at the photos' own 32 px (the ops and magnitudes are
    the recipe's, only the crop size differs), so the sweep takes seconds."""
    from importlib import resources

    from finetune.task import FinetuneTask
    from pretrain.engine.config import resolve_config
    from pretrain.supervised import SupervisedTask

    task = FinetuneTask() if package == "finetune" else SupervisedTask()
    path = str(resources.files(package) / "recipes" / f"{name}.yaml")
    cfg = resolve_config(task.defaults, path, {"img_size": 32}, task.name)
    return task.train_transform(cfg)


def test_every_augmenting_recipe_is_swept():
    names = {n for _, n in shipped_recipes_with_augment()}
    assert {"deit-cifar-sgd", "adamw-cifar", "mae-finetune", "deit-tiny-fractaldb"} <= names


@pytest.mark.parametrize(("package", "name"), shipped_recipes_with_augment())
def test_recipe_transform_survives_real_photos(photos, package, name, monkeypatch):
    import torch

    from pretrain.engine import augment_pil

    zero_bit_calls = []
    original = augment_pil.posterize_any_bits

    def counting(img, bits_to_keep, **kw):
        zero_bit_calls.append(bits_to_keep <= 0)
        return original(img, bits_to_keep, **kw)

    monkeypatch.setattr(augment_pil, "posterize_any_bits", counting)
    transform = training_transform(package, name)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    for data in photos:
        with Image.open(io.BytesIO(data)) as img:
            out = transform(img.convert("RGB"))
        assert out.shape == (3, 32, 32) and torch.isfinite(out).all()
    from pretrain.engine.config import load_recipe

    if "inc1" in load_recipe(name, package)["auto_augment"]:
        # the increasing policy reaches 0 bits at its top magnitude: the sweep hit that case
        assert any(zero_bit_calls), f"{name}: no 0-bit posterize in {len(photos)} photos"


def test_zero_bit_posterize_is_black_like_pillow_before_13():
    from pretrain.engine.augment_pil import posterize_any_bits

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    assert not np.asarray(posterize_any_bits(img, 0)).any()
    assert posterize_any_bits(img, 8) is img
    two = np.asarray(posterize_any_bits(img, 2))
    assert np.array_equal(two, np.asarray(img) & 0b11000000)
    gray = img.convert("L")
    assert not np.asarray(posterize_any_bits(gray, 0)).any()


def test_timm_top_magnitude_posterize_op_runs():
    """timm's own op at magnitude 10 asks for 0 bits; hardened, it returns a black image."""
    from timm.data.auto_augment import AugmentOp, RandAugment

    from pretrain.engine.augment_pil import robust_pil_augment

    op = AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=10)
    assert op.level_fn(10, op.hparams) == (0,)
    ra = robust_pil_augment(RandAugment([op], num_layers=1))
    img = Image.new("RGB", (8, 8), (200, 100, 50))
    assert not np.asarray(ra(img)).any()
