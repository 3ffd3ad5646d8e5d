"""The one atomic writer for every file the project writes: all or nothing, even after a power cut.

A file is written to a temporary sibling, flushed and fsynced, renamed over the target, and
the folder is fsynced so that the rename itself is on disk. A crash or a power cut at any
point leaves either the old file or the complete new one, never an empty or half file.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

TMP_SUFFIX = ".tmp"


@functools.cache
def _umask() -> int:
    """The process umask, read once (os.umask can only be read by setting it, which races)."""
    try:  # Linux >= 4.7 reports it without changing it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def plain_file_mode() -> int:
    """The mode open(path, "w") gives a new file under the process umask."""
    return 0o666 & ~_umask()


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a file's data to disk (fsync on a read-only descriptor suffices on POSIX)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename's new name) to disk, where the platform allows it."""
    if os.name == "nt":  # Windows cannot open folders; NTFS journals renames itself
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some network file systems refuse fsync on folders; nothing more can be done
    finally:
        os.close(fd)


def remove_stale_temporaries(*paths: str | os.PathLike) -> None:
    """Delete the temporary siblings of `paths` left behind by writers killed mid-write (call
    only where no other process is writing those files). Each folder is listed once, so
    this stays cheap for the 10,000 shards of a large dataset."""
    wanted: dict[Path, set[str]] = {}
    for path in map(Path, paths):
        wanted.setdefault(path.parent, set()).add(path.name)
    for folder, names in wanted.items():
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            # replace_atomically's temporaries are ".{name}.{random, no dots}.tmp"
            name = entry.name
            if name.startswith(".") and name.endswith(TMP_SUFFIX):
                target = name[1 : -len(TMP_SUFFIX)].rpartition(".")[0]
                if target in names:
                    Path(entry.path).unlink(missing_ok=True)


def replace_atomically(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call write(tmp) on a temporary sibling of `path`, fsync it, rename it over `path`,
    fsync the folder.

    mkstemp creates files readable by their owner only; the result gets the mode a plain
    open() would give, so reports and weights stay readable by the rest of a team.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, plain_file_mode())
        # Without this a power cut can persist the rename before the data: an empty file.
        fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return path


def write_bytes_atomically(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically and durably."""
    return replace_atomically(path, lambda tmp: tmp.write_bytes(data))


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` atomically and durably."""
    return replace_atomically(path, lambda tmp: tmp.write_text(text))


def link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Make `dst` a hard link to `src` where the file system allows it, a copy otherwise.

    Either way `dst` appears atomically. A link costs no space or time, and stays intact when
    `src` is later replaced atomically (the rename gives `src` a new inode).
    """
    src, dst = Path(src), Path(dst)
    fd, tmp_name = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=TMP_SUFFIX)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # os.link needs a free name; mkstemp only reserved a unique one
    try:
        os.link(src, tmp)
    except OSError:  # no hard links here (FAT, some network or object stores, cross-device)
        return replace_atomically(dst, lambda t: shutil.copyfile(src, t))
    try:
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(dst.parent)
    return dst
