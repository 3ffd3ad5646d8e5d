"""Downstream sets: where their photos are, how they are split, and their extraction."""

from __future__ import annotations

import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.photos import find_image_folder, is_archive
from benchmarks.steps import Step, StepFailed
from benchmarks.transfer.budgets import Budget, FineTune

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data"
ARCHIVES = {"cifar10": "cifar10-train-jpg.tar.gz", "flowers12": "flowers12-train-jpg.tar.gz"}
# held out per class when no count is known: finetune --val-split, and what packs leave out
VAL_FRACTION = 0.2
# photos of a shipped archive that repeat another photo byte for byte: flowers12's
# iris/image_0469 (validation) is iris/image_0422 (training), so it is deleted after
# extraction; iris then holds out its last 15 of 59 (one training photo moves to validation)
DUPLICATES = {"flowers12": ("iris/image_0469.jpg",)}


@dataclass
class Downstream:
    """A dataset to fine-tune on: its name, where its images are and how it is split."""

    name: str
    source: Path  # an image folder or a .tar/.tar.gz of one
    recipe: FineTune
    val_per_class: int | None
    root: Path | None = None  # the class folder, once extracted
    train_root: Path | None = None  # links to its training photos only (what packs may read)

    def split_args(self) -> list[str]:
        """--val-per-class N, or --val-split 0.2 when no count is known; and the recipe's
        --train-per-class."""
        held = ["--val-split", f"{VAL_FRACTION:g}"] if self.val_per_class is None else [
            "--val-per-class", str(self.val_per_class)]  # fmt: skip
        if self.recipe.train_per_class is not None:
            held += ["--train-per-class", str(self.recipe.train_per_class)]
        return held

    def training_photos(self) -> list[Path]:
        """The photos the fine-tune may train on (before --train-per-class): the fine-tune's own
        split rule (finetune.datasets.holdout_indices) over ImageFolder's order."""
        from torchvision.datasets import ImageFolder

        from finetune.datasets import holdout_indices
        from fractaldb.core.errors import FractalDBError

        folder = ImageFolder(str(self.root))  # lists the files; reads none
        fraction = VAL_FRACTION if self.val_per_class is None else None
        try:
            train, _ = holdout_indices(folder.targets, fraction, self.val_per_class)
        except FractalDBError as err:
            raise BadInput(f"{self.name}: {err}") from None
        return [Path(folder.samples[i][0]) for i in train]

    def link_training_photos(self, dest: Path) -> Path:
        """dest/<class>/<photo>: links to the training photos, the only ones a pre-training
        pack reads (so no split option can let a held-out photo in)."""
        for photo in self.training_photos():
            link = dest / photo.parent.name / photo.name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(photo)
        return dest


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
    if folder == tmp and ds.source.name == ARCHIVES.get(ds.name):  # never in a user's folder
        for duplicate in DUPLICATES.get(ds.name, ()):
            (root / duplicate).unlink(missing_ok=True)
    return root


def root_arg(ds: Downstream) -> str:
    """The extracted class folder, or a placeholder until it is extracted (plans are made
    twice: first to learn what still needs the photos)."""
    return str(ds.root) if ds.root else f"<{ds.name} images>"


def train_root_arg(ds: Downstream) -> str:
    """The folder of links to the training photos, or its placeholder (see root_arg)."""
    return str(ds.train_root) if ds.train_root else f"<{ds.name} training photos>"


def extract_needed(steps: list[Step], photo_sets: list[Downstream], tmp: Path) -> None:
    """Extract (into tmp) each photo set that an unfinished step reads, and link its training
    photos; a set whose steps are all done is left packed."""
    todo = [set(s.args) for s in steps if not (s.done and s.done.exists())]
    for ds in photo_sets:
        packs = any(train_root_arg(ds) in args for args in todo)
        if packs or any(root_arg(ds) in args for args in todo):
            (tmp / ds.name).mkdir()
            ds.root = prepare(ds, tmp / ds.name)
        if packs:
            ds.train_root = ds.link_training_photos(tmp / f"{ds.name}-train")
