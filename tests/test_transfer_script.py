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
    # one downstream set keeps the 18 arms within CI time; several sets are planned below
    argv += ["--dataset", "flowers12", "--ft-seeds", "0", "--json", "--val-per-class", "2"]
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
    assert set(CORE) < set(arms) and len(arms) == 18
    for dataset in ("flowers12",):
        table = (out / f"results-{dataset}.md").read_text().splitlines()
        header = [c.strip() for c in table[0].split("|")]
        assert "linear probe" in header and "k-NN" in header and "pre-training saw" in header
        rows = {row.split("|")[1].strip(): row.split("|") for row in table[2:]}
        assert sorted(rows) == sorted(arms)
        for arm, row in rows.items():
            assert row[-2].strip().startswith("1: ")  # one fine-tuning seed
            linear, knn = float(row[header.index("linear probe")]), float(row[header.index("k-NN")])
            assert 0.0 <= linear <= 100.0 and 0.0 <= knn <= 100.0, arm
        assert "(in-domain)" not in rows["natural-sup"][2]
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
    assert "budget `smoke`, fine-tuning seeds 0," in summary and "fractaldb pretrain mae" in summary
    figures = json.loads((out / "transfer.json").read_text())
    sigma = next(r for r in figures["results"]["flowers12"] if r["arm"] == "sigma-mae")
    assert sigma["seeds"] == [0] and len(sigma["last"]) == len(sigma["train"]) == 1
    assert sigma["img_size"] == 48  # the flowers recipe's resolution, not pre-training's 32
    assert len(sigma["curve"]) == 1  # validation top-1 per fine-tuning epoch (1 epoch here)
    probe = json.loads((out / "probe" / "flowers12" / "sigma-mae" / "probe.json").read_text())
    assert probe["init_summary"]["loaded"] > 0 and probe["val_samples"] == 2 * 3


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
