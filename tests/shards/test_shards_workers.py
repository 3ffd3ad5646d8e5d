"""Shard generation in worker processes: same bytes for any worker count, clean failures.

The kill -9 / re-run test lives in test_shards_writer.py (it runs `--workers 2`).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import alive, kill_parent_only, workers_of

from fractaldb.search import search_categories
from fractaldb.settings import RenderSettings
from shards.presets import Layout
from shards.tario import file_sha256, member_info, ustar_header, write_tar
from shards.writer import write_shards

SETTINGS = RenderSettings(image_size=32, points=2000, mode="patch", color="gray", seed=5)
LAYOUT = Layout(instances_per_category=14, samples_per_shard=8, format="png")  # 7 shards
FRACTALDB = str(Path(sys.executable).with_name("fractaldb"))
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}


@pytest.fixture(scope="module")
def cats(tmp_path_factory):
    """Four contractive categories saved to a file, and one single-process reference render."""
    c = search_categories(4, sampler="sigma", seed=2)
    root = tmp_path_factory.mktemp("workers")
    c.save(root / "categories.json")
    write_shards(c, SETTINGS, LAYOUT, root / "ref", workers=1, progress=False)
    return c, root / "categories.json", root / "ref"


def shard_hashes(out: Path) -> dict[str, str]:
    return {p.name: file_sha256(p) for p in sorted(out.glob("fractaldb-*.tar"))}


def manifest_shards(out: Path) -> list[dict]:
    return json.loads((out / "manifest.json").read_text())["shards"]


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("*.tmp"))


def test_same_bytes_for_1_2_3_workers_and_two_nodes_merged(cats, tmp_path):
    c, _, ref = cats
    assert len(shard_hashes(ref)) == 7
    for workers in (2, 3):
        out = tmp_path / f"w{workers}"
        report = write_shards(c, SETTINGS, LAYOUT, out, workers=workers, progress=False)
        assert report.written == 7 and report.finalized
        assert shard_hashes(out) == shard_hashes(ref), f"{workers} workers"
        assert manifest_shards(out) == manifest_shards(ref)
        assert not leftovers(out)
    nodes = tmp_path / "nodes"
    for rank, workers in ((1, 3), (0, 2)):  # rank 1 first: rank 0 finishes last and merges
        write_shards(
            c, SETTINGS, LAYOUT, nodes, workers=workers, num_nodes=2, node_rank=rank, progress=False
        )
    assert shard_hashes(nodes) == shard_hashes(ref)
    assert manifest_shards(nodes) == manifest_shards(ref)


def render_cmd(cats_path: Path, out: Path, workers: int, *extra: str) -> list[str]:
    return [
        FRACTALDB, "render", "--categories", str(cats_path), "--instances-per-category", "14",
        "--image-size", "32", "--points", "2000", "--seed", "5", "--samples-per-shard", "8",
        "--workers", str(workers), "--quiet", "--out", str(out), *extra,
    ]  # fmt: skip


def limit_file_size(limit: int):
    """preexec_fn: files larger than `limit` bytes fail to write (EFBIG), like a full disk."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_write_stops_the_run_with_one_line_and_no_partial_shard(cats, tmp_path, workers):
    _, cats_path, ref = cats
    out = tmp_path / "full"
    # Shards are ~10 kB, the manifests and categories.json ~2 kB: every shard write fails.
    assert min(p.stat().st_size for p in ref.glob("fractaldb-*.tar")) > 6000
    proc = subprocess.run(
        render_cmd(cats_path, out, workers),
        env=ENV,
        capture_output=True,
        text=True,
        preexec_fn=limit_file_size(6000),
        timeout=300,
    )
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("Error: cannot write shard fractaldb-"), lines
    assert "File too large" in lines[0] and "fix:" in lines[0]
    assert not list(out.glob("fractaldb-*.tar")), "a partial shard under its final name"
    assert not leftovers(out)
    # The same command without the limit resumes and gives the reference bytes.
    subprocess.run(render_cmd(cats_path, out, workers), env=ENV, check=True, timeout=300)
    assert shard_hashes(out) == shard_hashes(ref)


def default_sigint() -> None:
    """In the child: Ctrl-C at its default, even when this suite runs with SIGINT ignored (a
    background job of a non-interactive shell): ignored dispositions survive exec."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_render(cmd: list[str]) -> subprocess.Popen:
    """Start a render in its own process group (as a terminal would), Ctrl-C at its default."""
    return subprocess.Popen(
        cmd,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=default_sigint,
    )


def start_and_wait_for_workers(cmd: list[str], out: Path, workers: int):
    """Start a render in its own process group; return it once its workers are rendering."""
    proc = start_render(cmd)
    deadline = time.time() + 120
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        if len(workers_of(proc.pid)) >= workers and list(out.glob("fractaldb-*.tar*")):
            return proc
        time.sleep(0.02)
    raise AssertionError("the workers never started writing")


def big_render_cmd(cats_path: Path, out: Path, workers: int) -> list[str]:
    # about 15 s of rendering on 2 idle cores: a poller starved by other load still finds it
    # running (at 60,000 points it sometimes finished first)
    return [
        FRACTALDB, "render", "--categories", str(cats_path), "--instances-per-category", "400",
        "--image-size", "96", "--points", "250000", "--samples-per-shard", "50",
        "--workers", str(workers), "--quiet", "--out", str(out),
    ]  # fmt: skip


def test_ctrl_c_stops_every_worker_cleanly(cats, tmp_path):
    _, cats_path, _ = cats
    out = tmp_path / "ctrl_c"
    proc = start_and_wait_for_workers(big_render_cmd(cats_path, out, 2), out, 2)
    workers = workers_of(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr.decode() and "Aborted." in stderr.decode()
    assert not any(alive(p) for p in workers)
    assert not leftovers(out) and not (out / "manifest.json").exists()
    # none if no shard was complete; one that names no shard if the interrupt came while it
    # was being rewritten (that shard is rendered again on resume)
    for partial in out.glob("manifest.node-*.json"):
        for rec in json.loads(partial.read_text())["shards"]:
            assert file_sha256(out / rec["filename"]) == rec["sha256"]


def test_ctrl_c_while_workers_start_prints_no_traceback_and_leaves_nothing(cats, tmp_path):
    # The signal lands while the spawned workers wait for their pickled start-up data; the
    # kernel may hand it to any thread of the parent (it used to abort the spawn half-way, and
    # the workers died with `EOFError: Ran out of input` tracebacks, 3 times in 4). Three
    # tries, each timed at the first worker's appearance.
    _, cats_path, _ = cats
    for attempt in range(3):
        out = tmp_path / f"early{attempt}"
        cmd = [FRACTALDB, "render", "--categories", str(cats_path), "--instances-per-category",
               "100", "--image-size", "64", "--samples-per-shard", "20", "--workers", "2",
               "--quiet", "--out", str(out)]  # fmt: skip
        proc = start_render(cmd)
        deadline = time.time() + 120
        while proc.poll() is None and not workers_of(proc.pid) and time.time() < deadline:
            time.sleep(0.002)
        assert proc.poll() is None, "the render ended before its workers started"
        workers = workers_of(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
        text = stderr.decode()
        assert proc.returncode == 130 and "Traceback" not in text, text
        assert [ln for ln in text.splitlines() if ln.strip()] == ["Aborted."], text
        assert not any(alive(p) for p in workers)
        # nothing was complete: the folder this run created is gone (lock, categories,
        # per-node manifest with it)
        assert not out.exists(), sorted(p.name for p in out.iterdir())


def test_workers_stop_when_the_parent_is_killed(cats, tmp_path):
    _, cats_path, _ = cats
    out = tmp_path / "orphans"
    proc = start_and_wait_for_workers(big_render_cmd(cats_path, out, 2), out, 2)
    workers = workers_of(proc.pid)
    assert not kill_parent_only(proc, workers), "orphaned workers kept rendering"
    # each dropped its unfinished shard; the parent, killed mid-write, may leave only the
    # temporary of its own partial manifest, which the next run removes (open_output)
    left = leftovers(out)
    assert all(name.startswith(".manifest.node-") for name in left), left


def test_tar_writer_gives_tarfiles_bytes(tmp_path):
    import io
    import random
    import tarfile

    for name, size in [("a.png", 0), ("c000001_i000002.png", 3000), ("x" * 100, 8**11 - 1)]:
        assert ustar_header(name, size) == member_info(name, size).tobuf(tarfile.USTAR_FORMAT)
    with pytest.raises(ValueError):
        ustar_header("y" * 101, 1)
    rng = random.Random(0)
    for n in (0, 1, 7, 40):
        members = [
            (f"k{i:04d}.{ext}", rng.randbytes(rng.randrange(0, 3000)))
            for i in range(n)
            for ext in ("png", "cls")
        ]
        sha, size = write_tar(tmp_path / "a.tar", members)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name, data in members:
                tar.addfile(member_info(name, len(data)), io.BytesIO(data))
        assert (tmp_path / "a.tar").read_bytes() == buf.getvalue()
        assert (sha, size) == (file_sha256(tmp_path / "a.tar"), len(buf.getvalue()))


def test_sigint_during_worker_spawn_is_deferred_to_the_end_of_the_window():
    from fractaldb.core.stopping import stop_signals_deferred as _sigint_deferred

    # the handler Python installs in a terminal (a suite run as a background job has SIG_IGN)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    reached_end = False
    try:
        with pytest.raises(KeyboardInterrupt), _sigint_deferred():
            # from another thread, as when the kernel hands a terminal's Ctrl-C to a thread
            # that does not block it: Python would raise in the main thread at once
            helper = threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGINT))
            helper.start()
            helper.join()
            time.sleep(0.05)  # give the interpreter its chance to run a handler here
            reached_end = True
        assert reached_end
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    finally:
        signal.signal(signal.SIGINT, previous)
