"""A read-only or full output disk: one line naming the path and the fix, exit code 2, nothing
partial under a final name, the last good checkpoint kept; and the render folder lock."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from fractaldb.cli import main
from tests.helpers import assert_one_line_error

TINY = ["pretrain", "supervised", "--recipe", "tiny-cpu", "--device", "cpu", "--workers", "0",
        "--data", "synthetic:4", "--batch-size", "16", "--samples-per-epoch", "32"]  # fmt: skip
RENDER = ["render", "--instances-per-category", "8", "--samples-per-shard", "4",
          "--image-size", "16", "--points", "300", "--mode", "point", "--quiet"]  # fmt: skip


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def assert_stops_with_one_line(result, *needles: str) -> None:
    """Exit code 2, no traceback, and one `Error:` line (after any training progress)."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, result.output
    for n in needles:
        assert n in errors[0], errors[0]


def disk_full(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture(scope="module")
def cats(tmp_path_factory):
    from fractaldb.search import search_categories

    path = tmp_path_factory.mktemp("cats") / "cats.json"
    search_categories(2, sampler="sigma", seed=2).save(path)
    return path


@pytest.fixture
def read_only(tmp_path):
    """A folder nobody may write into: chmod 555, or /sys where permissions do not bind (root)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    yield ro if not os.access(ro, os.W_OK) else Path("/sys")
    ro.chmod(0o755)


def test_read_only_output_of_every_command(tmp_path, read_only, cats):
    from tests.finetune.test_finetune_report import make_run

    run = make_run(tmp_path / "ft", "cifar10", "scratch", [(50.0, 90.0)])
    cases = [
        (["search", "-k", "1", "--sampler", "sigma", "--out", str(read_only / "c.json")], "c.json"),
        (["preview", "-c", str(cats), "--out", str(read_only / "p.png")], "p.png"),
        (["render", "--categories", str(cats), "--out", str(read_only / "s"), *RENDER[1:]], "s"),
        ([*TINY, "--out", str(read_only / "run")], "run"),
        (["report", str(run), "--out-md", str(read_only / "t.md")], "t.md"),
        (["report", str(run), "--out-png", str(read_only / "t.png")], "t.png"),
    ]
    for args, name in cases:
        res = invoke(*args)
        assert_one_line_error(res, str(read_only / name), "fix:", "writable")
        assert "Traceback" not in res.output
    assert not (read_only / "c.json").exists() and not (read_only / "p.png").exists()


def test_read_only_finetune_output(tmp_path, read_only):
    from tests.fixtures_downstream import make_image_folder

    root = make_image_folder(tmp_path / "imgs", classes=("a", "b"), per_class=3)
    res = invoke("finetune", "--dataset", "folder", "--data-root", str(root), "--val-per-class",
                 "1", "--init", "scratch", "--model", "vit_tiny_patch16_224", "--img-size", "32",
                 "--model-arg", "patch_size=8", "--model-arg", "depth=1", "--batch-size", "2",
                 "--epochs", "1", "--device", "cpu", "--workers", "0",
                 "--out", str(read_only / "ft"))  # fmt: skip
    assert_one_line_error(res, str(read_only / "ft"), "fix:")


def test_full_disk_during_render_leaves_nothing_partial(tmp_path, cats, monkeypatch):
    import shards.tario
    from shards.tario import write_tar

    calls = []

    def fill_up_on_second_shard(path, members):
        calls.append(path)
        if len(calls) == 2:
            Path(path).write_bytes(b"half a shard")  # what a full disk leaves behind
            disk_full()
        return write_tar(path, members)

    monkeypatch.setattr(shards.tario, "write_tar", fill_up_on_second_shard)
    out = tmp_path / "shards"
    res = invoke(*RENDER, "--categories", str(cats), "--out", str(out), "--workers", "1")
    assert_one_line_error(res, str(out), "No space left", "free disk space", "re-run")
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))
    # only the shard written before the disk filled up stands under a final name
    first = Path(calls[0]).name  # the atomic writer's temporary: ".NAME.RANDOM.tmp"
    assert [p.name for p in out.glob("*.tar")] == [first[1:].rsplit(".", 2)[0]]

    monkeypatch.undo()  # space freed: the same command finishes the job
    assert invoke(*RENDER, "--categories", str(cats), "--out", str(out)).exit_code == 0
    assert invoke("shards", "verify", str(out)).exit_code == 0


def test_full_disk_while_writing_a_checkpoint_keeps_the_last_good_one(tmp_path, monkeypatch):
    import torch

    from pretrain.engine.checkpoint import load_checkpoint

    real_save, saves = torch.save, []

    def save_then_fill_up(obj, f, *a, **kw):
        saves.append(f)
        if len(saves) == 2:  # the second epoch's last.pt
            raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter "
                               "failed writing file data/3: file write failed")  # fmt: skip
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", save_then_fill_up)
    run = tmp_path / "run"
    res = invoke(*TINY, "--epochs", "2", "--out", str(run))
    assert_stops_with_one_line(res, str(run / "last.pt"), "kept", "--resume auto")
    assert load_checkpoint(run / "last.pt")["epoch"] == 1
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_full_disk_in_the_tensorboard_writer(tmp_path, monkeypatch):
    from torch.utils.tensorboard import SummaryWriter

    from pretrain.engine.checkpoint import load_checkpoint

    real, calls = SummaryWriter.add_scalar, []

    def add_scalar(self, tag, value, step=None, *a, **kw):
        calls.append(tag)
        if step is not None and step > 2:  # epoch 2 (2 steps per epoch)
            disk_full()
        return real(self, tag, value, step, *a, **kw)

    monkeypatch.setattr(SummaryWriter, "add_scalar", add_scalar)
    run = tmp_path / "run"
    res = invoke(*TINY, "--epochs", "2", "--out", str(run))
    assert_stops_with_one_line(res, "run log", str(run / "metrics.jsonl"), "No space left", "kept")
    assert load_checkpoint(run / "last.pt")["epoch"] == 1


def test_full_disk_in_the_event_writer_thread_prints_no_traceback(tmp_path, monkeypatch):
    from tensorboard.summary.writer.record_writer import RecordWriter

    real, calls = RecordWriter.write, []

    def write(self, data):
        calls.append(1)
        if len(calls) > 3:  # the file header and the first events get through
            disk_full()
        return real(self, data)

    monkeypatch.setattr(RecordWriter, "write", write)
    res = invoke(*TINY, "--epochs", "2", "--log-every", "1", "--out", str(tmp_path / "run"))
    assert_stops_with_one_line(res, "run log", "No space left")


def test_a_failed_run_leaves_no_empty_run_folder(tmp_path):
    run = tmp_path / "run"
    res = invoke(*TINY, "--model-arg", "patch_size=7", "--out", str(run))
    assert res.exit_code == 2 and not run.exists()
    run.mkdir()
    (run / "notes.txt").write_text("mine")  # a folder the user made is left alone
    res = invoke(*TINY, "--model-arg", "patch_size=7", "--out", str(run))
    assert res.exit_code == 2 and (run / "notes.txt").read_text() == "mine"


def test_a_failed_run_removes_the_parent_folders_it_created(tmp_path):
    (tmp_path / "kept").mkdir()
    res = invoke(*TINY, "--model-arg", "patch_size=7", "--out", str(tmp_path / "kept/a/b/run"))
    assert res.exit_code == 2 and (tmp_path / "kept").is_dir()
    assert not (tmp_path / "kept" / "a").exists()


def test_second_render_into_the_same_folder_is_refused(tmp_path, cats):
    out = tmp_path / "shards"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from shards.lock import folder_lock, lock_name
            with folder_lock({str(out)!r}, lock_name(0, 1), "fractaldb render"):
                print("locked", flush=True)
                time.sleep(60)
        """)],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        res = invoke(*RENDER, "--categories", str(cats), "--out", str(out))
        assert_one_line_error(res, str(out), "another `fractaldb render`", f"pid {holder.pid}")
        assert not list(out.glob("*.tar"))
    finally:
        holder.kill()
        holder.wait()
    # the lock dies with its process: the next render runs
    assert invoke(*RENDER, "--categories", str(cats), "--out", str(out)).exit_code == 0


def test_nodes_of_a_multi_node_render_hold_different_locks(tmp_path):
    from shards.lock import folder_lock, lock_name

    with (
        folder_lock(tmp_path, lock_name(0, 2), "fractaldb render"),
        folder_lock(tmp_path, lock_name(1, 2), "fractaldb render"),
    ):
        pass


def test_finished_render_leaves_no_lock_file(tmp_path, cats):
    out = tmp_path / "shards"
    assert invoke(*RENDER, "--categories", str(cats), "--out", str(out)).exit_code == 0
    assert list(out.glob("*.tar")) and not list(out.glob(".render-node-*.lock"))


def test_refused_node_rank_leaves_no_folder_behind(tmp_path, cats):
    out = tmp_path / "shards"
    res = invoke(*RENDER, "--categories", str(cats), "--out", str(out), "--num-nodes", "2",
                 "--node-rank", "5")  # fmt: skip
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert not out.exists()


def test_lock_file_removed_by_its_holder_is_not_locked_twice(tmp_path):
    from shards.lock import folder_lock, lock_name

    with folder_lock(tmp_path, lock_name(0, 1), "fractaldb render") as path:
        assert path.is_file()
    assert not path.exists() and tmp_path.is_dir()  # a folder that existed stays
    with (
        folder_lock(tmp_path, lock_name(0, 1), "fractaldb render"),
        pytest.raises(Exception, match="another `fractaldb render`"),
        folder_lock(tmp_path, lock_name(0, 1), "fractaldb render"),
    ):
        pass
