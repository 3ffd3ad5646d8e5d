"""benchmarks/transfer_cifar10.py end to end at the smoke budget on a tiny fake CIFAR-like tar."""

from __future__ import annotations

import importlib.util
import json
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
ARMS = ("scratch", "fractaldb-sup", "sigma-sup", "sigma-mae")


@pytest.fixture(scope="module")
def script():
    path = Path(__file__).parents[1] / "benchmarks" / "transfer_cifar10.py"
    spec = importlib.util.spec_from_file_location("transfer_cifar10", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fake_tar(tmp_path_factory) -> Path:
    """train/<class>/NNNN.jpg, 5 random 32x32 photos per class, as a .tar.gz."""
    from PIL import Image

    root = tmp_path_factory.mktemp("fake")
    rng = np.random.default_rng(0)
    for name in CLASSES:
        (root / "train" / name).mkdir(parents=True)
        for i in range(5):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "train" / name / f"{i:04d}.jpg")
    tar = root / "cifar10-fake.tar.gz"
    with tarfile.open(tar, "w:gz") as t:
        t.add(root / "train", arcname="train")
    return tar


def in_process(args: list[str]) -> int:
    """`fractaldb ARGS` in this process: the same commands without a torch import each."""
    from fractaldb.cli import main

    try:
        main.main(args, prog_name="fractaldb")
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


@pytest.fixture(scope="module")
def smoke_run(script, fake_tar, tmp_path_factory):
    # the child-process launcher is checked in test_fractaldb_child_process
    script.execute = in_process
    out = tmp_path_factory.mktemp("transfer") / "smoke"
    argv = ["--budget", "smoke", "--out", str(out), "--cifar-tar", str(fake_tar)]
    argv += ["--val-per-class", "2"]
    assert script.main(argv) == 0
    return out, argv


def test_report_table_has_every_arm(smoke_run):
    out, _ = smoke_run
    table = (out / "results.md").read_text().splitlines()
    inits = [row.split("|")[1].strip() for row in table[2:]]
    assert sorted(inits) == sorted(ARMS)
    assert (out / "results.png").stat().st_size > 0
    summary = (out / "summary.md").read_text()
    assert "budget `smoke`, seed 0" in summary and "fractaldb pretrain mae" in summary


def test_arms_share_the_recipe_and_differ_only_in_init(smoke_run):
    out, _ = smoke_run
    results = {a: json.loads((out / "finetune" / a / "results.json").read_text()) for a in ARMS}
    for arm, r in results.items():
        assert r["epochs_done"] == 1
        # 10 classes x 2 held-out photos each
        assert r["num_classes"] == 10 and "last 2 per class" in r["dataset_splits"]["test"]
        assert r["init"]["kind"] == ("scratch" if arm == "scratch" else "run")
        if arm != "scratch":
            assert r["init"]["loaded"] > 0 and Path(r["init"]["source"]).name == arm
    same = ("recipe", "model", "model_args", "img_size", "batch_size", "lr", "normalize")
    for key in same:
        assert len({json.dumps(r[key], sort_keys=True) for r in results.values()}) == 1, key
    # the photos went to a temporary folder, not into the output or the repository
    assert not list(out.rglob("*.jpg"))
    assert not (Path(__file__).parents[1] / "train").exists()


def test_rerun_skips_finished_steps(script, smoke_run, capsys):
    out, argv = smoke_run
    before = (out / "finetune" / "scratch" / "results.json").read_text()
    assert script.main(argv) == 0
    printed = capsys.readouterr().out
    assert "+ fractaldb finetune" not in printed and "+ fractaldb pretrain" not in printed
    # 2 x (search, render), 3 pre-trainings, 4 fine-tunes
    assert printed.count("# skip (done:") == 11
    assert "extracting" not in printed
    assert (out / "finetune" / "scratch" / "results.json").read_text() == before


def test_missing_tar_is_one_line_error(script, tmp_path, capsys):
    rc = script.main(["--out", str(tmp_path / "o"), "--cifar-tar", str(tmp_path / "no.tar.gz")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "fix:" in err


def test_fractaldb_child_process(script, capsys):
    assert script.fractaldb_exe()[0].endswith("fractaldb")
    assert script.execute.__name__ == "in_process"  # the module fixture swapped it
    spec = importlib.util.spec_from_file_location("transfer_fresh", script.__file__)
    fresh = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = fresh
    spec.loader.exec_module(fresh)
    assert fresh.execute(["report", "/nonexistent-run"]) == 2
