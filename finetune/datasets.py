"""Downstream datasets for transfer evaluation, built only through `torchvision.datasets`.

Splits used (train -> evaluated on):
  cifar10, cifar100  `train=True` (50,000)  -> `train=False` (10,000)
  pets               OxfordIIITPet `trainval` (3,680) -> `test` (3,669), 37 breed labels
  flowers102         Flowers102 `train` + `val` (2,040) -> `test` (6,149), the usual transfer split
  folder             ImageFolder(`--data-root`) -> ImageFolder(`--test-root`), or a hold-out of
                     the training folder: for each class, the last `--val-per-class N` images,
                     or the last round(F x n) with `--val-split F` (at least one, never all),
                     in sorted-path order.
The CIFAR files are Python pickles read by torchvision: use archives from the official site.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fractaldb.core.errors import FractalDBError

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
    val_per_class: int | None = None,
    train_per_class: int | None = None,
) -> DownstreamData:
    """Build the train and test datasets of `name` under `root` through torchvision."""
    if name not in DATASETS:
        raise FractalDBError(
            f"unknown dataset {name!r}; fix: use one of {', '.join(DATASETS)} "
            "(any other image classification set works as --dataset folder)"
        )
    folder_only = (test_root, val_split, val_per_class, train_per_class)
    if name != "folder" and folder_only != (None, None, None, None):
        raise FractalDBError(
            "--test-root/--val-split/--val-per-class/--train-per-class only apply to "
            "--dataset folder; "
            f"fix: drop them for {name}"
        )
    root = Path(root)
    check_data_root(name, root)
    if not download and not root.exists():
        raise FractalDBError(
            f"data root {root} does not exist; fix: pass --download to fetch {name} there, "
            "or point --data-root at the folder holding it"
        )
    if name == "folder":
        return _folder(
            root, train_transform, eval_transform, test_root, val_split, val_per_class,
            train_per_class,
        )  # fmt: skip
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


def holdout_indices(
    targets: list[int], fraction: float | None = None, per_class: int | None = None
) -> tuple[list[int], list[int]]:
    """Split sample indices per class: the last `per_class`, or the last round(fraction x n),
    of each class are held out (a fraction never empties a class)."""
    by_class: dict[int, list[int]] = {}
    for i, t in enumerate(targets):
        by_class.setdefault(t, []).append(i)
    train, held = [], []
    for label, idx in by_class.items():
        if per_class is not None:
            if per_class >= len(idx):
                raise FractalDBError(
                    f"--val-per-class {per_class} leaves nothing to train on in class {label} "
                    f"({len(idx)} images); fix: a smaller --val-per-class"
                )
            n_held = per_class
        elif len(idx) > 1:
            n_held = min(max(round(fraction * len(idx)), 1), len(idx) - 1)
        else:
            n_held = 0
        cut = len(idx) - n_held
        train.extend(idx[:cut])
        held.extend(idx[cut:])
    return sorted(train), sorted(held)


def check_data_root(name: str, root: str | os.PathLike) -> None:
    """Refuse, before the model is looked at, an image-folder root that is missing or holds no
    class folders (nothing to download there: the fix is the path)."""
    if name != "folder":
        return
    root = Path(root)
    if not root.exists():
        raise FractalDBError(
            f"data root {root} does not exist; fix: point --data-root at an image folder "
            "(ROOT/CLASS/IMAGE.jpg)"
        )
    if root.is_dir() and not any(p.is_dir() for p in root.iterdir()):
        raise FractalDBError(
            f"data root {root} holds no class folders; fix: point --data-root at an image "
            "folder (ROOT/CLASS/IMAGE.jpg)"
        )


def _image_folder(path: Path, transform: Callable | None, flag: str) -> Any:
    from torchvision.datasets import ImageFolder

    if not path.is_dir():
        raise FractalDBError(f"{flag} {path} is not a folder; fix: pass a folder of class folders")
    from torchvision.datasets.folder import default_loader

    from shards.badsamples import NamedImageLoader

    try:
        # an unreadable image is named, skipped and counted (shards/badsamples.py)
        return ImageFolder(str(path), transform=transform, loader=NamedImageLoader(default_loader))
    except (FileNotFoundError, RuntimeError) as err:
        raise FractalDBError(
            f"cannot read image folder {path} ({err}); fix: use the layout ROOT/CLASS/IMAGE.jpg"
        ) from err


# folders up to this many images are decoded once, up front, and kept in memory (uint8): a
# fine-tune of a few hundred photos over many epochs otherwise decodes every JPEG every epoch
DECODE_ONCE_MAX_IMAGES = 20_000
DECODE_ONCE_MAX_BYTES = 2 << 30


class DecodedOnce:
    """An image loader over a fixed list of files that decodes each file once (RGB uint8 kept
    in memory) and hands out PIL images from then on; an unreadable file raises the same error
    on every access, as the plain loader would. Loader workers inherit the decoded images."""

    def __init__(self, paths: list[str], load: Callable[[str], Any]) -> None:
        import numpy as np

        self.load = load
        self.images: dict[str, Any] = {}
        size = 0
        for path in paths:
            try:
                array = np.asarray(load(path))
            except (OSError, SyntaxError, ValueError) as exc:
                self.images[path] = exc
                continue
            size += array.nbytes
            if size > DECODE_ONCE_MAX_BYTES:  # too large to keep: decode on access instead
                self.images.clear()
                return
            self.images[path] = array

    def __call__(self, path: str) -> Any:
        from PIL import Image

        got = self.images.get(path)
        if got is None:
            return self.load(path)
        if isinstance(got, Exception):
            raise got
        return Image.fromarray(got)


def decode_once(*folders: Any, used: list[int] | None = None) -> DecodedOnce | None:
    """Give image folders of the same files one shared DecodedOnce loader when the images they
    use (`used`: sample indices, default all) are few enough to keep in memory; return it."""
    from torchvision.datasets.folder import default_loader

    from shards.badsamples import NamedImageLoader

    pick = range(len(folders[0].samples)) if used is None else used
    paths = sorted({f.samples[i][0] for f in folders for i in pick})
    if not paths or len(paths) > DECODE_ONCE_MAX_IMAGES:
        return None
    decoded = DecodedOnce(paths, default_loader)
    loader = NamedImageLoader(decoded)
    for f in folders:
        f.loader = loader
    return decoded


def check_classes_readable(folder: Any, used: list[int], decoded: DecodedOnce | None) -> None:
    """Refuse, in one line, a class none of whose training files (`used`) could be read: it
    would otherwise surface as a batch-size or bad-sample error that names another cause.
    Only known when the folder was decoded up front; otherwise unreadable files are counted
    while training."""
    if decoded is None or not decoded.images:
        return
    failed: dict[int, list[str]] = {}
    readable: set[int] = set()
    for i in used:
        path, label = folder.samples[i]
        if isinstance(decoded.images.get(path), Exception):
            failed.setdefault(label, []).append(path)
        else:
            readable.add(label)
    for label, paths in sorted(failed.items()):
        if label not in readable:
            exc = decoded.images[paths[0]]
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}"
            raise FractalDBError(
                f"no training file of class {folder.classes[label]!r} could be read: "
                f"{len(paths)} file(s) tried (e.g. {paths[0]}: {reason}); fix: replace them "
                "with real images (JPEG/PNG), or remove that class folder"
            )


def first_per_class(targets: list[int], indices: list[int], per_class: int) -> list[int]:
    """The first `per_class` of `indices` (sorted) in each class: a smaller training set."""
    if per_class < 1:
        raise FractalDBError(f"--train-per-class {per_class} < 1; fix: e.g. 100")
    taken: dict[int, int] = {}
    out = []
    for i in sorted(indices):
        if taken.get(targets[i], 0) < per_class:
            taken[targets[i]] = taken.get(targets[i], 0) + 1
            out.append(i)
    return out


def _folder(
    root: Path, train_tf, eval_tf, test_root, val_split, val_per_class, train_per_class=None
) -> DownstreamData:
    from torch.utils.data import Subset

    given = [x is not None for x in (test_root, val_split, val_per_class)]
    if sum(given) != 1:
        raise FractalDBError(
            "--dataset folder needs exactly one of --test-root PATH, --val-split FRACTION or "
            "--val-per-class N; fix: e.g. --val-split 0.1"
        )
    train = _image_folder(root, train_tf, "--data-root")
    if len(train.classes) < 2:
        raise FractalDBError(
            f"{root} holds {len(train.classes)} class folder(s); fix: one sub-folder per class, "
            "at least two"
        )
    if test_root is not None:
        test = _image_folder(Path(test_root), eval_tf, "--test-root")
        if test.classes != train.classes:
            missing = sorted(set(train.classes) ^ set(test.classes))[:5]
            raise FractalDBError(
                f"--test-root classes differ from --data-root classes (e.g. {missing}); "
                "fix: give both folders the same class sub-folders"
            )
        splits = {"train": str(root), "test": str(test_root)}
        if train_per_class is None:
            check_classes_readable(train, list(range(len(train))), decode_once(train))
            decode_once(test)
            return DownstreamData("folder", train, test, list(train.classes), splits)
        kept = first_per_class(train.targets, list(range(len(train))), train_per_class)
        check_classes_readable(train, kept, decode_once(train, used=kept))
        decode_once(test)
        splits["train"] += f": first {train_per_class} per class"
        return DownstreamData("folder", Subset(train, kept), test, list(train.classes), splits)
    if val_per_class is not None:
        if val_per_class < 1:
            raise FractalDBError(f"--val-per-class {val_per_class} < 1; fix: e.g. 500")
        held_desc = f"last {val_per_class} per class"
    else:
        if not 0.0 < val_split < 1.0:
            raise FractalDBError(f"--val-split {val_split} is not in (0, 1); fix: e.g. 0.1")
        held_desc = f"last {val_split:g} per class"
    # ImageFolder sorts samples by class then path, so the split is deterministic
    train_idx, test_idx = holdout_indices(train.targets, val_split, val_per_class)
    if not test_idx:
        raise FractalDBError(
            f"--val-split {val_split} holds out nothing: every class of {root} has one image; "
            "fix: add images or pass --test-root"
        )
    splits = {"train": f"{root} minus {held_desc}", "test": f"{root}: {held_desc}"}
    if train_per_class is not None:
        train_idx = first_per_class(train.targets, train_idx, train_per_class)
        splits["train"] += f", first {train_per_class} per class of the rest"
    test_full = _image_folder(root, eval_tf, "--data-root")
    decoded = decode_once(train, test_full, used=sorted(train_idx + test_idx))
    check_classes_readable(train, train_idx, decoded)
    return DownstreamData(
        "folder", Subset(train, train_idx), Subset(test_full, test_idx), list(train.classes), splits
    )


def with_transform(ds: Any, transform: Callable | None) -> Any:
    """A shallow copy of `ds` (a torchvision set, or a Subset/ConcatDataset of them) whose
    images go through `transform`; the original keeps its own."""
    import copy

    from torch.utils.data import ConcatDataset, Subset

    if isinstance(ds, Subset):
        return Subset(with_transform(ds.dataset, transform), ds.indices)
    if isinstance(ds, ConcatDataset):
        return ConcatDataset([with_transform(part, transform) for part in ds.datasets])
    twin = copy.copy(ds)
    twin.transform = transform
    if hasattr(twin, "transforms"):  # VisionDataset applies `transforms`, built from transform
        from torchvision.datasets.vision import StandardTransform

        twin.transforms = StandardTransform(transform, getattr(ds, "target_transform", None))
    return twin


def train_probe(train: Any, eval_transform: Callable | None, samples: int) -> Any:
    """A fixed subset of the training set (`samples` images evenly spaced over it, the same
    every epoch and run) under the evaluation transform: accuracy on it is the train accuracy
    that can be compared with the validation accuracy."""
    from torch.utils.data import Subset

    n = len(train)
    count = max(0, min(int(samples), n))
    indices = [i * n // count for i in range(count)] if count else []
    return Subset(with_transform(train, eval_transform), indices)


def _sample_ids(ds: Any) -> list[Any]:
    """Per-sample identity (file name and label, or label alone for in-memory arrays)."""
    from torch.utils.data import ConcatDataset, Subset

    if isinstance(ds, Subset):
        ids = _sample_ids(ds.dataset)
        return [ids[i] for i in ds.indices]
    if isinstance(ds, ConcatDataset):
        return [i for part in ds.datasets for i in _sample_ids(part)]
    if hasattr(ds, "samples"):  # ImageFolder: paths relative to its root
        return [[os.path.relpath(p, ds.root), t] for p, t in ds.samples]
    files = getattr(ds, "_image_files", None) or getattr(ds, "_images", None)  # Flowers, Pets
    labels = getattr(ds, "targets", None) or getattr(ds, "_labels", None)
    if files is not None and labels is not None:
        return [[Path(f).name, int(t)] for f, t in zip(files, labels, strict=True)]
    return [int(t) for t in labels] if labels is not None else [len(ds)]


def fingerprint(data: DownstreamData) -> str:
    """sha256 identifying the task's samples and labels: resume refuses other data with it.

    Array-backed sets (CIFAR) add a digest of their pixels; file-backed ones are named by path.
    """
    digest = hashlib.sha256()
    # no absolute paths: a moved data folder is still the same data
    digest.update(json.dumps({"name": data.name, "classes": data.classes}).encode())
    for split in (data.train, data.test):
        digest.update(json.dumps(_sample_ids(split)).encode())
        base = getattr(split, "dataset", split)
        pixels = getattr(base, "data", None)
        if hasattr(pixels, "tobytes"):
            digest.update(pixels.tobytes())
    return "sha256:" + digest.hexdigest()
