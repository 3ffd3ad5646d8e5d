"""The command line: parse and check the options, plan, run the steps, write the report."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import benchmarks.transfer.results as results
from benchmarks.steps import StepFailed, needed, run_steps
from benchmarks.transfer.arms import GROUPS, arm_names, arms_of
from benchmarks.transfer.budgets import BUDGETS, Budget, with_variant
from benchmarks.transfer.downstream import (
    ARCHIVES,
    DEFAULT_DATA_DIR,
    BadInput,
    Downstream,
    extract_needed,
    resolve_dataset,
)
from benchmarks.transfer.plan import Plan, chosen_arms, plan
from benchmarks.transfer.report import chart, curve_chart, markdown, summarize, summary
from benchmarks.transfer.results import DEFAULT_RESULTS_DIR, results_path

USAGE = """examples:
  uv run python -m benchmarks.transfer --budget cpu --dataset flowers12 --ft-seeds 0 1 2 \\
      --out runs/transfer-cpu
  uv run python -m benchmarks.transfer --budget gpu --dataset cifar10 flowers12 \\
      --ft-seeds 0 1 2 --parallel-arms 4 --out runs/transfer-gpu
  uv run python -m benchmarks.transfer --budget smoke --dataset photos.tar.gz --out /tmp/t
  uv run python -m benchmarks.transfer --budget cpu --dataset flowers12 --ft-seeds 0 1 2 \\
      --arms fractaldb-sup sigma-sup --sup-epochs 15 --out runs/transfer-cpu-sup15
  uv run python -m benchmarks.transfer --budget cpu --dataset flowers12 --arms core practice \\
      --pt-seeds 0 1 --ft-seeds 0 --out runs/cpu    # one chunk; then --ft-seeds 1, then 2
re-running the same line skips finished steps and resumes interrupted ones; the results file
(benchmarks/results/transfer-BUDGET-DATASET.json) carries finished runs to the next chunk"""


def variant_flags(args: argparse.Namespace) -> list[str]:
    """The command-line options that change the budget's plan, as typed."""
    flags = ["--arms", *args.arms] if args.arms else []
    return flags + figure_flags(args)


def figure_flags(args: argparse.Namespace) -> list[str]:
    """The options that change what a run measures (not which runs): they name the results
    file, so that chunks split by --arms, --pt-seeds or --ft-seeds share one."""
    flags = []
    if args.sup_epochs is not None:
        flags += ["--sup-epochs", str(args.sup_epochs)]
    if args.ft_img_size is not None:
        flags += ["--ft-img-size", str(args.ft_img_size)]
    if args.scale != 1:
        flags += ["--scale", str(args.scale)]
    if getattr(args, "equal_steps", False):
        flags += ["--equal-steps"]
    if getattr(args, "val_per_class", None) is not None:
        flags += ["--val-per-class", str(args.val_per_class)]
    if getattr(args, "seed", 0) != 0:
        flags += ["--seed", str(args.seed)]
    return flags


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.transfer",
        description=sys.modules[__package__].__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=USAGE,
    )
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="smoke")
    parser.add_argument("--out", type=Path, required=True, help="output folder (restartable)")
    parser.add_argument(
        "--dataset", nargs="+", default=["cifar10"],
        help="cifar10, flowers12, or an image folder / .tar.gz path (several allowed)",
    )  # fmt: skip
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="the archives")
    parser.add_argument(
        "--val-per-class", type=int, default=None, help="held-out images per class (all sets)"
    )
    parser.add_argument("--seed", type=int, default=0, help="render seed (and pre-training's)")
    parser.add_argument(
        "--pt-seeds", type=int, nargs="+", default=None,
        help="pre-training seeds, each arm pre-trained once per seed (default: --seed)",
    )  # fmt: skip
    parser.add_argument("--ft-seeds", type=int, nargs="+", default=[0], help="fine-tuning seeds")
    parser.add_argument(
        "--parallel-arms", type=int, default=1, help="independent steps run at once (one GPU)"
    )
    parser.add_argument(
        "--arms", nargs="+", default=None,
        help="run only these arms, or the groups core / variant / practice / contour (default: "
        "all)",
    )  # fmt: skip
    parser.add_argument(
        "--sup-epochs", type=int, default=None,
        help="supervised pre-training epochs (default: the budget's)",
    )  # fmt: skip
    parser.add_argument(
        "--ft-img-size", type=int, default=None,
        help="fine-tuning resolution for every set (default: each recipe's)",
    )  # fmt: skip
    parser.add_argument(
        "--scale", type=int, default=1,
        help="pre-training epochs x N, same images (the compute curve: 1, 4, 16)",
    )  # fmt: skip
    parser.add_argument(
        "--equal-steps", action="store_true",
        help="supervised arms pre-train the MAE arms' epochs (the same steps and images)",
    )  # fmt: skip
    parser.add_argument(
        "--own-recipes", action="store_true",
        help="also each method's own choices, chosen on validation: MAE arms fine-tuned with "
        "average pooling and layer decay 0.65 / 0.75, supervised arms at 0.5 / 2 x the "
        "pre-training lr",
    )  # fmt: skip
    parser.add_argument(
        "--results-dir", type=Path, default=None,
        help="where transfer-BUDGET-DATASET.json is merged and read (default: benchmarks/results; "
        "the smoke budget: OUT)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    return parser.parse_args(argv)


def check_variant(args: argparse.Namespace, b: Budget) -> None:
    """Raise BadInput for an unknown arm or a non-positive epoch count, scale or resolution."""
    known = arm_names(b)
    unknown = [a for a in args.arms or [] if a not in known and a not in GROUPS]
    if unknown:
        raise BadInput(
            f"--arms {' '.join(unknown)} unknown; fix: {', '.join(GROUPS)} or some of "
            f"{' '.join(known)}"
        )
    for flag in ("pt_seeds", "ft_seeds"):
        seeds = getattr(args, flag) or []
        if len(set(seeds)) < len(seeds):
            raise BadInput(f"--{flag.replace('_', '-')} {' '.join(map(str, seeds))} names a "
                           "seed twice; fix: once each")  # fmt: skip
    if args.equal_steps and args.sup_epochs is not None:
        raise BadInput("--equal-steps and --sup-epochs both set the supervised epochs; fix: one")
    if args.sup_epochs is not None and args.sup_epochs < 1:
        raise BadInput(f"--sup-epochs {args.sup_epochs}; fix: 1 or more")
    if args.scale < 1:
        raise BadInput(f"--scale {args.scale}; fix: 1 or more (pre-training epochs x N)")
    if args.ft_img_size is not None and args.ft_img_size < 8:
        raise BadInput(f"--ft-img-size {args.ft_img_size}; fix: 8 px or more")


def resolve_natural(
    args: argparse.Namespace, b: Budget, dss: list[Downstream]
) -> Downstream | None:
    """The CIFAR-10 photos the natural-image arms pre-train on (None when no arm needs them);
    the downstream cifar10 itself when it is one of the sets."""
    if not any(a.data == "natural" for a in chosen_arms(args, b)):
        return None
    same = next((d for d in dss if d.name == "cifar10"), None)
    if same is not None:
        return same
    path = args.data_dir / ARCHIVES["cifar10"]
    if not path.is_file():
        raise BadInput(
            f"the natural-image arms pre-train on CIFAR-10 photos, and {path} is not there; fix: "
            f"--data-dir DIR holding {ARCHIVES['cifar10']}, or --arms without natural-sup "
            "natural-mae"
        )
    return resolve_dataset("cifar10", b, args.data_dir, args.val_per_class)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    args = parse_args(argv)
    try:
        if args.parallel_arms < 1:
            raise BadInput(f"--parallel-arms {args.parallel_arms}; fix: 1 or more")
        check_variant(args, BUDGETS[args.budget])
        if len(set(args.dataset)) < len(args.dataset):
            raise BadInput(f"--dataset {' '.join(args.dataset)} names a set twice; fix: once each")
        b = with_variant(
            BUDGETS[args.budget], args.sup_epochs, args.ft_img_size, args.scale, args.equal_steps
        )
        dss = [resolve_dataset(d, b, args.data_dir, args.val_per_class) for d in args.dataset]
        if len({d.name for d in dss}) < len(dss):
            raise BadInput(f"--dataset {' '.join(args.dataset)} names a set twice; fix: once each")
        natural = resolve_natural(args, b, dss)
        flags = figure_flags(args)
        # a smoke run measures nothing worth keeping: its file stays beside its runs
        where = args.results_dir or (args.out if args.budget == "smoke" else DEFAULT_RESULTS_DIR)
        paths = {ds.name: results_path(where, args.budget, ds.name, flags) for ds in dss}
        docs = {name: results.load(path, args.budget, flags) for name, path in paths.items()}
    except BadInput as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    tmp = Path(tempfile.mkdtemp(prefix="transfer-photos-"))
    p: Plan | None = None
    try:
        p = plan(args, b, dss, natural)
        # runs the results files hold are not run again, even without their folders
        skip = {u.step for u in p.units if results.stored(docs[u.dataset], u) is not None
                and results.read_unit(u) is None}  # fmt: skip
        wanted = {u.step for u in p.units} - skip
        photo_sets = dss + ([natural] if natural is not None and natural not in dss else [])
        extract_needed(needed(p.steps, wanted), photo_sets, tmp)
        p = plan(args, b, dss, natural)  # again, now with the extracted folders
        steps = needed(p.steps, wanted)
        if skip:
            print(f"# skip {len(skip)} runs held by {', '.join(map(str, paths.values()))}")
        run_steps(steps, args.parallel_arms)
    except StepFailed as err:
        print(f"error: {err}; fix: see the output above, then re-run the same line to resume")
        return 1
    except BadInput as err:  # found once the photos are extracted (a split that empties a class)
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if p is not None:  # what finished is kept, also when a step failed
            log = [s.shown for s in p.steps]
            record(args, argv, b, docs, paths, p, (time.time() - start) / 60, log)
    minutes = (time.time() - start) / 60
    tables = {name: doc["results"][name] for name, doc in docs.items()}
    for ds in dss:
        in_domain = ds.name == "cifar10"
        (out / f"results-{ds.name}.md").write_text(markdown(tables[ds.name], in_domain))
    png = chart(tables, out / "results.png")
    curves = [curve_chart(ds.name, tables[ds.name], out / f"curve-{ds.name}.png") for ds in dss]
    variant = variant_flags(args)
    (out / "summary.md").write_text(
        summary(args.budget, dss, tables, args.ft_seeds, log, minutes, variant)
    )
    figures = {**figures_head(args, b), "minutes": round(minutes, 1), "results": tables,
               "commands": log}  # fmt: skip
    (out / "transfer.json").write_text(json.dumps(figures, indent=2) + "\n")
    if args.json:
        print(json.dumps({k: v for k, v in figures.items() if k != "commands"}))
    shown = ", ".join(str(p) for p in [png, *curves, *paths.values()])
    print(f"# done in {minutes:.1f} min: {out / 'summary.md'}, {shown}")
    return 0


def figures_head(args: argparse.Namespace, b: Budget) -> dict:
    """What every figures file says about its budget (compute_curve.py reads these keys)."""
    return {
        "budget": args.budget,
        "variant": variant_flags(args),
        "scale": args.scale,
        "pre_epochs": b.pre_epochs,
        "mae_epochs": b.mae_epochs,
        "seed": args.seed,
        "pt_seeds": args.pt_seeds or [args.seed],
        "ft_seeds": args.ft_seeds,
    }


def record(
    args: argparse.Namespace,
    argv: list[str] | None,
    b: Budget,
    docs: dict[str, dict],
    paths: dict[str, Path],
    p: Plan,
    minutes: float,
    log: list[str],
) -> None:
    """Merge every finished run into each set's results file and its pooled table."""
    saw = {a.name: a.saw for a in arms_of(b)}
    versus = {a.name: a.versus for a in arms_of(b) if a.versus}
    typed = sys.argv[1:] if argv is None else argv
    for name, doc in docs.items():
        units = [u for u in p.units if u.dataset == name]
        results.merge(doc, units, p.costs, saw, results.invocation(typed, minutes, log))
        doc |= {k: v for k, v in figures_head(args, b).items() if k not in ("variant",)}
        doc["dataset"] = name
        doc["results"] = {name: summarize(doc, arm_names(b), versus)}
        results.write(paths[name], doc)
