"""Downstream sets: where their photos are, how they are split, and their extraction."""

from __future__ import annotations

import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.photos import find_image_folder, is_archive
from benchmarks.steps import StepFailed
from benchmarks.transfer.budgets import Budget, FineTune

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data"
ARCHIVES = {"cifar10": "cifar10-train-jpg.tar.gz", "flowers12": "flowers12-train-jpg.tar.gz"}


@dataclass
class Downstream:
    """A dataset to fine-tune on: its name, where its images are and how it is split."""

    name: str
    source: Path  # an image folder or a .tar/.tar.gz of one
    recipe: FineTune
    val_per_class: int | None
    root: Path | None = None  # the class folder, once extracted

    def split_args(self) -> list[str]:
        """--val-per-class N, or --val-split 0.2 when no count is known; and the recipe's
        --train-per-class."""
        held = ["--val-split", "0.2"] if self.val_per_class is None else [
            "--val-per-class", str(self.val_per_class)]  # fmt: skip
        if self.recipe.train_per_class is not None:
            held += ["--train-per-class", str(self.recipe.train_per_class)]
        return held


class BadInput(Exception):
    """The command line names something that is not there (one-line error, exit 2)."""


def resolve_dataset(spec: str, b: Budget, data_dir: Path, val_per_class: int | None) -> Downstream:
    """`cifar10`, `flowers12` (archives in data_dir) or a folder/archive path -> Downstream."""
    if spec in ARCHIVES:
        source, name, recipe = data_dir / ARCHIVES[spec], spec, b.finetune[spec]
        fix = f"--data-dir DIR holding {ARCHIVES[spec]}"
    else:
        source = Path(spec)
        name = source.name.removesuffix(".gz").removesuffix(".tar").removesuffix(".tgz")
        recipe, fix = (
            b.finetune["folder"],
            "--dataset cifar10, flowers12, an image folder or .tar.gz",
        )
    if not (source.is_dir() or is_archive(source)):
        raise BadInput(f"{source} not found (dataset {spec!r}); fix: {fix}")
    held_out = val_per_class if val_per_class is not None else recipe.val_per_class
    return Downstream(name, source, recipe, held_out)


def prepare(ds: Downstream, tmp: Path) -> Path:
    """Extract ds.source into tmp if it is an archive; return its class folder."""
    folder = ds.source
    if is_archive(ds.source):
        print(f"# extracting {ds.source} to {tmp}", flush=True)
        start = time.time()
        with tarfile.open(ds.source, "r:*") as tar:
            tar.extractall(tmp, filter="data")
        print(f"# extracted in {time.time() - start:.0f}s", flush=True)
        folder = tmp
    root = find_image_folder(folder)
    if root is None:
        raise StepFailed(
            f"{ds.source} holds no <class>/<image> folder; fix: an ImageFolder layout "
            "such as train/<class>/0001.jpg"
        )
    return root


def root_arg(ds: Downstream) -> str:
    """The extracted class folder, or a placeholder until it is extracted (plans are made
    twice: first to learn what still needs the photos)."""
    return str(ds.root) if ds.root else f"<{ds.name} images>"
