"""fractaldb.atomic.replace_atomically: all or nothing, with a plain file's permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from fractaldb.atomic import replace_atomically


def test_new_file_gets_the_mode_open_would_give(tmp_path: Path):
    old_umask = os.umask(0o022)
    try:
        out = replace_atomically(tmp_path / "sub" / "report.md", lambda t: t.write_text("x"))
    finally:
        os.umask(old_umask)
    assert out.read_text() == "x"
    # mkstemp alone gives 0600: teammates could not read reports or weights
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert [p.name for p in out.parent.iterdir()] == ["report.md"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path):
    target = tmp_path / "weights.bin"
    target.write_bytes(b"old")

    def crash(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        replace_atomically(target, crash)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.bin"]
