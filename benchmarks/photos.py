"""Photo sets for transfer measurements: archives (.tar/.tar.gz) and the class folder inside."""

from __future__ import annotations

from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def is_archive(path: Path) -> bool:
    """A .tar, .tar.gz or .tgz file."""
    return path.is_file() and path.name.endswith((".tar", ".tar.gz", ".tgz"))


def find_image_folder(root: Path) -> Path | None:
    """The shallowest folder under `root` whose sub-folders (2 or more) all hold images."""
    queue = [root]
    while queue:
        folder = queue.pop(0)
        subs = sorted(p for p in folder.iterdir() if p.is_dir())
        with_images = [
            s for s in subs if any(f.suffix.lower() in IMAGE_SUFFIXES for f in s.iterdir())
        ]
        if len(subs) >= 2 and len(with_images) == len(subs):
            return folder
        queue += subs
    return None
