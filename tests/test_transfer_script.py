"""benchmarks.transfer end to end at the smoke budget on tiny fake CIFAR-10 and flowers tars."""

from __future__ import annotations

import hashlib
import importlib
import json
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
CORE = ("scratch", "fractaldb-sup", "sigma-sup", "sigma-mae", "natural-sup", "natural-mae",
        "target-mae")  # fmt: skip
CONTOUR = ("visualatom-sup", "rcdb-sup", "visualatom-mae")


def load_script():
    """benchmarks.transfer, the package."""
    return importlib.import_module("benchmarks.transfer")


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
    from benchmarks import steps

    out = tmp_path_factory.mktemp("transfer") / "smoke"
    argv = ["--budget", "smoke", "--out", str(out), "--data-dir", str(data_dir)]
    # one downstream set keeps the 24 arms within CI time; several sets are planned below
    argv += ["--dataset", "flowers12", "--ft-seeds", "0", "--json", "--val-per-class", "2"]
    argv += ["--results-dir", str(out.parent / "results")]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(steps, "launch", in_process)
        assert script.main(argv) == 0
    return out, argv


@pytest.fixture
def in_process_steps(monkeypatch):
    """Steps run in this process (no torch import per child)."""
    from benchmarks import steps

    monkeypatch.setattr(steps, "launch", in_process)


def test_a_table_per_dataset_with_every_arm_and_column(script, smoke_run):
    out, _ = smoke_run
    arms = script.arm_names(script.BUDGETS["smoke"])
    assert set(CORE) < set(arms) and set(CONTOUR) < set(arms) and len(arms) == 24
    for dataset in ("flowers12",):
        table = (out / f"results-{dataset}.md").read_text().splitlines()
        header = [c.strip() for c in table[0].split("|")]
        assert "linear probe" in header and "k-NN" in header and "pre-training saw" in header
        rows = {row.split("|")[1].strip(): row.split("|") for row in table[2:]}
        assert sorted(rows) == sorted(arms)
        for arm, row in rows.items():
            assert row[header.index("n (pt x ft)")].strip() == "1 x 1"  # one run
            linear, knn = float(row[header.index("linear probe")]), float(row[header.index("k-NN")])
            assert 0.0 <= linear <= 100.0 and 0.0 <= knn <= 100.0, arm
        assert "(in-domain)" not in rows["natural-sup"][2]
        # the contour arms also against fractaldb-sup (one run each here: too few for a CI)
        assert "vs fractaldb-sup [95 % CI] (p)" in header
        curve = out / f"curve-{dataset}.png"
        assert curve.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "results.png").stat().st_size > 0
    # a control drawn from CIFAR-10 is in-domain when CIFAR-10 is the downstream set
    figures = json.loads((out / "transfer.json").read_text())
    as_cifar = script.markdown(figures["results"]["flowers12"], in_domain=True)
    natural = next(line for line in as_cifar.splitlines() if line.startswith("| natural-sup "))
    target = next(line for line in as_cifar.splitlines() if line.startswith("| target-mae "))
    assert "(in-domain)" in natural and "(in-domain)" in target
    assert "(in-domain)" not in as_cifar.split("| sigma-mae ")[1].split("\n")[0]
    summary = (out / "summary.md").read_text()
    assert "budget `smoke` (variant: `--val-per-class 2`), fine-tuning seeds 0," in summary
    assert "fractaldb pretrain mae" in summary
    figures = json.loads((out / "transfer.json").read_text())
    sigma = next(r for r in figures["results"]["flowers12"] if r["arm"] == "sigma-mae")
    assert sigma["seeds"] == [0] and len(sigma["last"]) == len(sigma["train"]) == 1
    assert sigma["img_size"] == 48  # the flowers recipe's resolution, not pre-training's 32
    assert len(sigma["curve"]) == 1  # validation top-1 per fine-tuning epoch (1 epoch here)
    probe = json.loads((out / "probe" / "flowers12" / "sigma-mae" / "probe.json").read_text())
    assert probe["init_summary"]["loaded"] > 0 and probe["test_samples"] == 2 * 3
    for family in ("visualatom", "rcdb"):
        cats = json.loads((out / "data" / f"{family}-4.json").read_text())
        assert cats["sampler"] == family
        assert (out / "data" / f"{family}-4x16-32px" / "manifest.json").is_file()
    for arm in CONTOUR:
        run = json.loads(
            (out / "finetune" / "flowers12" / arm / "seed0" / "results.json").read_text()
        )
        assert Path(run["init"]["source"]).name == arm and run["init"]["loaded"] > 0
    assert "- visualatom-sup: too few runs to compare with fractaldb-sup" in summary


def test_compute_curve_reads_a_real_run(smoke_run, tmp_path, capsys):
    from benchmarks import compute_curve

    out, _ = smoke_run
    assert compute_curve.main([str(out), "--out", str(tmp_path / "c"), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out.splitlines()[-1])["compute_curve"]["flowers12"]
    run = json.loads((out / "transfer.json").read_text())["results"]["flowers12"]
    assert set(figures) == {r["arm"] for r in run}
    sigma = next(r for r in run if r["arm"] == "sigma-mae")
    assert figures["sigma-mae"]["1"]["mean"] == pytest.approx(sigma["last"][0])
    assert figures["sigma-mae"]["1"]["linear"] == pytest.approx(sigma["linear"])
    assert (tmp_path / "c" / "compute-curve-flowers12.png").is_file()


def test_controls_never_see_the_validation_photos(smoke_run):
    out, _ = smoke_run
    # target-mae packs the downstream training split only (4 flowers per class, 2 held out)
    target = json.loads((out / "data" / "target-flowers12" / "packed.json").read_text())
    assert target["samples_per_class"] == [2, 2, 2]
    # natural-* pre-train on CIFAR-10 photos minus its validation part (5 per class, 2 held out)
    natural = json.loads((out / "data" / "natural" / "packed.json").read_text())
    assert natural["samples_per_class"] == [3] * 10
    for arm in ("target-mae-flowers12", "natural-sup", "mae-then-sup"):
        assert (out / "pretrain" / arm / "model.safetensors").exists()


def test_arms_share_the_recipe_and_differ_only_in_init(smoke_run):
    out, _ = smoke_run
    for dataset, classes, img in (("flowers12", 3, 48),):
        runs = {
            (a, s): json.loads(
                (out / "finetune" / dataset / a / f"seed{s}" / "results.json").read_text()
            )
            for a in CORE
            for s in (0,)
        }
        for (arm, _), r in runs.items():
            assert r["epochs_done"] == 1 and r["img_size"] == img
            assert r["num_classes"] == classes and "last 2 per class" in r["dataset_splits"]["test"]
            assert r["init"]["kind"] == ("scratch" if arm == "scratch" else "run")
            assert 0.0 <= r["history"][-1]["train_top1"] <= 100.0
            if arm != "scratch":
                assert r["init"]["loaded"] > 0 and Path(r["init"]["source"]).name.startswith(arm)
        same = ("recipe", "model", "model_args", "img_size", "batch_size", "lr", "normalize")
        for key in same:
            assert len({json.dumps(r[key], sort_keys=True) for r in runs.values()}) == 1, key
    # the photos went to a temporary folder, not into the output or the repository
    assert not list(out.rglob("*.jpg"))
    assert not (Path(__file__).parents[1] / "train").exists()


def test_rerun_skips_finished_steps(script, smoke_run, capsys, in_process_steps):
    out, argv = smoke_run
    before = (out / "finetune" / "flowers12" / "scratch" / "seed0" / "results.json").read_text()
    assert script.main(argv) == 0
    printed = capsys.readouterr().out
    assert "+ fractaldb" not in printed
    commands = json.loads((out / "transfer.json").read_text())["commands"]
    assert printed.count("# skip (done:") == len(commands)
    assert "extracting" not in printed
    after = (out / "finetune" / "flowers12" / "scratch" / "seed0" / "results.json").read_text()
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


def test_parallel_arms_overlap_independent_steps_and_keep_dependencies(
    data_dir, tmp_path, monkeypatch
):
    from benchmarks import steps as step_runner

    fresh = load_script()
    record: list = []
    done_of = {}

    def fake_launch(args):
        done = done_of[" ".join(args)]
        return Sleeper(done, 0.15, record)

    monkeypatch.setattr(step_runner, "launch", fake_launch)
    argv = ["--budget", "smoke", "--out", str(tmp_path / "o"), "--data-dir", str(data_dir)]
    argv += ["--dataset", "flowers12", "--ft-seeds", "0", "1", "--parallel-arms", "3"]
    args = fresh.parse_args(argv)
    b = fresh.BUDGETS["smoke"]
    ds = [fresh.resolve_dataset("flowers12", b, data_dir, None)]
    natural = fresh.resolve_natural(args, b, ds)
    steps, _ = fresh.plan(args, b, ds, natural)
    assert len({s.name for s in steps}) == len(steps)  # every step planned once
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
    # scratch waits on nothing (steps start in list order as soon as their inputs exist)
    scratch = [s for s in steps if s.name.startswith(("probe-flowers12-scratch", "finetune-"))]
    assert all(s.after == () for s in scratch if "-scratch" in s.name)
    assert any(s.after for s in scratch)  # the others wait on their pre-training


def variant_plan(script, data_dir, tmp_path, *extra):
    """The smoke budget's plan for flowers12 with variant options; and the parsed args."""
    argv = ["--budget", "smoke", "--out", str(tmp_path / "o"), "--data-dir", str(data_dir)]
    args = script.parse_args([*argv, "--dataset", "flowers12", "--ft-seeds", "0", "1", *extra])
    b = script.with_variant(script.BUDGETS["smoke"], args.sup_epochs, args.ft_img_size, args.scale)
    ds = [script.resolve_dataset("flowers12", b, data_dir, None)]
    return script.plan(args, b, ds, script.resolve_natural(args, b, ds)), args


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
    assert arms == ["scratch"] and all(s.name.startswith(("finetune-", "probe-")) for s in steps)
    (steps, arms), _ = variant_plan(script, data_dir, tmp_path, "--arms", "mae-then-sup")
    names = [s.name for s in steps]  # its init arm is pre-trained first, not fine-tuned
    assert names.index("pretrain-sigma-mae") < names.index("pretrain-mae-then-sup")
    assert arms == ["mae-then-sup"] and "finetune-flowers12-sigma-mae-0" not in names
    init = next(s for s in steps if s.name == "pretrain-mae-then-sup").args
    assert f"init_weights={tmp_path / 'o' / 'pretrain' / 'sigma-mae'}" in init
    (steps, arms), _ = variant_plan(script, data_dir, tmp_path, "--arms", "core")
    assert arms == list(CORE)


def test_scale_multiplies_every_pretraining_and_nothing_else(script, data_dir, tmp_path):
    b = script.BUDGETS["smoke"]
    (base, _), _ = variant_plan(script, data_dir, tmp_path, "--arms", "core")
    (scaled, _), args = variant_plan(script, data_dir, tmp_path, "--arms", "core", "--scale", "4")
    for old, new in zip(base, scaled, strict=True):
        if new.args[0] == "pretrain":
            epochs = b.pre_epochs if new.args[1] == "supervised" else b.mae_epochs
            assert option(new.args, "--epochs") == str(4 * epochs)
            assert option(new.args, "--samples-per-epoch") == option(
                old.args, "--samples-per-epoch"
            )
        else:
            assert new.args == old.args
    assert script.variant_flags(args) == ["--arms", "core", "--scale", "4"]


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
        elif new.args[0] in ("finetune", "probe"):
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

    from benchmarks import steps

    monkeypatch.setattr(steps, "launch", fake_launch)
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
        (["--scale", "0"], "1 or more"),
        (["--equal-steps", "--sup-epochs", "3"], "fix: one"),
        (["--pt-seeds", "0", "0"], "twice"),
    ],
)
def test_bad_input_is_one_line_error(script, tmp_path, capsys, extra, message):
    rc = script.main(["--out", str(tmp_path / "o"), *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "fix:" in err and message in err


def test_missing_natural_archive_is_one_line_error(script, data_dir, tmp_path, capsys):
    only_flowers = tmp_path / "d"
    only_flowers.mkdir()
    (only_flowers / "flowers12-train-jpg.tar.gz").symlink_to(
        data_dir / "flowers12-train-jpg.tar.gz"
    )
    argv = ["--out", str(tmp_path / "o"), "--data-dir", str(only_flowers)]
    rc = script.main([*argv, "--dataset", "flowers12", "--arms", "scratch", "natural-sup"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "cifar10-train-jpg.tar.gz" in err and "fix:" in err and "natural" in err
    # without the natural arms the same command needs no CIFAR-10 archive
    steps, _ = script.plan(
        script.parse_args([*argv, "--dataset", "flowers12", "--arms", "scratch"]),
        script.BUDGETS["smoke"],
        [script.resolve_dataset("flowers12", script.BUDGETS["smoke"], only_flowers, None)],
    )
    assert steps


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


def test_fractaldb_child_process():
    from benchmarks import steps

    assert steps.fractaldb_exe()[0].endswith("fractaldb")
    assert steps.launch.__name__ == "launch"  # the smoke run's in-process launcher is undone
    assert steps.execute(["report", "/nonexistent-run"]) == 2


def test_chart_draws_groups_that_ran_only_some_arms(script, tmp_path):
    full = [{"arm": a, "last": [40.0, 42.0]} for a in CORE]
    some = [{"arm": "scratch", "last": [41.0]}, {"arm": "sigma-mae", "last": [53.0, 54.0]}]
    png = script.chart({"cpu": full, "--arms scratch sigma-mae": some}, tmp_path / "c.png")
    assert png == tmp_path / "c.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_two_sets_get_a_target_mae_each_and_share_the_natural_photos(script, data_dir, tmp_path):
    argv = ["--budget", "smoke", "--out", str(tmp_path / "o"), "--data-dir", str(data_dir)]
    args = script.parse_args([*argv, "--dataset", "cifar10", "flowers12", "--arms", "core"])
    b = script.BUDGETS["smoke"]
    dss = [script.resolve_dataset(d, b, data_dir, 2) for d in ("cifar10", "flowers12")]
    natural = script.resolve_natural(args, b, dss)
    assert natural is dss[0]  # the downstream cifar10 itself: its validation photos left out
    steps, _ = script.plan(args, b, dss, natural)
    names = [s.name for s in steps]
    assert names.count("pack-natural") == 1
    assert {"pretrain-target-mae-cifar10", "pretrain-target-mae-flowers12"} <= set(names)
    pack = next(s for s in steps if s.name == "pack-natural")
    assert pack.args[2] == script.train_root_arg(dss[0])  # its training photos only
    tune = next(s for s in steps if s.name == "finetune-flowers12-target-mae-0")
    assert option(tune.args, "--init").endswith("target-mae-flowers12")


def test_a_low_data_recipe_trains_and_packs_the_same_first_photos(script, data_dir, tmp_path):
    argv = ["--budget", "smoke", "--out", str(tmp_path / "o"), "--data-dir", str(data_dir)]
    args = script.parse_args([*argv, "--dataset", "cifar10", "--arms", "core"])
    b = script.BUDGETS["smoke"]
    assert b.finetune["cifar10"].train_per_class == 2
    dss = [script.resolve_dataset("cifar10", b, data_dir, None)]
    steps, _ = script.plan(args, b, dss, script.resolve_natural(args, b, dss))
    by_name = {s.name: s for s in steps}
    for name in ("finetune-cifar10-scratch-0", "probe-cifar10-sigma-mae"):
        assert option(by_name[name].args, "--train-per-class") == "2"
    # target-mae pre-trains on exactly the fine-tuning's training photos
    assert option(by_name["pack-target-cifar10"].args, "--per-class") == "2"
    # the natural controls keep their own count (equal to the fractal sets' images)
    assert option(by_name["pack-natural"].args, "--per-class") != "2"


def packed_photos(shards: Path) -> set[str]:
    """sha256 of every photo in a pack's tar shards (packed without resizing: the same bytes)."""
    found = set()
    for shard in shards.glob("*.tar"):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                if member.isfile() and member.name.endswith((".jpg", ".png")):
                    found.add(hashlib.sha256(tar.extractfile(member).read()).hexdigest())
    return found


def photo_hashes(paths) -> set[str]:
    return {hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}


@pytest.mark.parametrize(
    "dataset, val_per_class",
    # the recipe's count (flowers12: 1), a count given, a fraction (cifar10 smoke, with
    # --train-per-class 2; an image folder), each with the natural photos' own split
    [("flowers12", None), ("flowers12", 2), ("cifar10", None), ("folder", None)],
)
def test_no_held_out_photo_reaches_a_pretraining_pack(
    script, data_dir, tmp_path, in_process_steps, dataset, val_per_class
):
    from finetune.datasets import build_datasets

    spec = str(data_dir / "f" / "flowers12" / "train") if dataset == "folder" else dataset
    argv = ["--budget", "smoke", "--out", str(tmp_path / "o"), "--data-dir", str(data_dir)]
    argv += ["--dataset", spec, "--arms", "target-mae", "natural-mae"]
    argv += [] if val_per_class is None else ["--val-per-class", str(val_per_class)]
    args = script.parse_args(argv)
    b = script.BUDGETS["smoke"]
    dss = [script.resolve_dataset(spec, b, data_dir, args.val_per_class)]
    natural = script.resolve_natural(args, b, dss)
    photo_sets = dss + ([natural] if natural is not dss[0] else [])
    steps, _ = script.plan(args, b, dss, natural)
    (tmp_path / "photos").mkdir()
    script.extract_needed(steps, photo_sets, tmp_path / "photos")
    steps, _ = script.plan(args, b, dss, natural)
    script.run_steps([s for s in steps if s.name.startswith("pack-")])

    def split(ds, cmd):  # the fine-tune's own split of the options it is given
        kw = {"val_per_class": int(option(cmd, "--val-per-class"))} if "--val-per-class" in cmd \
            else {"val_split": float(option(cmd, "--val-split"))}  # fmt: skip
        if "--train-per-class" in cmd:
            kw["train_per_class"] = int(option(cmd, "--train-per-class"))
        data = build_datasets("folder", ds.root, **kw)
        paths = [[p for p, _ in part.dataset.samples] for part in (data.train, data.test)]
        return [photo_hashes(ps[i] for i in part.indices)
                for ps, part in zip(paths, (data.train, data.test), strict=True)]  # fmt: skip

    tune = next(s.args for s in steps if s.args[0] == "finetune")
    train, held = split(dss[0], tune)
    target = packed_photos(tmp_path / "o" / "data" / f"target-{dss[0].name}")
    assert held and not target & held
    assert target == train  # exactly the photos the fine-tune trains on
    natural_train, natural_held = split(natural, ["x", *natural.split_args()])
    packed = packed_photos(tmp_path / "o" / "data" / "natural")
    assert natural_held and packed and not packed & natural_held
    if natural is dss[0]:
        assert not packed & held


def test_the_duplicate_flowers12_photo_leaves_validation(script, tmp_path):
    from PIL import Image

    src = tmp_path / "src" / "flowers12" / "train"
    for i, (cls, name) in enumerate(
        [("iris", "image_0422.jpg"), ("iris", "image_0469.jpg"), ("daisy", "image_0001.jpg")]
    ):
        (src / cls).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (i, 0, 0)).save(src / cls / name)
    tar = tmp_path / "flowers12-train-jpg.tar.gz"
    with tarfile.open(tar, "w:gz") as t:
        t.add(tmp_path / "src" / "flowers12", arcname="flowers12")
    recipe = script.BUDGETS["smoke"].finetune["flowers12"]
    (tmp_path / "x").mkdir()
    root = script.prepare(script.Downstream("flowers12", tar, recipe, 1), tmp_path / "x")
    assert sorted(p.name for p in (root / "iris").iterdir()) == ["image_0422.jpg"]
    # a user's own folder is never changed
    folder = script.prepare(script.Downstream("flowers12", src, recipe, 1), tmp_path / "y")
    assert (folder / "iris" / "image_0469.jpg").is_file()


def test_welch_matches_scipy_and_claims_follow_the_interval(script):
    # constants from scipy.stats.ttest_ind(a, b, equal_var=False) and its confidence_interval
    a, b = [75.0, 74.4, 76.1, 73.9, 74.7, 75.6], [71.7, 69.4, 71.1]
    d = script.welch(a, b)
    assert d.p == pytest.approx(0.012233741400161981, rel=1e-9)
    assert d.df == pytest.approx(2.945443075715305, rel=1e-9)
    assert (d.low, d.high) == (pytest.approx(1.7639926989279364), pytest.approx(6.669340634405373))
    assert d.differs and script.claim("target-mae", d).startswith("target-mae: above scratch")
    d = script.welch([72.8, 72.8, 65.6], b)
    assert d.p == pytest.approx(0.9044687888712836, rel=1e-9)
    assert (d.low, d.high) == (pytest.approx(-9.751164970253024), pytest.approx(9.084498303586338))
    assert not d.differs and "no difference from scratch" in script.claim("sigma-sup", d)
    assert script.welch([70.0], b) is None and script.welch([1.0, 1.0], [1.0, 1.0]) is None
    assert "too few runs" in script.claim("x", None)


def test_flops_match_torch_flop_counter(script):
    import timm
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from pretrain.mae import MaskedAutoencoder

    b = script.BUDGETS["smoke"]  # patch 8, depth 1, width 32, 2 heads, 32 px; decoder 32 x 1
    dims = {"patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2}
    x = torch.zeros(1, 3, b.img_size, b.img_size)
    sup = timm.create_model(script.MODEL, img_size=b.img_size, num_classes=4, **dims)
    dim, depth, heads = b.mae_decoder
    mae = MaskedAutoencoder(script.MODEL, b.img_size, model_args=dims, decoder_dim=dim,
                            decoder_depth=depth, decoder_heads=heads)  # fmt: skip
    for model, kind in ((sup, "sup"), (mae, "mae")):
        with FlopCounterMode(display=False) as counter:
            model(x)
        assert script.forward_flops(b, kind, 4) == pytest.approx(counter.get_total_flops()), kind
    cost = script.pretrain_cost(b, "mae", 2, 64, 16)
    assert (cost.steps, cost.images) == (8, 128)
    assert cost.flops == pytest.approx(3 * 128 * script.forward_flops(b, "mae"))


def test_contour_sets_render_their_family_as_the_fractaldb_set(script, data_dir, tmp_path):
    (steps, arms), _ = variant_plan(script, data_dir, tmp_path, "--arms", "contour")
    assert arms == list(CONTOUR)
    by_name = {s.name: s.args for s in steps}
    b = script.BUDGETS["smoke"]
    for family in ("visualatom", "rcdb"):
        search, render = by_name[f"search-{family}"], by_name[f"render-{family}"]
        assert option(search, "--sampler") == family and option(search, "-k") == str(b.categories)
        assert "--set" not in search  # fractaldb's min_fill is no contour setting
        assert option(render, "--preset") == f"{family}-1k"
        assert option(render, "--categories") == option(search, "--out")
        assert option(render, "--instances-per-category") == str(b.instances)
        assert option(render, "--image-size") == str(b.render_size)
        assert "--points" not in render and "--mode" not in render  # IFS settings only
    # the same pre-training as fractaldb-sup (supervised) and sigma-mae (MAE), other data
    (base, _), _ = variant_plan(script, data_dir, tmp_path, "--arms", "fractaldb-sup", "sigma-mae")
    base_args = {s.name: s.args for s in base}

    def without_data(args):
        i = args.index("--data")
        return args[:i] + args[i + 2 :]

    pairs = [("visualatom-sup", "fractaldb-sup"), ("rcdb-sup", "fractaldb-sup"),
             ("visualatom-mae", "sigma-mae")]  # fmt: skip
    for arm, like in pairs:
        ours, theirs = by_name[f"pretrain-{arm}"], base_args[f"pretrain-{like}"]
        assert option(ours, "--data").endswith(f"{arm.split('-')[0]}-4x16-32px")
        assert without_data(ours)[:-2] == without_data(theirs)[:-2]  # all but --out
    fdb = script.fractal_sets(b)["fractaldb"]
    for family in ("visualatom", "rcdb"):
        f = script.fractal_sets(b)[family]
        assert (f.classes, f.instances, f.render_scale) == (fdb.classes, fdb.instances, 1)


def test_contour_arms_are_compared_with_fractaldb_sup(script, tmp_path):
    def runs(values):
        return {f"shared/pt{i // 3}/ft{i % 3}": {"last": v, "best": v, "train": 50.0,
                                                 "curve": [v], "img_size": 64, "epochs": 1}
                for i, v in enumerate(values)}  # fmt: skip

    doc = {"arms": {
        "scratch": {"runs": runs([60.0, 61.0, 59.0])},
        "fractaldb-sup": {"runs": runs([64.0, 65.0, 63.0, 64.5, 63.5, 64.0])},
        "visualatom-sup": {"runs": runs([67.0, 68.0, 66.0, 67.5, 66.5, 67.0])},
        "rcdb-sup": {"runs": runs([64.0])},  # one run: too few to compare
    }}  # fmt: skip
    versus = {a: "fractaldb-sup" for a in CONTOUR}
    rows = {r["arm"]: r for r in script.summarize(doc, list(doc["arms"]), versus)}
    va = rows["visualatom-sup"]
    expect = script.welch(va["last"], rows["fractaldb-sup"]["last"])
    assert va["versus"] == {"arm": "fractaldb-sup", "diff": expect.as_dict()}
    assert va["versus"]["diff"]["diff"] == pytest.approx(3.0)
    assert rows["rcdb-sup"]["versus"] == {"arm": "fractaldb-sup", "diff": None}
    assert rows["fractaldb-sup"]["versus"] is None and rows["scratch"]["versus"] is None
    table = script.markdown(list(rows.values()))
    header = [c.strip() for c in table.splitlines()[0].split("|")]
    line = next(ln for ln in table.splitlines() if ln.startswith("| visualatom-sup "))
    cell = [c.strip() for c in line.split("|")][header.index("vs fractaldb-sup [95 % CI] (p)")]
    assert cell == f"+3.00 [{expect.low:+.2f}, {expect.high:+.2f}] (p {expect.p:.3f})"
    assert all(len(ln.split("|")) == len(header) for ln in table.splitlines())
    sentences = script.claims(list(rows.values()))
    assert "- " + script.claim("visualatom-sup", expect, "fractaldb-sup") in sentences
    assert any(
        s.startswith("- rcdb-sup: too few runs to compare with fractaldb-sup") for s in sentences
    )
    # without the base arm there is nothing to compare with, and the table keeps its columns
    del doc["arms"]["fractaldb-sup"]
    rows = script.summarize(doc, list(doc["arms"]), versus)
    assert all(r["versus"] is None for r in rows) and "vs fractaldb-sup" not in script.markdown(
        rows
    )


def test_pt_seeds_pool_every_run_and_own_recipes_are_planned(script, data_dir, tmp_path):
    (steps, arms), args = variant_plan(
        script, data_dir, tmp_path, "--arms", "scratch", "sigma-mae", "fractaldb-sup",
        "--pt-seeds", "0", "1", "--own-recipes",
    )  # fmt: skip
    names = [s.name for s in steps]
    # every arm pre-trained per seed; the supervised arm also at 0.5 x and 2 x its lr
    assert {"pretrain-sigma-mae", "pretrain-sigma-mae-pt1"} <= set(names)
    sup = [s for s in steps if s.name.startswith("pretrain-fractaldb-sup")]
    lrs = sorted(float(option(s.args, "--lr")) for s in sup)
    base = script.BUDGETS["smoke"].pre_lr
    assert lrs == [base / 2] * 2 + [base] * 2 + [base * 2] * 2
    assert option(next(s for s in sup if s.name.endswith("-pt1")).args, "--seed") == "1"
    tunes = [n for n in names if n.startswith("finetune-")]
    assert len([n for n in tunes if "-scratch-" in n]) == 2  # no pre-training seed: ft only
    assert len([n for n in tunes if "-sigma-mae" in n]) == 2 * 3 * 2  # pt x (shared + 2 ld) x ft
    ld = next(s for s in steps if s.name == "finetune-flowers12-sigma-mae-ld0.65-pt1-1")
    assert "layer_decay=0.65" in ld.args and "global_pool=avg" in ld.args
    assert option(ld.args, "--init").endswith("pretrain/sigma-mae-pt1")
    assert not [n for n in tunes if "fractaldb-sup-ld" in n]


def test_pooled_table_states_cost_interval_and_the_own_choice(script):
    def runs(values, column="shared", pts=(0, 1)):
        it = iter(values)
        return {f"{column}/pt{p}/ft{f}": {"last": next(it), "best": 99.0, "train": 50.0,
                                          "curve": [10.0, 20.0], "img_size": 48, "epochs": 2}
                for p in pts for f in range(len(values) // len(pts))}  # fmt: skip

    cost = {"steps": 500, "images": 32000, "flops": 1.5e12}
    doc = {"arms": {
        "sigma-mae": {"saw": "s", "cost": cost, "runs": {
            **runs([75.0, 74.4, 76.1, 73.9, 74.7, 75.6]),
            **runs([70.0, 70.5, 71.0, 70.2, 69.9, 70.1], "ld0.65"),
            **runs([77.0, 77.5, 78.0, 76.2, 76.9, 77.1], "ld0.75"),
            "shared/pt0/probe": {"linear": 40.0, "knn": 30.0, "img_size": 48},
            "shared/pt1/probe": {"linear": 42.0, "knn": 32.0, "img_size": 48}}},
        "scratch": {"saw": "nothing", "cost": {"steps": 0, "images": 0, "flops": 0.0},
                    "runs": runs([71.7, 69.4, 71.1], pts=(0,))},
    }}  # fmt: skip
    rows = script.summarize(doc, ["scratch", "sigma-mae"])
    assert [r["arm"] for r in rows] == ["scratch", "sigma-mae"]
    sigma = rows[1]
    assert sigma["n"] == "2 x 3" and len(sigma["last"]) == 6 and sigma["linear"] == 41.0
    assert sigma["vs_scratch"]["p"] == pytest.approx(0.012233741400161981, rel=1e-9)
    assert sigma["own"]["column"] == "ld0.75"  # the better candidate on validation
    table = script.markdown(rows)
    header = [c.strip() for c in table.splitlines()[0].split("|")]
    row = [c.strip() for c in table.splitlines()[3].split("|")]
    assert "best epoch" not in table  # optimistic: the JSON keeps it, the table does not
    assert row[header.index("pre-training steps")] == "500"
    assert row[header.index("images seen")] == "32,000"
    assert row[header.index("train FLOPs")] == "1.50e+12"
    assert row[header.index("vs scratch [95 % CI]")] == "+4.22 [+1.76, +6.67]"
    assert row[header.index("p")] == "0.012"
    assert row[header.index("own recipe (chosen on val)")] == (
        "77.12 ± 0.60 (ld0.75) +6.38 [+3.79, +8.98]"
    )
    assert script.claims(rows) == [
        "- sigma-mae: above scratch (+4.22 points, 95 % CI +1.76 to +6.67, p 0.012)."
    ]


def test_equal_steps_gives_supervised_arms_the_mae_epochs(script, data_dir, tmp_path):
    from dataclasses import replace

    b = replace(script.BUDGETS["smoke"], mae_epochs=3)
    assert script.with_variant(b, None, None, 2, equal_steps=True).pre_epochs == 6
    (steps, _), args = variant_plan(script, data_dir, tmp_path, "--arms", "core", "--equal-steps")
    epochs = {option(s.args, "--epochs") for s in steps if s.args[0] == "pretrain"}
    assert epochs == {str(script.BUDGETS["smoke"].mae_epochs)}
    assert script.figure_flags(args) == ["--equal-steps"]


def test_practitioner_arms_start_from_their_fractal_arm_at_equal_steps(script, smoke_run):
    out, _ = smoke_run
    for arm in ("sigma-mae+target-mae", "fractaldb-sup+target-mae", "target-mae-long"):
        assert (out / "pretrain" / f"{arm}-flowers12" / "model.safetensors").exists()
        run = json.loads(
            (out / "finetune" / "flowers12" / arm / "seed0" / "results.json").read_text()
        )
        assert Path(run["init"]["source"]).name == f"{arm}-flowers12" and run["init"]["loaded"] > 0
    config = (out / "pretrain" / "sigma-mae+target-mae-flowers12" / "config.yaml").read_text()
    assert str(out / "pretrain" / "sigma-mae") in config  # initialised from the fractal MAE
    rows = {
        r["arm"]: r for r in json.loads((out / "transfer.json").read_text())["results"]["flowers12"]
    }
    # the equal-cost control spends what the two-stage arm spends
    assert rows["target-mae-long"]["cost"] == rows["sigma-mae+target-mae"]["cost"]
    assert rows["target-mae-long"]["cost"]["steps"] == 2 * rows["target-mae"]["cost"]["steps"]


def test_results_json_round_trips_and_a_second_checkout_skips_what_it_holds(
    script, smoke_run, tmp_path, capsys, in_process_steps
):
    from benchmarks import compute_curve

    out, argv = smoke_run
    results = Path(argv[argv.index("--results-dir") + 1])
    path = results / "transfer-smoke-flowers12-val-per-class-2.json"
    doc = json.loads(path.read_text())
    assert doc["commit"] and doc["invocations"][0]["command"].startswith("python -m")
    assert doc["invocations"][0]["minutes"] >= 0 and doc["invocations"][0]["fractaldb_commands"]
    assert script.results.load(path, "smoke", ["--val-per-class", "2"]) == doc
    assert doc["arms"]["sigma-mae"]["runs"]["shared/pt0/ft0"]["last"] >= 0
    assert doc["arms"]["sigma-mae"]["cost"]["flops"] > 0
    # another checkout: no run folders, the same results file
    fresh = argv.copy()
    fresh[fresh.index("--out") + 1] = str(tmp_path / "elsewhere")
    capsys.readouterr()
    assert script.main(fresh) == 0
    printed = capsys.readouterr().out
    assert "+ fractaldb" not in printed and "extracting" not in printed
    assert f"# skip {len(doc['arms']) * 2} runs held by" in printed  # a fine-tune and a probe each
    assert not (tmp_path / "elsewhere" / "pretrain").exists()
    table = (tmp_path / "elsewhere" / "results-flowers12.md").read_text()
    assert table == (out / "results-flowers12.md").read_text()
    again = json.loads(path.read_text())
    assert again["arms"] == doc["arms"]
    assert len(again["invocations"]) == len(doc["invocations"]) + 1
    # compute_curve reads the results file as a run
    assert compute_curve.main([str(path), "--out", str(tmp_path / "c"), "--json"]) == 0
    curve = json.loads(capsys.readouterr().out.splitlines()[-1])["compute_curve"]["flowers12"]
    assert curve["sigma-mae"]["1"]["mean"] == pytest.approx(
        doc["arms"]["sigma-mae"]["runs"]["shared/pt0/ft0"]["last"]
    )


def test_a_results_file_of_another_variant_is_refused_in_one_line(script, tmp_path, capsys):
    path = script.results.results_path(tmp_path, "smoke", "flowers12", [])
    path.write_text(json.dumps({"budget": "smoke", "variant": ["--scale", "4"], "arms": {}}))
    with pytest.raises(script.BadInput, match="another --results-dir, or delete it"):
        script.results.load(path, "smoke", [])
    path.write_text("{")
    with pytest.raises(script.BadInput, match="not readable JSON"):
        script.results.load(path, "smoke", [])


def test_curve_chart_gives_every_arm_its_own_style(script, tmp_path):
    names = script.arm_names(script.BUDGETS["smoke"])
    styles = script.arm_styles(names)
    assert len({(s["color"], s.get("linestyle", "-")) for s in styles.values()}) == len(names)
    assert styles["scratch"]["color"] == "black"
    rows = [{"arm": a, "curve": [10.0, 20.0], "curves": [[9.0, 19.0], [11.0, 21.0]]} for a in names]
    png = script.curve_chart("flowers12", rows, tmp_path / "c.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_unreadable_results_file_stops_before_anything_is_written(
    script, data_dir, tmp_path, capsys
):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "transfer-smoke-flowers12.json").write_text("{")
    argv = ["--out", str(tmp_path / "o"), "--data-dir", str(data_dir), "--dataset", "flowers12"]
    rc = script.main([*argv, "--arms", "scratch", "--results-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "fix: restore or delete it" in err
    assert not (tmp_path / "o").exists()
