"""Tiny downstream datasets written in the exact on-disk formats torchvision 0.29 reads.

CIFAR-10/100 and Flowers-102 are verified by torchvision against the md5 sums of the real
files (`_check_integrity`), which a fixture cannot match. Each builder therefore returns the
md5 sums of the files it wrote and `accept_fixture_md5` swaps them into the torchvision class
for the test (via pytest's monkeypatch, so it is undone afterwards). Everything else - file
names, pickle keys, annotation lines, .mat variables - goes through the real loader unchanged.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_FILES = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"]


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _pickle(path: Path, obj: dict) -> str:
    path.write_bytes(pickle.dumps(obj, protocol=2))
    return _md5(path)


def _pixels(rng: np.random.Generator, label: int, n: int = 1, size: int = 32) -> np.ndarray:
    """Noise images whose mean colour depends on the label (HWC uint8)."""
    base = np.array([(label * 53) % 256, (label * 101) % 256, (label * 197) % 256], np.int16)
    noise = rng.integers(-30, 30, size=(n, size, size, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _cifar_rows(rng: np.random.Generator, labels: list[int]) -> np.ndarray:
    """CIFAR rows: N x 3072 uint8, channel-major (R plane, G plane, B plane) per image."""
    imgs = np.concatenate([_pixels(rng, lab) for lab in labels])
    return imgs.transpose(0, 3, 1, 2).reshape(len(labels), 3072)


def make_cifar10(root: Path, per_batch: int = 4, n_test: int = 6, seed: int = 0) -> dict[str, str]:
    """Write root/cifar-10-batches-py (5 train batches, test batch, batches.meta); return md5s."""
    rng = np.random.default_rng(seed)
    base = Path(root) / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    md5s = {}
    for b, name in enumerate(CIFAR10_FILES + ["test_batch"]):
        n = n_test if name == "test_batch" else per_batch
        labels = [(b * per_batch + i) % 10 for i in range(n)]
        md5s[name] = _pickle(
            base / name,
            {
                "batch_label": f"batch {b}",
                "labels": labels,
                "data": _cifar_rows(rng, labels),
                "filenames": [f"img_{b}_{i}.png" for i in range(n)],
            },
        )
    names = ["airplane", "automobile", "bird", "cat", "deer"]
    names += ["dog", "frog", "horse", "ship", "truck"]
    md5s["batches.meta"] = _pickle(
        base / "batches.meta",
        {"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072},
    )
    return md5s


def make_cifar100(root: Path, n_train: int = 10, n_test: int = 5, seed: int = 0) -> dict[str, str]:
    """Write root/cifar-100-python (train, test, meta) with fine and coarse labels; return md5s."""
    rng = np.random.default_rng(seed)
    base = Path(root) / "cifar-100-python"
    base.mkdir(parents=True, exist_ok=True)
    md5s = {}
    for name, n in (("train", n_train), ("test", n_test)):
        fine = [(i * 7) % 100 for i in range(n)]
        md5s[name] = _pickle(
            base / name,
            {
                "filenames": [f"{name}_{i}.png" for i in range(n)],
                "batch_label": f"{name} batch",
                "fine_labels": fine,
                "coarse_labels": [f // 5 for f in fine],
                "data": _cifar_rows(rng, fine),
            },
        )
    md5s["meta"] = _pickle(
        base / "meta",
        {
            "fine_label_names": [f"fine_{i:02d}" for i in range(100)],
            "coarse_label_names": [f"coarse_{i:02d}" for i in range(20)],
        },
    )
    return md5s


# (image id prefix, species 1=cat 2=dog): real ids capitalise cat breeds, not dog breeds
PET_BREEDS = [("Abyssinian", 1), ("american_bulldog", 2), ("Bengal", 1)]


def make_pets(root: Path, n_trainval: int = 2, n_test: int = 1, seed: int = 0) -> None:
    """Write root/oxford-iiit-pet/{images/*.jpg, annotations/{trainval,test}.txt, trimaps/*.png}."""
    rng = np.random.default_rng(seed)
    base = Path(root) / "oxford-iiit-pet"
    images, anns = base / "images", base / "annotations"
    (anns / "trimaps").mkdir(parents=True, exist_ok=True)
    images.mkdir(parents=True, exist_ok=True)
    lines: dict[str, list[str]] = {"trainval": [], "test": []}
    breed_counter: dict[int, int] = {}
    for label, (breed, species) in enumerate(PET_BREEDS, start=1):
        breed_id = breed_counter[species] = breed_counter.get(species, 0) + 1
        for i in range(n_trainval + n_test):
            image_id = f"{breed}_{i + 1}"
            Image.fromarray(_pixels(rng, label, size=40)[0]).save(images / f"{image_id}.jpg")
            trimap = np.full((40, 40), 2, np.uint8)
            Image.fromarray(trimap).save(anns / "trimaps" / f"{image_id}.png")
            split = "trainval" if i < n_trainval else "test"
            lines[split].append(f"{image_id} {label} {species} {breed_id}")
    for split, rows in lines.items():
        (anns / f"{split}.txt").write_text("\n".join(rows) + "\n")


def make_flowers102(root: Path, num_classes: int = 3, seed: int = 0) -> dict[str, str]:
    """Write root/flowers-102/{jpg/image_XXXXX.jpg, imagelabels.mat, setid.mat}; return md5s.

    Per class: 2 train, 1 val, 2 test images (ids 1-based as in the real files).
    """
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    base = Path(root) / "flowers-102"
    (base / "jpg").mkdir(parents=True, exist_ok=True)
    labels, split_ids = [], {"trnid": [], "valid": [], "tstid": []}
    image_id = 0
    for c in range(num_classes):
        for split in ("trnid", "trnid", "valid", "tstid", "tstid"):
            image_id += 1
            labels.append(c + 1)
            split_ids[split].append(image_id)
            Image.fromarray(_pixels(rng, c, size=48)[0]).save(
                base / "jpg" / f"image_{image_id:05d}.jpg"
            )
    # the real .mat files hold 1 x N integer arrays (torchvision formats ids with :05d)
    savemat(base / "imagelabels.mat", {"labels": np.array([labels], dtype=np.uint8)})
    savemat(base / "setid.mat", {k: np.array([v], dtype=np.uint16) for k, v in split_ids.items()})
    return {
        "imagelabels.mat": _md5(base / "imagelabels.mat"),
        "setid.mat": _md5(base / "setid.mat"),
    }


def make_image_folder(
    root: Path,
    classes: tuple[str, ...] = ("cat", "dog", "fox"),
    per_class: int = 4,
    seed: int = 0,
    pattern: str = "img_{k}.png",
) -> Path:
    """Write root/CLASS/<pattern> (a torchvision ImageFolder) and return root.

    pattern="{k:04d}.jpg" gives the layout of the shipped CIFAR-10 JPEG folder.
    """
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        (Path(root) / name).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            Image.fromarray(_pixels(rng, c)[0]).save(Path(root) / name / pattern.format(k=k))
    return Path(root)


def accept_fixture_md5(monkeypatch, dataset: str, md5s: dict[str, str]) -> None:
    """Make torchvision's integrity check expect the fixture's md5 sums instead of the real ones."""
    from torchvision import datasets

    if dataset in ("cifar10", "cifar100"):
        cls = datasets.CIFAR10 if dataset == "cifar10" else datasets.CIFAR100
        for attr in ("train_list", "test_list"):
            monkeypatch.setattr(cls, attr, [[f, md5s[f]] for f, _ in getattr(cls, attr)])
        monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5s[cls.meta["filename"]]})
    elif dataset == "flowers102":
        cls = datasets.Flowers102
        patched = {k: (f, md5s.get(f, m)) for k, (f, m) in cls._file_dict.items()}
        monkeypatch.setattr(cls, "_file_dict", patched)
    else:
        raise ValueError(f"{dataset} has no md5 check")
