"""Downstream datasets for transfer evaluation, built only through `torchvision.datasets`.

Splits used (train -> evaluated on):
  cifar10, cifar100  `train=True` (50,000)  -> `train=False` (10,000)
  pets               OxfordIIITPet `trainval` (3,680) -> `test` (3,669), 37 breed labels
  flowers102         Flowers102 `train` + `val` (2,040) -> `test` (6,149), the usual transfer split
  folder             ImageFolder(`--data-root`) -> ImageFolder(`--test-root`), or, with
                     `--val-split F`, a hold-out of the training folder: for each class, the
                     last round(F x n) images in sorted-path order (at least one, never all).
The CIFAR files are Python pickles read by torchvision: use archives from the official site.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fractaldb.errors import FractalDBError

DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "pets", "flowers102", "folder")

# where each torchvision class expects its files under --data-root (named in error messages)
_EXPECTED_FOLDER = {
    "cifar10": "cifar-10-batches-py",
    "cifar100": "cifar-100-python",
    "pets": "oxford-iiit-pet",
    "flowers102": "flowers-102",
}


@dataclass
class DownstreamData:
    """Train and test datasets of one downstream task, with its label space."""

    name: str
    train: Any
    test: Any
    classes: list[str]
    splits: dict[str, str] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """Number of classes of the task."""
        return len(self.classes)


def build_datasets(
    name: str,
    root: str | os.PathLike,
    *,
    train_transform: Callable | None = None,
    eval_transform: Callable | None = None,
    download: bool = False,
    test_root: str | os.PathLike | None = None,
    val_split: float | None = None,
) -> DownstreamData:
    """Build the train and test datasets of `name` under `root` through torchvision."""
    if name not in DATASETS:
        raise FractalDBError(
            f"unknown dataset {name!r}; fix: use one of {', '.join(DATASETS)} "
            "(any other image classification set works as --dataset folder)"
        )
    if name != "folder" and (test_root is not None or val_split is not None):
        raise FractalDBError(
            f"--test-root/--val-split only apply to --dataset folder; fix: drop them for {name}"
        )
    root = Path(root)
    if not download and not root.exists():
        raise FractalDBError(
            f"data root {root} does not exist; fix: pass --download to fetch {name} there, "
            "or point --data-root at the folder holding it"
        )
    if name == "folder":
        return _folder(root, train_transform, eval_transform, test_root, val_split)
    try:
        return _BUILDERS[name](root, train_transform, eval_transform, download)
    except RuntimeError as err:  # torchvision's "Dataset not found or corrupted"
        raise FractalDBError(
            f"{name} not found or corrupted under {root / _EXPECTED_FOLDER[name]} ({err}); "
            "fix: pass --download, or point --data-root at the folder that contains "
            f"{_EXPECTED_FOLDER[name]}/"
        ) from err


def _cifar(cls_name: str) -> Callable[..., DownstreamData]:
    def build(root: Path, train_tf, eval_tf, download: bool) -> DownstreamData:
        from torchvision import datasets

        cls = getattr(datasets, cls_name)
        train = cls(str(root), train=True, transform=train_tf, download=download)
        test = cls(str(root), train=False, transform=eval_tf, download=download)
        return DownstreamData(
            cls_name.lower(), train, test, list(train.classes), {"train": "train", "test": "test"}
        )

    return build


def _pets(root: Path, train_tf, eval_tf, download: bool) -> DownstreamData:
    from torchvision.datasets import OxfordIIITPet

    kw = {"target_types": "category", "download": download}
    train = OxfordIIITPet(str(root), split="trainval", transform=train_tf, **kw)
    test = OxfordIIITPet(str(root), split="test", transform=eval_tf, **kw)
    # class names come from the ids present in a split, so take the longer list
    classes = max(train.classes, test.classes, key=len)
    return DownstreamData("pets", train, test, list(classes), {"train": "trainval", "test": "test"})


def _flowers(root: Path, train_tf, eval_tf, download: bool) -> DownstreamData:
    from torch.utils.data import ConcatDataset
    from torchvision.datasets import Flowers102

    parts = [
        Flowers102(str(root), split=s, transform=train_tf, download=download)
        for s in ("train", "val")
    ]
    test = Flowers102(str(root), split="test", transform=eval_tf, download=download)
    return DownstreamData(
        "flowers102",
        ConcatDataset(parts),
        test,
        list(Flowers102.classes),
        {"train": "train+val", "test": "test"},
    )


_BUILDERS: dict[str, Callable[..., DownstreamData]] = {
    "cifar10": _cifar("CIFAR10"),
    "cifar100": _cifar("CIFAR100"),
    "pets": _pets,
    "flowers102": _flowers,
}


def holdout_indices(targets: list[int], fraction: float) -> tuple[list[int], list[int]]:
    """Split sample indices per class: the last round(fraction x n) of each class are held out."""
    by_class: dict[int, list[int]] = {}
    for i, t in enumerate(targets):
        by_class.setdefault(t, []).append(i)
    train, held = [], []
    for idx in by_class.values():
        n_held = min(max(round(fraction * len(idx)), 1), len(idx) - 1) if len(idx) > 1 else 0
        cut = len(idx) - n_held
        train.extend(idx[:cut])
        held.extend(idx[cut:])
    return sorted(train), sorted(held)


def _image_folder(path: Path, transform: Callable | None, flag: str) -> Any:
    from torchvision.datasets import ImageFolder

    if not path.is_dir():
        raise FractalDBError(f"{flag} {path} is not a folder; fix: pass a folder of class folders")
    try:
        return ImageFolder(str(path), transform=transform)
    except (FileNotFoundError, RuntimeError) as err:
        raise FractalDBError(
            f"cannot read image folder {path} ({err}); fix: use the layout ROOT/CLASS/IMAGE.jpg"
        ) from err


def _folder(root: Path, train_tf, eval_tf, test_root, val_split) -> DownstreamData:
    from torch.utils.data import Subset

    if (test_root is None) == (val_split is None):
        raise FractalDBError(
            "--dataset folder needs exactly one of --test-root PATH or --val-split FRACTION; "
            "fix: e.g. --val-split 0.1"
        )
    train = _image_folder(root, train_tf, "--data-root")
    if test_root is not None:
        test = _image_folder(Path(test_root), eval_tf, "--test-root")
        if test.classes != train.classes:
            missing = sorted(set(train.classes) ^ set(test.classes))[:5]
            raise FractalDBError(
                f"--test-root classes differ from --data-root classes (e.g. {missing}); "
                "fix: give both folders the same class sub-folders"
            )
        splits = {"train": str(root), "test": str(test_root)}
    else:
        if not 0.0 < val_split < 1.0:
            raise FractalDBError(f"--val-split {val_split} is not in (0, 1); fix: e.g. 0.1")
        # ImageFolder sorts samples by class then path, so the split is deterministic
        train_idx, test_idx = holdout_indices(train.targets, val_split)
        if not test_idx:
            raise FractalDBError(
                f"--val-split {val_split} holds out nothing: every class of {root} has one image; "
                "fix: add images or pass --test-root"
            )
        test_full = _image_folder(root, eval_tf, "--data-root")
        train, test = Subset(train, train_idx), Subset(test_full, test_idx)
        classes = test_full.classes
        splits = {"train": f"{root} minus last {val_split:g} per class", "test": "held out"}
        return DownstreamData("folder", train, test, list(classes), splits)
    return DownstreamData("folder", train, test, list(train.classes), splits)
