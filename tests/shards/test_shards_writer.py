"""Shard writing: byte reproducibility, resume after damage or kill -9, verify, CLI errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fractaldb.cli import main
from fractaldb.search import search_categories
from fractaldb.settings import RenderSettings
from shards.cli import node_from_env
from shards.codec import decode_image
from shards.encode import encode_image
from shards.layout import grid_cells, permute
from shards.presets import Layout, all_presets, load_preset
from shards.tario import file_sha256, write_tar
from shards.verify import pick_positions
from shards.writer import write_shards

SETTINGS = RenderSettings(image_size=32, points=2000, mode="patch", color="gray", seed=3)
LAYOUT = Layout(instances_per_category=12, samples_per_shard=10, format="png")


@pytest.fixture(scope="module")
def cats(tmp_path_factory):
    """Four contractive categories (no rejection: fast) saved to a file."""
    c = search_categories(4, sampler="sigma", seed=0)
    path = tmp_path_factory.mktemp("cats") / "categories.json"
    c.save(path)
    return c, path


@pytest.fixture(scope="module")
def reference(cats, tmp_path_factory):
    """One uninterrupted single-worker render."""
    out = tmp_path_factory.mktemp("ref")
    write_shards(cats[0], SETTINGS, LAYOUT, out, workers=1, progress=False)
    return out


def shard_hashes(out: Path) -> dict[str, str]:
    return {p.name: file_sha256(p) for p in sorted(out.glob("fractaldb-*.tar"))}


def test_permutation_is_a_keyed_bijection():
    for n in (1, 2, 3, 17, 1000, 4097):
        p = permute(range(n), n, key=7)
        assert sorted(p.tolist()) == list(range(n))
    a, b = permute(range(1000), 1000, 1), permute(range(1000), 1000, 2)
    assert (a != b).any() and (a == permute(range(1000), 1000, 1)).all()
    cats_, _ = grid_cells(range(40), 1000, 1000, key=5)  # first shard of a 1k x 1k grid
    assert len(set(cats_.tolist())) > 30  # categories are interleaved


def test_reference_layout(reference, cats):
    manifest = json.loads((reference / "manifest.json").read_text())
    info = json.loads((reference / "_info.json").read_text())
    assert manifest["num_samples"] == 48 and manifest["num_shards"] == 5
    assert manifest["categories_sha256"] == cats[0].sha256
    assert manifest["settings"] == SETTINGS.to_dict()
    assert [r["num_samples"] for r in manifest["shards"]] == [10, 10, 10, 10, 8]
    assert info["splits"]["train"]["shard_lengths"] == [10, 10, 10, 10, 8]
    assert info["splits"]["train"]["num_samples"] == 48
    for r in manifest["shards"]:
        assert file_sha256(reference / r["filename"]) == r["sha256"]
    seen = set()
    with tarfile.open(reference / "fractaldb-000000.tar") as tar:
        members = tar.getmembers()
        assert all(m.mtime == 0 and m.uid == 0 and m.uname == "" for m in members)
        names = [m.name for m in members]
        assert [n.split(".", 1)[1] for n in names[:4]] == ["png", "cls", "png", "cls"]
        for m in members:
            key, ext = m.name.split(".")
            if ext == "cls":  # the key names the sample; the label is its category
                category, instance = int(key[1:7]), int(key[9:])
                assert key == f"c{category:06d}_i{instance:06d}"
                assert int(tar.extractfile(m).read()) == category
                seen.add((category, instance))
    assert len(seen) == 10 and len({c for c, _ in seen}) > 1  # interleaved categories
    assert not list(reference.glob("*.tmp"))
    assert manifest["format_version"] == 2


def test_same_bytes_for_workers_and_node_splits(reference, cats, tmp_path):
    ref = shard_hashes(reference)
    two = tmp_path / "two_workers"
    write_shards(cats[0], SETTINGS, LAYOUT, two, workers=2, progress=False)
    assert shard_hashes(two) == ref
    nodes = tmp_path / "nodes"
    r0 = write_shards(cats[0], SETTINGS, LAYOUT, nodes, num_nodes=2, node_rank=0, progress=False)
    assert not r0.finalized and not (nodes / "manifest.json").exists()
    r1 = write_shards(cats[0], SETTINGS, LAYOUT, nodes, num_nodes=2, node_rank=1, progress=False)
    assert r1.finalized  # the last node to finish merges the partial manifests
    assert shard_hashes(nodes) == ref
    assert (
        json.loads((nodes / "manifest.json").read_text())["shards"]
        == json.loads((reference / "manifest.json").read_text())["shards"]
    )
    assert not list(nodes.glob("manifest.node-*"))


def test_rerun_regenerates_missing_and_damaged_shards(reference, cats, tmp_path):
    out = tmp_path / "d"
    write_shards(cats[0], SETTINGS, LAYOUT, out, progress=False)
    (out / "fractaldb-000001.tar").unlink()
    data = bytearray((out / "fractaldb-000003.tar").read_bytes())
    data[700] ^= 0xFF
    (out / "fractaldb-000003.tar").write_bytes(bytes(data))
    for name in ("fractaldb-000004.tar", "manifest.node-00000-of-00001.json", "manifest.json"):
        (out / f".{name}.k1ll3d.tmp").write_bytes(b"stale")  # left by a killed writer
    report = write_shards(cats[0], SETTINGS, LAYOUT, out, progress=False)
    assert (report.written, report.skipped) == (2, 3)
    assert shard_hashes(out) == shard_hashes(reference)
    assert not list(out.glob("*.tmp"))


def test_verify_names_truncated_and_flipped_shards(reference, tmp_path):
    import shutil

    out = tmp_path / "v"
    shutil.copytree(reference, out)
    runner = CliRunner()
    ok = runner.invoke(main, ["shards", "verify", str(out)])
    assert ok.exit_code == 0, ok.output
    p = out / "fractaldb-000002.tar"
    p.write_bytes(p.read_bytes()[:3000])
    q = out / "fractaldb-000004.tar"
    data = bytearray(q.read_bytes())
    data[1500] ^= 0x01
    q.write_bytes(bytes(data))
    bad = runner.invoke(main, ["shards", "verify", str(out)])
    assert bad.exit_code == 2
    assert "fractaldb-000002.tar" in bad.output and "fractaldb-000004.tar" in bad.output
    assert "fractaldb-000001.tar" not in bad.output
    assert len(bad.output.strip().splitlines()) == 1
    summary = runner.invoke(main, ["shards", "inspect", str(reference)])
    assert summary.exit_code == 0 and "48" in summary.output


def _change_one_image(shard: Path) -> str:
    """Rewrite `shard` with one sample's pixels changed; return that sample's key."""
    with tarfile.open(shard) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar]
    name, data = members[2]  # the second sample's image (members go image, cls)
    assert name.endswith(".png")
    image = decode_image(data, None)
    image[5:9, 5:9] = 255 - image[5:9, 5:9]
    members[2] = (name, encode_image(image, "png", 1))
    write_tar(shard, members)
    return name.split(".")[0]


def test_verify_regenerate_passes_and_names_a_sample_with_changed_pixels(reference, tmp_path):
    import shutil

    import cv2
    import numba

    out = tmp_path / "r"
    shutil.copytree(reference, out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dependency_versions"] == {
        "numpy": np.__version__,
        "numba": numba.__version__,
        "opencv": cv2.__version__,
    }
    runner = CliRunner()
    args = ["shards", "verify", str(out), "--regenerate", "48", "--quiet"]
    ok = runner.invoke(main, args)
    assert ok.exit_code == 0, ok.output
    assert "48 re-rendered samples match" in ok.output

    key = _change_one_image(out / "fractaldb-000002.tar")
    record = manifest["shards"][2]  # the manifest now vouches for the changed shard
    record["sha256"] = file_sha256(out / "fractaldb-000002.tar")
    record["bytes"] = (out / "fractaldb-000002.tar").stat().st_size
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert runner.invoke(main, ["shards", "verify", str(out)]).exit_code == 0  # hashes agree
    bad = runner.invoke(main, args)
    assert bad.exit_code == 1, bad.output
    assert f"{key} in fractaldb-000002.tar (pixels differ: 16 values" in bad.output
    assert "1 of 48 re-rendered samples differ" in bad.output


def test_regenerate_picks_spread_over_the_shards():
    picks = pick_positions(1000, 10, seed=0)
    assert [p // 100 for p in picks] == list(range(10))  # one in each tenth: every shard
    assert picks != pick_positions(1000, 10, seed=1)
    assert pick_positions(7, 50, seed=0) == list(range(7))  # K above the dataset: all of it


def _render_cmd(cats_path: Path, out: Path) -> list[str]:
    return [
        str(Path(sys.executable).with_name("fractaldb")), "render", "--categories", str(cats_path),
        "--instances-per-category", "200", "--image-size", "96", "--points", "60000",
        "--samples-per-shard", "20", "--workers", "2", "--quiet", "--out", str(out),
    ]  # fmt: skip


def test_kill_minus_9_then_rerun_gives_the_same_bytes(cats, tmp_path):
    cmd_out = tmp_path / "killed"
    cmd = _render_cmd(cats[1], cmd_out)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    for _ in range(2):  # kill twice, at different points, then finish
        proc = subprocess.Popen(cmd, start_new_session=True, env=env)
        deadline = time.time() + 60
        before = len(list(cmd_out.glob("fractaldb-*.tar")))
        while time.time() < deadline and len(list(cmd_out.glob("fractaldb-*.tar"))) <= before:
            assert proc.poll() is None, "the render command exited early"
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert len(list(cmd_out.glob("fractaldb-*.tar"))) > before
    assert not (cmd_out / "manifest.json").exists(), "the run finished before it was killed"
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    clean = tmp_path / "clean"
    write_shards(
        cats[0],
        load_preset("quickstart").render.replace(image_size=96, points=60000),
        Layout(instances_per_category=200, samples_per_shard=20),
        clean,
        workers=1,
        progress=False,
    )
    assert shard_hashes(cmd_out) == shard_hashes(clean)
    assert not list(cmd_out.glob("*.tmp")) and not list(cmd_out.glob("manifest.node-*"))


def test_node_rank_from_slurm():
    assert node_from_env({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}) == (4, 3)
    env = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "2"}
    assert node_from_env(env) == (4, 3)
    assert node_from_env({"SLURM_PROCID": "1", "SLURM_NTASKS": "8"}) == (8, 1)
    assert node_from_env({}) is None


def test_cli_two_nodes_from_slurm_env_then_finalize(cats, reference, tmp_path, monkeypatch):
    out = tmp_path / "slurm"
    args = [
        "render", "--categories", str(cats[1]), "--instances-per-category", "12",
        "--image-size", "32", "--points", "2000", "--seed", "3", "--samples-per-shard", "10",
        "--quiet", "--out", str(out),
    ]  # fmt: skip
    runner = CliRunner()
    for rank in (1, 0):
        monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", str(rank))
        r = runner.invoke(main, args)
        assert r.exit_code == 0, r.output
        if rank == 1:  # node 0 has not run yet: nothing to finalize
            assert "finalize" in r.output and not (out / "manifest.json").exists()
            early = runner.invoke(main, ["shards", "finalize", str(out)])
            assert early.exit_code == 2 and "fractaldb-000000.tar" in early.output
    assert (out / "manifest.json").is_file()  # node 0 finished last and merged the manifests
    fin = runner.invoke(main, ["shards", "finalize", str(out)])
    assert fin.exit_code == 0, fin.output
    assert shard_hashes(out) == shard_hashes(reference)
    assert runner.invoke(main, ["shards", "verify", str(out)]).exit_code == 0


def test_presets_are_valid_and_cite_sources():
    for name in all_presets():
        p = load_preset(name)
        assert p.description and Layout(**p.layout).instances_per_category >= 1
    assert load_preset("fractaldb-1k").layout["instances_per_category"] == 1000
    assert load_preset("ofdb-1k").layout["instances_per_category"] == 1
    assert load_preset("sigma-1k").search["sampler"] == "sigma"
    assert load_preset("fractaldb-10k").search["num_categories"] == 10000


def test_quickstart_render_with_no_arguments(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["render", "--quiet"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "data" / "quickstart"
    info = json.loads((out / "_info.json").read_text())
    assert info["num_classes"] == 16 and info["splits"]["train"]["num_samples"] == 16 * 64
    assert (out / "categories.json").is_file() and (out / "preview.png").is_file()


def one_line_error(args: list[str]) -> str:
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    assert len(r.output.strip().splitlines()) == 1, r.output
    assert "Traceback" not in r.output
    return r.output


def test_bad_input_gives_one_line_errors(cats, reference, tmp_path):
    base = ["render", "--quiet", "--out", str(tmp_path / "o")]
    assert "not found" in one_line_error([*base, "--categories", str(tmp_path / "nope.json")])
    assert "unknown preset" in one_line_error([*base, "--preset", "fractaldb-2k"])
    assert "unknown render setting" in one_line_error([*base, "--set", "colour=red"])
    assert "jitter" in one_line_error([*base, "--jitter", "0.2"])  # quickstart: scheme fractaldb
    bad_preset = tmp_path / "mine.json"
    bad_preset.write_text(json.dumps({"render": {"image_size": 32}, "shards": {"shard_size": 5}}))
    assert "shard_size" in one_line_error([*base, "--preset", str(bad_preset)])
    zero = [*base, "--categories", str(cats[1]), "--instances-per-category", "0"]
    assert "instances" in one_line_error(zero)
    other = [
        "render", "--quiet", "--categories", str(cats[1]), "--instances-per-category", "12",
        "--image-size", "40", "--points", "2000", "--out", str(reference),
    ]  # fmt: skip
    assert "another dataset" in one_line_error(other)
    assert "manifest.json" in one_line_error(["shards", "verify", str(tmp_path)])


def test_image_formats_decode(cats, tmp_path):
    from shards.codec import decode_image
    from shards.encode import encode_image

    rgb = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    assert (decode_image(encode_image(rgb, "png", 1)) == rgb).all()
    assert (decode_image(encode_image(rgb, "webp", 101)) == rgb).all()  # lossless webp
    out = tmp_path / "jpg"
    layout = Layout(instances_per_category=4, samples_per_shard=8, format="jpg")
    write_shards(cats[0], SETTINGS.replace(color="color"), layout, out, progress=False)
    with tarfile.open(out / "fractaldb-000000.tar") as tar:
        jpgs = [m for m in tar.getmembers() if m.name.endswith(".jpg")]
        img = decode_image(tar.extractfile(jpgs[0]).read())
    assert len(jpgs) == 8 and img.shape == (32, 32, 3)


def test_writer_and_cli_do_not_import_torch():
    code = "import sys, shards.cli, shards.writer, shards.verify; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
