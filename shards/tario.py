"""Deterministic tar files: fixed member metadata and order, hashed while written."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Iterable
from pathlib import Path

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

    The caller writes to a temporary path and renames it; the data is fsynced so that a
    renamed file is complete even after a machine crash.
    """
    with open(path, "wb") as f:
        hw = _HashingWriter(f)
        with tarfile.open(fileobj=hw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name, data in members:
                tar.addfile(member_info(name, len(data)), io.BytesIO(data))
        f.flush()
        os.fsync(f.fileno())
    return hw.sha.hexdigest(), hw.size


def file_sha256(path: str | os.PathLike) -> str:
    """Return the hex sha256 of a file."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a small file atomically (temporary name + rename)."""
    path = Path(path)
    # A fixed temporary name: a re-run that writes the same file replaces any stale one.
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
