"""Deterministic tar files: fixed member metadata and order, hashed while written."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Iterable

from fractaldb.atomic import replace_atomically

# Fixed metadata so that the bytes depend only on member names and contents.
TAR_MTIME = 0
TAR_MODE = 0o444
CHUNK = 1 << 20


class _HashingWriter(io.RawIOBase):
    """A write-only file object that hashes and counts what passes through it."""

    def __init__(self, f) -> None:
        self._f = f
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.size

    def write(self, b) -> int:
        self.sha.update(b)
        self.size += len(b)
        return self._f.write(b)


def member_info(name: str, size: int) -> tarfile.TarInfo:
    """Return a TarInfo with every field fixed except name and size."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = TAR_MTIME
    info.mode = TAR_MODE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def write_tar(path: str | os.PathLike, members: Iterable[tuple[str, bytes]]) -> tuple[str, int]:
    """Write members (name, bytes) to `path` in order; return (sha256 hex, size in bytes).

    Not atomic by itself: see write_tar_atomically.
    """
    with open(path, "wb") as f:
        hw = _HashingWriter(f)
        with tarfile.open(fileobj=hw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name, data in members:
                tar.addfile(member_info(name, len(data)), io.BytesIO(data))
    return hw.sha.hexdigest(), hw.size


def write_tar_atomically(
    path: str | os.PathLike, members: Iterable[tuple[str, bytes]]
) -> tuple[str, int]:
    """write_tar through fractaldb.atomic's one writer (temporary sibling, fsync, rename)."""
    result: list[tuple[str, int]] = []
    replace_atomically(path, lambda tmp: result.append(write_tar(tmp, members)))
    return result[0]


def file_sha256(path: str | os.PathLike) -> str:
    """Return the hex sha256 of a file."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            sha.update(chunk)
    return sha.hexdigest()
