"""The plan: every restartable step (search, render, pack, pre-train, probe, fine-tune) of the
chosen arms, with its dependencies; benchmarks/steps.py runs them and skips finished ones."""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.steps import Step, sets
from benchmarks.transfer.arms import Arm, arms_of, fractal_sets
from benchmarks.transfer.budgets import MODEL, Budget, engine_args, n_images
from benchmarks.transfer.downstream import BadInput, Downstream, root_arg, train_root_arg


def data_steps(b: Budget, out: Path, seed: int, need: set[str]) -> tuple[list[Step], dict]:
    """Search and render steps of the fractal sets in `need`; and {set: (shards, step, cats)}."""
    steps: list[Step] = []
    made: dict[str, tuple[Path, str, Path]] = {}
    data = out / "data"
    sets_ = fractal_sets(b)
    searched: dict[str, tuple[Path, str]] = {}
    wanted = [n for n in sets_ if n in need]
    for name in dict.fromkeys(sets_[n].categories_of or n for n in wanted):
        f = sets_[name]
        cats = data / f"{name}-{f.classes}.json"
        search = ["search", "-k", str(f.classes), "--sampler", f.sampler, "--seed", "1"]
        if f.perturb is not None:
            search += ["--perturb", f"{f.perturb:g}"]
        search += [*sets(f.search_sets), "--out", str(cats)]
        steps.append(Step(f"search-{name}", search, cats))
        searched[name] = (cats, f"search-{name}")
    for name in wanted:
        f = sets_[name]
        cats, search_step = searched[f.categories_of or name]
        size, points = b.render_size * f.render_scale, b.points * f.render_scale**2
        shards = data / f"{name}-{f.classes}x{f.instances}-{size}px"
        render = ["render", "--preset", f.preset, "--categories", str(cats)]
        render += ["--instances-per-category", str(f.instances), "--image-size", str(size)]
        render += ["--points", str(points), *f.render_opts, "--seed", str(seed), "--quiet"]
        steps.append(
            Step(f"render-{name}", render + ["--out", str(shards)], shards / "manifest.json",
                 (search_step,))
        )  # fmt: skip
        made[name] = (shards, f"render-{name}", cats)
    for name in need - set(made):  # on the fly: the categories only
        if name in searched:
            made[name] = (Path(), searched[name][1], searched[name][0])
    return steps, made


def photo_pack_step(
    name: str, ds: Downstream, out: Path, per_class: int | None
) -> tuple[Step, Path]:
    """`fractaldb shards pack` of a photo set's training photos (the fine-tune's split, linked
    by Downstream.link_training_photos): its held-out photos are not in the folder packed."""
    shards = out / "data" / name
    args = ["shards", "pack", train_root_arg(ds), "--out", str(shards)]
    if per_class is not None:
        args += ["--per-class", str(per_class)]
    args += ["--quiet"]
    return Step(f"pack-{name}", args, shards / "_info.json"), shards  # fmt: skip


def pretrain_args(
    b: Budget, arm: Arm, data: list[str], init: Path | None, common: list[str], samples: int | None
) -> list[str]:
    """The `fractaldb pretrain` command of one arm (without --out)."""
    pre = [*data, "--batch-size", str(b.pre_batch)]
    if samples or b.pre_samples_per_epoch:
        pre += ["--samples-per-epoch", str(samples or b.pre_samples_per_epoch)]
    if arm.kind == "sup":
        args = ["pretrain", "supervised", "--recipe", "deit-tiny-fractaldb", *pre]
        args += ["--epochs", str(b.pre_epochs), "--lr", str(b.pre_lr)]
        args += ["--set", f"warmup_epochs={b.pre_warmup}", *sets(b.pre_sets)]
    else:
        dim, depth, heads = b.mae_decoder
        args = ["pretrain", "mae", "--recipe", "mae-vit-tiny-fractal", *pre]
        args += ["--epochs", str(b.mae_epochs), "--lr", str(b.mae_lr)]
        args += ["--set", f"warmup_epochs={b.pre_warmup}"]
        args += ["--decoder-dim", str(dim), "--decoder-depth", str(depth)]
        args += ["--decoder-heads", str(heads), "--set", "scale=[0.35,1.0]"]
    args += sets(arm.sets)
    if init is not None:
        args += ["--set", f"init_weights={init}"]
    return args + common


def pretrain_steps(
    b: Budget,
    out: Path,
    seed: int,
    workers: int,
    chosen: list[Arm],
    dss: list[Downstream],
    natural: Downstream | None,
) -> tuple[list[Step], dict]:
    """Data and pre-training steps of the chosen arms; and {arm: {dataset: (run, step)}}
    (("scratch", "") for scratch; target-mae has its own run per dataset)."""
    by_name = {a.name: a for a in arms_of(b)}
    need = {by_name[a.init].data for a in chosen if a.init} | {a.data for a in chosen}
    steps, made_sets = data_steps(b, out, seed, need)
    common = engine_args(b, b.img_size, seed, workers)
    n = n_images(b)
    runs: dict[str, dict[str, tuple[Path | str, str]]] = {}

    made_runs: dict[str, tuple[Path, str]] = {}

    def pretrain(
        arm: Arm, run_name: str, data: list[str], after: tuple[str, ...], samples: int | None
    ) -> tuple[Path, str]:
        init = None
        if arm.init:
            init, parent_step = ensure(by_name[arm.init])
            after = (*after, parent_step)
        run = out / "pretrain" / run_name
        args = pretrain_args(b, arm, data, init, common, samples) + ["--out", str(run)]
        steps.append(Step(f"pretrain-{run_name}", args, run / "model.safetensors", after))
        return run, f"pretrain-{run_name}"

    def ensure(arm: Arm) -> tuple[Path, str]:
        """The arm's pre-training run and step, planned once (an init may ask first)."""
        if arm.name in made_runs:
            return made_runs[arm.name]
        if arm.data == "natural":
            if natural is None:
                raise BadInput(f"arm {arm.name} needs the CIFAR-10 photos (none resolved)")
            pack, shards = photo_pack_step("natural", natural, out, n // 10)
            if all(s.name != pack.name for s in steps):  # natural-sup and natural-mae share it
                steps.append(pack)
            made = pretrain(arm, arm.name, ["--data", str(shards)], (pack.name,), n)
        elif arm.on_the_fly:
            _, _, cats = made_sets[arm.data]
            data = ["--on-the-fly", str(cats), "--image-size", str(b.render_size)]
            data += ["--points", str(b.points), "--mode", "point", "--color", "gray"]
            made = pretrain(arm, arm.name, data, (f"search-{arm.data}",), n)
        else:
            shards, render_step, _ = made_sets[arm.data]
            made = pretrain(arm, arm.name, ["--data", str(shards)], (render_step,), None)
        made_runs[arm.name] = made
        return made

    for arm in chosen:
        if arm.kind == "scratch":
            runs[arm.name] = {ds.name: ("scratch", "") for ds in dss}
        elif arm.data == "target":
            runs[arm.name] = {}
            for ds in dss:
                # the fine-tuning's training photos exactly (the same first N of each class)
                pack, shards = photo_pack_step(
                    f"target-{ds.name}", ds, out, ds.recipe.train_per_class
                )
                steps.append(pack)
                runs[arm.name][ds.name] = pretrain(
                    arm, f"{arm.name}-{ds.name}", ["--data", str(shards)], (pack.name,), n
                )
        else:
            runs[arm.name] = {ds.name: ensure(arm) for ds in dss}
    return steps, runs


def ft_run(out: Path, dataset: str, arm: str, seed: int) -> Path:
    """Run folder of one fine-tune."""
    return out / "finetune" / dataset / arm / f"seed{seed}"


def finetune_steps(
    b: Budget, out: Path, ds: Downstream, runs: dict, ft_seeds: list[int], workers: int
) -> list[Step]:
    """One frozen-feature probe per arm (k-NN and linear; deterministic, so no seeds: cheap,
    first), then one fine-tune per (seed, arm) with the dataset's recipe; seed-major, so that
    an interrupted run has every arm at the first seeds."""
    r = ds.recipe
    steps = []
    data = ["--dataset", "folder", "--data-root", root_arg(ds), *ds.split_args()]
    for arm, per_dataset in runs.items():
        init, after = per_dataset[ds.name]
        folder = probe_run(out, ds.name, arm)
        pr = ["probe", *data, "--init", str(init), "--recipe", r.recipe]
        pr += ["--model", MODEL, "--img-size", str(r.img_size)]
        pr += [x for a in b.model_args for x in ("--model-arg", a)]
        pr += ["--device", b.device, "--workers", str(workers), "--batch-size", "256"]
        deps = (after,) if after else ()
        steps.append(
            Step(f"probe-{ds.name}-{arm}", [*pr, "--out", str(folder)], folder / "probe.json",
                 deps)
        )  # fmt: skip
    for seed in ft_seeds:
        for arm, per_dataset in runs.items():
            init, after = per_dataset[ds.name]
            run = ft_run(out, ds.name, arm, seed)
            ft = ["finetune", *data, "--init", str(init), "--recipe", r.recipe]
            ft += ["--epochs", str(r.epochs), "--batch-size", str(r.batch), "--lr", str(r.lr)]
            ft += ["--set", f"warmup_epochs={r.warmup}", *sets(r.sets)]
            if r.samples_per_epoch:
                ft += ["--samples-per-epoch", str(r.samples_per_epoch)]
            ft += engine_args(b, r.img_size, seed, workers) + ["--out", str(run)]
            deps = (after,) if after else ()
            steps.append(
                Step(f"finetune-{ds.name}-{arm}-{seed}", ft, run / "model.safetensors", deps)
            )
    return steps


def probe_run(out: Path, dataset: str, arm: str) -> Path:
    """Folder of one arm's frozen-feature probe on a dataset."""
    return out / "probe" / dataset / arm


def chosen_arms(args: argparse.Namespace, b: Budget) -> list[Arm]:
    """The arms --arms names (arm names or the groups `core` / `variant`), in table order."""
    arms = arms_of(b)
    if not args.arms:
        return arms
    return [a for a in arms if a.name in args.arms or a.group in args.arms]


def plan(
    args: argparse.Namespace, b: Budget, dss: list[Downstream], natural: Downstream | None = None
) -> tuple[list[Step], list[str]]:
    """Every step of the benchmark, in the order a single worker runs them; and the arms."""
    workers = max(0, b.workers // max(1, args.parallel_arms)) if b.workers else 0
    chosen = chosen_arms(args, b)
    steps, runs = pretrain_steps(b, args.out, args.seed, workers, chosen, dss, natural)
    for ds in dss:
        steps += finetune_steps(b, args.out, ds, runs, args.ft_seeds, workers)
    return steps, [a.name for a in chosen]
