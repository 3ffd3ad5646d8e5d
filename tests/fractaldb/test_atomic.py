"""fractaldb.core.atomic: all or nothing, durable (fsync before rename, folder after), plain modes."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from fractaldb.core import atomic
from fractaldb.core.atomic import (
    link_or_copy,
    remove_stale_temporaries,
    replace_atomically,
    write_bytes_atomically,
)


class SimulatedCrash(BaseException):
    """Stands for the process dying (or the power going) at one point of a write."""


def test_new_file_gets_the_mode_open_would_give_without_touching_the_umask(
    tmp_path: Path, monkeypatch
):
    reference = tmp_path / "reference"
    reference.write_text("x")
    atomic._umask()  # read once, before the writes below

    def no_flip(mask: int) -> int:
        raise AssertionError("os.umask changed process-wide during a write")

    monkeypatch.setattr(os, "umask", no_flip)
    threads = [
        threading.Thread(
            target=replace_atomically,
            args=(tmp_path / "sub" / f"r{i}.md", lambda t: t.write_text("x")),
        )
        for i in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    outs = sorted((tmp_path / "sub").iterdir())
    assert [p.name for p in outs] == [f"r{i}.md" for i in range(8)]  # no temporaries left
    # mkstemp alone gives 0600: teammates could not read reports or weights
    mode = stat.S_IMODE(reference.stat().st_mode)
    assert {stat.S_IMODE(p.stat().st_mode) for p in outs} == {mode}


def test_data_is_fsynced_before_the_rename_and_the_folder_after(tmp_path: Path, monkeypatch):
    events: list[tuple[str, str]] = []
    real_replace, real_fsync_file = os.replace, atomic.fsync_file
    monkeypatch.setattr(
        atomic,
        "fsync_file",
        lambda p: (events.append(("fsync", Path(p).read_text())), real_fsync_file(p)),
    )
    monkeypatch.setattr(atomic, "fsync_dir", lambda d: events.append(("fsync_dir", Path(d).name)))
    monkeypatch.setattr(
        os, "replace", lambda a, b: (events.append(("rename", Path(b).name)), real_replace(a, b))
    )
    write_bytes_atomically(tmp_path / "last.pt", b"new")
    assert events == [("fsync", "new"), ("rename", "last.pt"), ("fsync_dir", tmp_path.name)]


def test_crash_between_write_and_rename_leaves_the_old_file(tmp_path: Path, monkeypatch):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old")

    def crash(src, dst):
        raise SimulatedCrash

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(SimulatedCrash):
        write_bytes_atomically(target, b"new weights")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


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


def test_periodic_copy_is_a_hard_link_that_survives_the_next_save(tmp_path: Path):
    last = write_bytes_atomically(tmp_path / "last.pt", b"epoch 10")
    keep = link_or_copy(last, tmp_path / "checkpoint-0010.pt")
    assert keep.stat().st_ino == last.stat().st_ino  # no second copy of the weights
    write_bytes_atomically(last, b"epoch 11")
    assert keep.read_bytes() == b"epoch 10" and last.read_bytes() == b"epoch 11"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-0010.pt", "last.pt"]


def test_periodic_copy_falls_back_to_a_copy_without_hard_links(tmp_path: Path, monkeypatch):
    last = write_bytes_atomically(tmp_path / "last.pt", b"epoch 10")

    def no_links(src, dst):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    keep = link_or_copy(last, tmp_path / "checkpoint-0010.pt")
    assert keep.stat().st_ino != last.stat().st_ino
    assert keep.read_bytes() == b"epoch 10"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-0010.pt", "last.pt"]


def test_stale_temporaries_of_named_files_only_are_removed(tmp_path: Path):
    for name in (".a.tar.x1y2z3.tmp", ".b.json.abc_12.tmp", ".other.tar.q.tmp", ".a.tar.keep"):
        (tmp_path / name).write_bytes(b"stale")
    remove_stale_temporaries(tmp_path / "a.tar", tmp_path / "b.json", tmp_path / "gone" / "c")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a.tar.keep", ".other.tar.q.tmp"]
