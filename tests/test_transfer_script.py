"""benchmarks/transfer.py end to end at the smoke budget on tiny fake CIFAR-10 and flowers tars."""

from __future__ import annotations

import importlib.util
import json
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

CIFAR_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
FLOWERS = ("daisy", "iris", "pansy")
ARMS = ("scratch", "fractaldb-sup", "sigma-sup", "sigma-mae")


def load_script(name: str = "transfer"):
    """Import benchmarks/transfer.py as a fresh module."""
    path = Path(__file__).parents[1] / "benchmarks" / "transfer.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script():
    return load_script()


def write_tar(root: Path, folder: str, classes, per_class: int, size: int, name: str, tar: Path):
    """folder/<class>/<name % i>.jpg of random photos, packed as tar.gz at `tar`."""
    from PIL import Image

    rng = np.random.default_rng(len(classes))
    for c in classes:
        (root / folder / c).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / folder / c / (name % i))
    with tarfile.open(tar, "w:gz") as t:
        t.add(root / folder.split("/")[0], arcname=folder.split("/")[0])


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """The two archives in the layouts of ../shared/data (CIFAR train/, flowers12/train/)."""
    d = tmp_path_factory.mktemp("data")
    write_tar(d / "c", "train", CIFAR_CLASSES, 5, 32, "%04d.jpg", d / "cifar10-train-jpg.tar.gz")
    tar = d / "flowers12-train-jpg.tar.gz"
    write_tar(d / "f", "flowers12/train", FLOWERS, 4, 56, "image_%04d.jpg", tar)
    return d


class Finished:
    """A launched step that already ran (in this process): poll() gives its exit status."""

    def __init__(self, rc: int) -> None:
        self.rc = rc

    def poll(self) -> int:
        return self.rc

    def wait(self) -> int:
        return self.rc


def in_process(args: list[str]) -> Finished:
    """`fractaldb ARGS` in this process: the same commands without a torch import each."""
    from fractaldb.cli import main

    try:
        main.main(args, prog_name="fractaldb")
    except SystemExit as exit_:
        return Finished(int(exit_.code or 0))
    return Finished(0)


@pytest.fixture(scope="module")
def smoke_run(script, data_dir, tmp_path_factory):
    # the child-process launcher is checked in test_fractaldb_child_process
    script.launch = in_process
    out = tmp_path_factory.mktemp("transfer") / "smoke"
    argv = ["--budget", "smoke", "--out", str(out), "--data-dir", str(data_dir)]
    argv += ["--dataset", "cifar10", "flowers12", "--ft-seeds", "0", "1", "--json"]
    argv += ["--val-per-class", "2"]
    assert script.main(argv) == 0
    return out, argv


def test_a_table_per_dataset_with_every_arm(smoke_run):
    out, _ = smoke_run
    for dataset in ("cifar10", "flowers12"):
        table = (out / f"results-{dataset}.md").read_text().splitlines()
        assert sorted(row.split("|")[1].strip() for row in table[2:]) == sorted(ARMS)
        for row in table[2:]:
            assert row.split("|")[-2].strip().startswith("2: ")  # two fine-tuning seeds
    assert (out / "results.png").stat().st_size > 0
    summary = (out / "summary.md").read_text()
    assert (
        "budget `smoke`, fine-tuning seeds 0 1" in summary and "fractaldb pretrain mae" in summary
    )
    figures = json.loads((out / "transfer.json").read_text())
    sigma = next(r for r in figures["results"]["flowers12"] if r["arm"] == "sigma-mae")
    assert sigma["seeds"] == [0, 1] and len(sigma["last"]) == len(sigma["train"]) == 2
    assert sigma["img_size"] == 48  # the flowers recipe's resolution, not pre-training's 32


def test_arms_share_the_recipe_and_differ_only_in_init(smoke_run):
    out, _ = smoke_run
    for dataset, classes, img in (("cifar10", 10, 32), ("flowers12", 3, 48)):
        runs = {
            (a, s): json.loads(
                (out / "finetune" / dataset / a / f"seed{s}" / "results.json").read_text()
            )
            for a in ARMS
            for s in (0, 1)
        }
        for (arm, _), r in runs.items():
            assert r["epochs_done"] == 1 and r["img_size"] == img
            assert r["num_classes"] == classes and "last 2 per class" in r["dataset_splits"]["test"]
            assert r["init"]["kind"] == ("scratch" if arm == "scratch" else "run")
            assert 0.0 <= r["history"][-1]["train_top1"] <= 100.0
            if arm != "scratch":
                assert r["init"]["loaded"] > 0 and Path(r["init"]["source"]).name == arm
        same = ("recipe", "model", "model_args", "img_size", "batch_size", "lr", "normalize")
        for key in same:
            assert len({json.dumps(r[key], sort_keys=True) for r in runs.values()}) == 1, key
    # the photos went to a temporary folder, not into the output or the repository
    assert not list(out.rglob("*.jpg"))
    assert not (Path(__file__).parents[1] / "train").exists()


def test_rerun_skips_finished_steps(script, smoke_run, capsys):
    out, argv = smoke_run
    before = (out / "finetune" / "flowers12" / "scratch" / "seed1" / "results.json").read_text()
    assert script.main(argv) == 0
    printed = capsys.readouterr().out
    assert "+ fractaldb" not in printed
    # 2 x (search, render), 3 pre-trainings, 2 datasets x 4 arms x 2 seeds
    assert printed.count("# skip (done:") == 7 + 16
    assert "extracting" not in printed
    after = (out / "finetune" / "flowers12" / "scratch" / "seed1" / "results.json").read_text()
    assert after == before


class Sleeper:
    """A fake step that takes `seconds` and then writes its done file."""

    def __init__(self, done: Path | None, seconds: float, record: list) -> None:
        self.rc: int | None = None
        record.append(("start", done, time.monotonic()))

        def work():
            time.sleep(seconds)
            if done is not None:
                done.parent.mkdir(parents=True, exist_ok=True)
                done.write_text("done")
            record.append(("end", done, time.monotonic()))
            self.rc = 0

        threading.Thread(target=work, daemon=True).start()

    def poll(self) -> int | None:
        return self.rc


def test_parallel_arms_overlap_independent_steps_and_keep_dependencies(data_dir, tmp_path):
    fresh = load_script("transfer_parallel")
    record: list = []
    done_of = {}

    def fake_launch(args):
        done = done_of[" ".join(args)]
        return Sleeper(done, 0.15, record)

    fresh.launch = fake_launch
    argv = ["--budget", "smoke", "--out", str(tmp_path / "o"), "--data-dir", str(data_dir)]
    argv += ["--dataset", "flowers12", "--ft-seeds", "0", "1", "--parallel-arms", "3"]
    args = fresh.parse_args(argv)
    b = fresh.BUDGETS["smoke"]
    ds = [fresh.resolve_dataset("flowers12", b, data_dir, None)]
    steps, _ = fresh.plan(args, b, ds)
    done_of.update({" ".join(s.args): s.done for s in steps})
    start = time.monotonic()
    fresh.run_steps(steps, parallel=3, poll_s=0.01)
    wall = time.monotonic() - start

    events = sorted(record, key=lambda e: e[2])
    running, peak = 0, 0
    for kind, _, _ in events:
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    assert peak == 3  # never more than --parallel-arms, and that many at once
    assert wall < 0.15 * len(steps) * 0.6  # well under the sequential time
    times = {(kind, done): t for kind, done, t in record}
    for step in steps:  # every step starts after the steps it depends on have ended
        for dep in step.after:
            dep_done = next(s.done for s in steps if s.name == dep)
            assert times[("start", step.done)] >= times[("end", dep_done)]
    # the scratch fine-tunes wait on nothing: they start before any pre-training ends
    first_pretrain_end = min(
        t for (k, d), t in times.items() if k == "end" and "pretrain" in str(d)
    )
    scratch = next(s for s in steps if s.name == "finetune-flowers12-scratch-0")
    assert times[("start", scratch.done)] < first_pretrain_end


def variant_plan(script, data_dir, tmp_path, *extra):
    """The smoke budget's plan for flowers12 with variant options; and the parsed args."""
    argv = ["--budget", "smoke", "--out", str(tmp_path / "o"), "--data-dir", str(data_dir)]
    args = script.parse_args([*argv, "--dataset", "flowers12", "--ft-seeds", "0", "1", *extra])
    b = script.with_variant(script.BUDGETS["smoke"], args.sup_epochs, args.ft_img_size)
    ds = [script.resolve_dataset("flowers12", b, data_dir, None)]
    return script.plan(args, b, ds), args


def option(args: list[str], name: str) -> str:
    """The value after `name` in a command line."""
    return args[args.index(name) + 1]


def test_arms_variant_plans_only_the_named_arms_and_their_inputs(script, data_dir, tmp_path):
    (steps, arms), _ = variant_plan(script, data_dir, tmp_path, "--arms", "sigma-mae", "scratch")
    assert arms == ["scratch", "sigma-mae"]  # table order, not command-line order
    names = [s.name for s in steps]
    assert names[:3] == ["search-sigma", "render-sigma", "pretrain-sigma-mae"]
    assert not [n for n in names if "fractaldb" in n or "sigma-sup" in n]
    tunes = sorted(n for n in names if n.startswith("finetune-"))
    assert tunes == sorted(f"finetune-flowers12-{a}-{s}" for a in arms for s in (0, 1))
    (steps, arms), _ = variant_plan(script, data_dir, tmp_path, "--arms", "scratch")
    assert arms == ["scratch"] and all(s.name.startswith("finetune-") for s in steps)


def test_sup_epochs_and_ft_img_size_variants_change_only_their_commands(script, data_dir, tmp_path):
    b = script.BUDGETS["smoke"]
    (base, _), _ = variant_plan(script, data_dir, tmp_path)
    (longer, _), args = variant_plan(
        script, data_dir, tmp_path, "--sup-epochs", "7", "--ft-img-size", "40"
    )
    assert [s.name for s in longer] == [s.name for s in base]
    for old, new in zip(base, longer, strict=True):
        if new.args[:2] == ["pretrain", "supervised"]:
            assert option(old.args, "--epochs") == str(b.pre_epochs)
            assert option(new.args, "--epochs") == "7"
        elif new.args[0] == "finetune":
            assert option(old.args, "--img-size") == str(b.finetune["flowers12"].img_size)
            assert option(new.args, "--img-size") == "40"
        else:  # search, render, MAE: untouched
            assert new.args == old.args
    assert script.variant_flags(args) == ["--sup-epochs", "7", "--ft-img-size", "40"]
    ds = [script.resolve_dataset("flowers12", b, data_dir, None)]
    text = script.summary("smoke", ds, {"flowers12": []}, [0], [], 1.0, script.variant_flags(args))
    assert "budget `smoke` (variant: `--sup-epochs 7 --ft-img-size 40`)" in text


def test_failed_step_stops_new_steps_and_reports(script, tmp_path, monkeypatch):
    class Failing(Finished):
        pass

    started = []

    def fake_launch(args):
        started.append(args[0])
        return Failing(3 if args[0] == "a" else 0)

    monkeypatch.setattr(script, "launch", fake_launch)
    steps = [
        script.Step("a", ["a"], None),
        script.Step("b", ["b"], None, ("a",)),
        script.Step("c", ["c"], None),
    ]
    with pytest.raises(script.StepFailed, match="exit code 3: fractaldb a"):
        script.run_steps(steps, parallel=1, poll_s=0.0)
    assert started == ["a"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--dataset", "nowhere.tar.gz"], "not found"),
        (["--dataset", "cifar10", "--data-dir", "/nonexistent"], "cifar10-train-jpg.tar.gz"),
        (["--dataset", "flowers12", "flowers12"], "twice"),
        (["--parallel-arms", "0"], "1 or more"),
        (["--arms", "scratch", "imagenet-sup"], "imagenet-sup unknown"),
        (["--sup-epochs", "0"], "1 or more"),
        (["--ft-img-size", "0"], "8 px or more"),
    ],
)
def test_bad_input_is_one_line_error(script, tmp_path, capsys, extra, message):
    rc = script.main(["--out", str(tmp_path / "o"), *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "fix:" in err and message in err


def test_find_image_folder_takes_the_shallowest_class_folder(script, tmp_path):
    for c in ("a", "b"):
        (tmp_path / "x" / "train" / c).mkdir(parents=True)
        (tmp_path / "x" / "train" / c / "1.jpg").write_bytes(b"")
    (tmp_path / "x" / "README").mkdir()
    assert script.find_image_folder(tmp_path) == tmp_path / "x" / "train"
    assert script.find_image_folder(tmp_path / "x" / "train" / "a") is None


def test_mean_sd(script):
    assert script.mean_sd([1.0, 3.0]) == (2.0, pytest.approx(2**0.5))
    assert script.mean_sd([5.0]) == (5.0, 0.0)


def test_fractaldb_child_process(script):
    assert script.fractaldb_exe()[0].endswith("fractaldb")
    assert script.launch.__name__ == "in_process"  # the module fixture swapped it
    fresh = load_script("transfer_fresh")
    assert fresh.execute(["report", "/nonexistent-run"]) == 2


def test_chart_draws_groups_that_ran_only_some_arms(script, tmp_path):
    full = [{"arm": a, "last": [40.0, 42.0]} for a in ARMS]
    some = [{"arm": "scratch", "last": [41.0]}, {"arm": "sigma-mae", "last": [53.0, 54.0]}]
    png = script.chart({"cpu": full, "--arms scratch sigma-mae": some}, tmp_path / "c.png")
    assert png == tmp_path / "c.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
