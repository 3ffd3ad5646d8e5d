"""The plan: every restartable step (search, render, pack, pre-train, probe, fine-tune) of the
chosen arms, with its dependencies; benchmarks/steps.py runs them and skips finished ones."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.steps import Step, sets
from benchmarks.transfer.arms import Arm, arms_of, fractal_sets
from benchmarks.transfer.budgets import (
    LAYER_DECAYS,
    MODEL,
    PRE_LR_FACTORS,
    Budget,
    engine_args,
    n_images,
)
from benchmarks.transfer.cost import NO_COST, Cost, pretrain_cost
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
        if not f.contour:  # a contour image is drawn whole: there is no point count
            render += ["--points", str(points)]
        render += [*f.render_opts, "--seed", str(seed), "--quiet"]
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


@dataclass(frozen=True)
class Unit:
    """One measured run the report reads: a fine-tune or (ft None) a frozen-feature probe.
    `column` "" is the shared recipe; "ld0.65", "plr2", ...: a method's own choice."""

    dataset: str
    arm: str
    column: str
    pt: int
    ft: int | None
    folder: Path
    step: str

    @property
    def key(self) -> str:
        """Its name in the results JSON (the same in every checkout)."""
        run = "probe" if self.ft is None else f"ft{self.ft}"
        return f"{self.column or 'shared'}/pt{self.pt}/{run}"


@dataclass
class Plan:
    """Every step, the arms in table order, the runs they measure and each arm's pre-training
    cost; unpacks as (steps, arms)."""

    steps: list[Step]
    arms: list[str]
    units: list[Unit] = field(default_factory=list)
    costs: dict[str, Cost] = field(default_factory=dict)

    def __iter__(self) -> Iterator:
        """(steps, arms), as plan() returned before it returned a Plan."""
        return iter((self.steps, self.arms))


def suffix(pt: int, base_seed: int, tag: str = "") -> str:
    """Run-name suffix of a pre-training seed and variant: none for the base seed, so that
    runs made before --pt-seeds keep their folders."""
    return (f"-{tag}" if tag else "") + ("" if pt == base_seed else f"-pt{pt}")


def pretrain_args(
    b: Budget,
    arm: Arm,
    data: list[str],
    init: Path | None,
    common: list[str],
    samples: int | None,
    lr: float | None = None,
) -> list[str]:
    """The `fractaldb pretrain` command of one arm (without --out); `lr` replaces the budget's."""
    pre = [*data, "--batch-size", str(b.pre_batch)]
    if samples or b.pre_samples_per_epoch:
        pre += ["--samples-per-epoch", str(samples or b.pre_samples_per_epoch)]
    if arm.kind == "sup":
        args = ["pretrain", "supervised", "--recipe", "deit-tiny-fractaldb", *pre]
        args += ["--epochs", str(b.pre_epochs * arm.epochs_x), "--lr", str(lr or b.pre_lr)]
        args += ["--set", f"warmup_epochs={b.pre_warmup}", *sets(b.pre_sets)]
    else:
        dim, depth, heads = b.mae_decoder
        args = ["pretrain", "mae", "--recipe", "mae-vit-tiny-fractal", *pre]
        args += ["--epochs", str(b.mae_epochs * arm.epochs_x), "--lr", str(lr or b.mae_lr)]
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
    pt_seeds: list[int] | None = None,
    own: bool = False,
) -> tuple[list[Step], dict, dict[str, Cost]]:
    """Data and pre-training steps of the chosen arms (one per pre-training seed, and with
    `own` the supervised arms' lr sweep); {arm: {dataset: {(pt, tag): (run, step)}}}
    (("scratch", "") for scratch; target arms have their own runs per dataset); and each
    arm's pre-training cost, the pre-training it starts from included."""
    by_name = {a.name: a for a in arms_of(b)}
    need = {by_name[a.init].data for a in chosen if a.init} | {a.data for a in chosen}
    steps, made_sets = data_steps(b, out, seed, need)
    sets_ = fractal_sets(b)
    n = n_images(b)
    pts = pt_seeds or [seed]
    runs: dict[str, dict[str, dict[tuple[int, str], tuple[Path | str, str]]]] = {}
    costs: dict[str, Cost] = {}
    made: dict[tuple, tuple[Path, str]] = {}

    def cost_of(arm: Arm, samples: int) -> Cost:
        epochs = (b.pre_epochs if arm.kind == "sup" else b.mae_epochs) * arm.epochs_x
        classes = 10 if arm.data == "natural" else getattr(sets_.get(arm.data), "classes", 0)
        own_cost = pretrain_cost(b, arm.kind, epochs, samples, b.pre_batch, classes)
        return own_cost + (costs[arm.init] if arm.init else NO_COST)

    def pretrain(
        arm: Arm, name: str, data: list[str], after: tuple[str, ...], samples: int | None,
        pt: int, tag: str = "", lr: float | None = None,
    ) -> tuple[Path, str]:  # fmt: skip
        init = None
        if arm.init:
            init, parent_step = ensure(by_name[arm.init], pt)
            after = (*after, parent_step)
        run = out / "pretrain" / (name + suffix(pt, seed, tag))
        common = engine_args(b, b.img_size, pt, workers)
        args = pretrain_args(b, arm, data, init, common, samples, lr) + ["--out", str(run)]
        steps.append(Step(f"pretrain-{run.name}", args, run / "model.safetensors", after))
        if arm.name not in costs:
            size = samples or b.pre_samples_per_epoch
            if size is None:
                size = sets_[arm.data].classes * sets_[arm.data].instances
            costs[arm.name] = cost_of(arm, size)
        return run, f"pretrain-{run.name}"

    def ensure(arm: Arm, pt: int, tag: str = "", lr: float | None = None) -> tuple[Path, str]:
        """The arm's pre-training run and step, planned once (an init may ask first)."""
        if (arm.name, pt, tag) in made:
            return made[arm.name, pt, tag]
        if arm.data == "natural":
            if natural is None:
                raise BadInput(f"arm {arm.name} needs the CIFAR-10 photos (none resolved)")
            pack, shards = photo_pack_step("natural", natural, out, n // 10)
            if all(s.name != pack.name for s in steps):  # natural-sup and natural-mae share it
                steps.append(pack)
            got = pretrain(arm, arm.name, ["--data", str(shards)], (pack.name,), n, pt, tag, lr)
        elif arm.on_the_fly:
            _, _, cats = made_sets[arm.data]
            data = ["--on-the-fly", str(cats), "--image-size", str(b.render_size)]
            data += ["--points", str(b.points), "--mode", "point", "--color", "gray"]
            got = pretrain(arm, arm.name, data, (f"search-{arm.data}",), n, pt, tag, lr)
        else:
            shards, render_step, _ = made_sets[arm.data]
            got = pretrain(arm, arm.name, ["--data", str(shards)], (render_step,), None, pt, tag,
                           lr)  # fmt: skip
        made[arm.name, pt, tag] = got
        return got

    def variants(arm: Arm) -> list[tuple[str, float | None]]:
        """(tag, lr) of the arm's pre-trainings: the budget's lr, and with `own` the sweep."""
        if not own or arm.kind != "sup":
            return [("", None)]
        return [("", None)] + [(f"plr{f:g}", b.pre_lr * f) for f in PRE_LR_FACTORS]

    for arm in chosen:
        if arm.kind == "scratch":
            runs[arm.name] = {ds.name: {(seed, ""): ("scratch", "")} for ds in dss}
            costs[arm.name] = NO_COST
            continue
        runs[arm.name] = {ds.name: {} for ds in dss}
        for pt in pts:
            for tag, lr in variants(arm):
                for ds in dss:
                    if arm.data != "target":
                        runs[arm.name][ds.name][pt, tag] = ensure(arm, pt, tag, lr)
                        continue
                    # the fine-tuning's training photos exactly (the same first N of each class)
                    pack, shards = photo_pack_step(
                        f"target-{ds.name}", ds, out, ds.recipe.train_per_class
                    )
                    if all(s.name != pack.name for s in steps):  # shared by the target arms
                        steps.append(pack)
                    runs[arm.name][ds.name][pt, tag] = pretrain(
                        arm, f"{arm.name}-{ds.name}", ["--data", str(shards)], (pack.name,), n,
                        pt, tag, lr,
                    )  # fmt: skip
    return steps, runs, costs


def ft_run(out: Path, dataset: str, arm: str, seed: int) -> Path:
    """Run folder of one fine-tune (`arm` with its column and pre-training seed suffix)."""
    return out / "finetune" / dataset / arm / f"seed{seed}"


def finetune_steps(
    b: Budget,
    out: Path,
    ds: Downstream,
    runs: dict,
    ft_seeds: list[int],
    workers: int,
    base_seed: int = 0,
    own: bool = False,
) -> tuple[list[Step], list[Unit]]:
    """One frozen-feature probe per arm and pre-training seed (k-NN and linear; deterministic,
    so no fine-tuning seeds: cheap, first), then one fine-tune per (seed, arm, pre-training
    seed) with the dataset's recipe, and with `own` each method's own choices (MAE: average
    pooling and layer decay; supervised: the pre-training lr sweep); seed-major, so that an
    interrupted run has every arm at the first seeds. Also the units the report reads."""
    r = ds.recipe
    steps, units = [], []
    data = ["--dataset", "folder", "--data-root", root_arg(ds), *ds.split_args()]
    for arm, per_dataset in runs.items():
        for (pt, tag), (init, after) in per_dataset[ds.name].items():
            if tag:
                continue
            folder = probe_run(out, ds.name, arm + suffix(pt, base_seed))
            pr = ["probe", *data, "--init", str(init), "--recipe", r.recipe]
            pr += ["--model", MODEL, "--img-size", str(r.img_size)]
            pr += [x for a in b.model_args for x in ("--model-arg", a)]
            pr += ["--device", b.device, "--workers", str(workers), "--batch-size", "256"]
            deps = (after,) if after else ()
            name = f"probe-{ds.name}-{folder.name}"
            steps.append(Step(name, [*pr, "--out", str(folder)], folder / "probe.json", deps))
            units.append(Unit(ds.name, arm, "probe", pt, None, folder, name))
    for seed in ft_seeds:
        for arm, per_dataset in runs.items():
            for (pt, tag), (init, after) in per_dataset[ds.name].items():
                columns = [(tag, [])]
                if own and not tag and str(init) != "scratch" and _is_mae(b, arm):
                    columns += [(f"ld{d:g}", ["--set", f"layer_decay={d:g}", "--model-arg",
                                              "global_pool=avg"]) for d in LAYER_DECAYS]  # fmt: skip
                for column, extra in columns:
                    label = arm + suffix(pt, base_seed, column)
                    run = ft_run(out, ds.name, label, seed)
                    ft = ["finetune", *data, "--init", str(init), "--recipe", r.recipe]
                    ft += ["--epochs", str(r.epochs), "--batch-size", str(r.batch)]
                    ft += ["--lr", str(r.lr), "--set", f"warmup_epochs={r.warmup}", *sets(r.sets)]
                    if r.samples_per_epoch:
                        ft += ["--samples-per-epoch", str(r.samples_per_epoch)]
                    ft += [*extra, *engine_args(b, r.img_size, seed, workers), "--out", str(run)]
                    deps = (after,) if after else ()
                    name = f"finetune-{ds.name}-{label}-{seed}"
                    steps.append(Step(name, ft, run / "model.safetensors", deps))
                    units.append(Unit(ds.name, arm, column, pt, seed, run, name))
    return steps, units


def _is_mae(b: Budget, arm: str) -> bool:
    return next(a.kind for a in arms_of(b) if a.name == arm) == "mae"


def probe_run(out: Path, dataset: str, arm: str) -> Path:
    """Folder of one arm's frozen-feature probe on a dataset."""
    return out / "probe" / dataset / arm


def chosen_arms(args: argparse.Namespace, b: Budget) -> list[Arm]:
    """The arms --arms names (arm names or the groups core / variant / practice / contour), in
    table order; an arm's init arm is pre-trained for it but not measured."""
    arms = arms_of(b)
    if not args.arms:
        return arms
    return [a for a in arms if a.name in args.arms or a.group in args.arms]


def plan(
    args: argparse.Namespace, b: Budget, dss: list[Downstream], natural: Downstream | None = None
) -> Plan:
    """Every step of the benchmark, in the order a single worker runs them; the arms; the runs
    the report reads and each arm's pre-training cost."""
    workers = max(0, b.workers // max(1, args.parallel_arms)) if b.workers else 0
    chosen = chosen_arms(args, b)
    own = getattr(args, "own_recipes", False)
    pts = getattr(args, "pt_seeds", None)
    steps, runs, costs = pretrain_steps(
        b, args.out, args.seed, workers, chosen, dss, natural, pts, own
    )
    units: list[Unit] = []
    for ds in dss:
        more, got = finetune_steps(b, args.out, ds, runs, args.ft_seeds, workers, args.seed, own)
        steps += more
        units += got
    return Plan(steps, [a.name for a in chosen], units, costs)
