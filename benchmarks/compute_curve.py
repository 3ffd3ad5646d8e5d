"""Transfer against pre-training compute: the same arms at 1x, 4x, 16x the budget's steps.

Reads the `transfer.json` (or the results file `benchmarks/results/transfer-BUDGET-DATASET.json`)
of several `python -m benchmarks.transfer` runs of one budget that differ
only in `--scale` (pre-training epochs x N over the same images), and puts each arm's figures
side by side: fine-tuned validation top-1 (mean ± sd over the fine-tuning seeds), linear probe
and k-NN on frozen features. Scratch has no pre-training: it is the same at every scale, drawn
as a band. Writes `compute-curve.md`, one chart per downstream set (`compute-curve-SET.png`),
and prints the table (and a JSON line with `--json`).

examples:
  uv run python -m benchmarks.transfer --budget cpu --dataset flowers12 --ft-seeds 0 1 2 \\
      --arms scratch fractaldb-sup sigma-mae natural-sup natural-mae --out runs/cpu-x1
  uv run python -m benchmarks.transfer --budget cpu --dataset flowers12 --ft-seeds 0 1 2 \\
      --arms fractaldb-sup sigma-mae natural-sup natural-mae --scale 4 --out runs/cpu-x4
  uv run python benchmarks/compute_curve.py runs/cpu-x1 runs/cpu-x4 --out runs/curve
  uv run python benchmarks/compute_curve.py runs/cpu-x1 runs/cpu-x4 runs/cpu-x16 \\
      --arms scratch sigma-mae natural-mae --out runs/curve-mae
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if __name__ == "__main__" and not __package__:
    # run as a file: import the benchmarks package from the repository, and never this folder's
    # modules as top-level ones (benchmarks/shards.py would shadow the shards package)
    sys.path[0] = str(REPO)

from benchmarks.transfer import mean_sd  # noqa: E402


class BadInput(Exception):
    """A run folder that is not there, not finished, or of another budget (one line, exit 2)."""


def load_run(folder: Path) -> dict[str, Any]:
    """One finished transfer run's report (its OUT/transfer.json, or a results file
    benchmarks/results/transfer-BUDGET-DATASET.json), checked for what we read."""
    path = folder if folder.suffix == ".json" else folder / "transfer.json"
    if not path.is_file():
        raise BadInput(
            f"{path} is not there; fix: pass the --out folder of a finished "
            "python -m benchmarks.transfer run"
        )
    try:
        run = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"{path} is not readable JSON ({exc}); fix: re-run that benchmark") from None
    if not isinstance(run, dict) or not isinstance(run.get("results"), dict):
        raise BadInput(f"{path} holds no results; fix: re-run that benchmark")
    for key in ("budget", "scale", "pre_epochs", "mae_epochs"):
        if key not in run:
            raise BadInput(f"{path} has no {key!r}; fix: re-run it with the current benchmark")
    return run


def collect(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[int, dict[str, Any]]]]:
    """dataset -> arm -> scale -> figures (fine-tuned mean, sd, seeds; linear; k-NN).

    Scratch is filed under scale 0: it pre-trains nothing, so one row serves every scale."""
    budgets = {r["budget"] for r in runs}
    if len(budgets) > 1:
        raise BadInput(
            f"the runs are of different budgets ({', '.join(sorted(budgets))}); fix: compare "
            "runs of one budget that differ only in --scale"
        )
    table: dict[str, dict[str, dict[int, dict[str, Any]]]] = {}
    for run in runs:
        for dataset, rows in run["results"].items():
            for row in rows:
                scale = 0 if row["arm"] == "scratch" else int(run["scale"])
                cell = table.setdefault(dataset, {}).setdefault(row["arm"], {})
                if scale in cell and scale != 0:
                    raise BadInput(
                        f"two runs hold {row['arm']} at --scale {scale} on {dataset}; fix: "
                        "pass one run per scale"
                    )
                last = [float(v) for v in row.get("last") or []]
                mean, sd = mean_sd(last) if last else (None, None)
                cell[scale] = {
                    "mean": mean,
                    "sd": sd,
                    "seeds": last,
                    "linear": row.get("linear"),
                    "knn": row.get("knn"),
                    "pre_epochs": None if scale == 0 else _pre_epochs(row["arm"], run),
                }
    return table


def select_arms(
    table: dict[str, dict[str, dict[int, dict[str, Any]]]], wanted: list[str] | None
) -> tuple[dict[str, dict[str, dict[int, dict[str, Any]]]], list[str]]:
    """The arms to draw, and those left out: `wanted` (an unknown name is bad input), else
    scratch and every arm measured at two or more scales (one point is no curve), or every arm
    when the runs hold one scale only."""
    known = {arm for arms in table.values() for arm in arms}
    unknown = [a for a in wanted or [] if a not in known]
    if unknown:
        raise BadInput(
            f"--arms {' '.join(unknown)} not in these runs; fix: some of {' '.join(sorted(known))}"
        )
    kept: dict[str, dict[str, dict[int, dict[str, Any]]]] = {}
    left: list[str] = []
    for dataset, arms in table.items():
        one_scale = len(scales_of(arms)) < 2
        for arm, cells in arms.items():
            keep = arm in wanted if wanted else arm == "scratch" or one_scale or len(cells) > 1
            if keep:
                kept.setdefault(dataset, {})[arm] = cells
            elif arm not in left:
                left.append(arm)
    return kept, left


def _pre_epochs(arm: str, run: dict[str, Any]) -> int:
    """Pre-training epochs this arm ran (MAE arms run the budget's MAE schedule)."""
    if "+" in arm:  # one pre-training after the other (e.g. sigma-mae+target-mae)
        return sum(_pre_epochs(part, run) for part in arm.split("+"))
    if arm == "target-mae-long":  # the equal-cost control: twice the MAE schedule
        return 2 * int(run["mae_epochs"])
    return int(run["mae_epochs"] if arm.endswith("-mae") else run["pre_epochs"])


def scales_of(arms: dict[str, dict[int, dict[str, Any]]]) -> list[int]:
    """The pre-training scales present, in order (scratch's 0 left out)."""
    return sorted({s for cells in arms.values() for s in cells if s})


def _cell(c: dict[str, Any] | None) -> str:
    if c is None or c["mean"] is None:
        return "-"
    return f"{c['mean']:.2f} ± {c['sd']:.2f} ({len(c['seeds'])})"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def markdown(dataset: str, arms: dict[str, dict[int, dict[str, Any]]]) -> str:
    """Per arm and scale: fine-tuned top-1 mean ± sd (seeds), gain over scratch, probes."""
    scales = scales_of(arms)
    scratch = arms.get("scratch", {}).get(0)
    base = scratch["mean"] if scratch else None
    head = " | ".join(
        f"{s}x fine-tuned | {s}x vs scratch | {s}x linear | {s}x k-NN" for s in scales
    )
    lines = [f"### {dataset}", "", f"| arm | {head} |", "|---|" + "---|" * (4 * len(scales))]
    if scratch:
        filler = f"{_cell(scratch)} |  | {_num(scratch['linear'])} | {_num(scratch['knn'])}"
        lines.append(f"| scratch (no pre-training) | {' | '.join([filler] * len(scales))} |")
    for arm, cells in arms.items():
        if arm == "scratch":
            continue
        parts = []
        for s in scales:
            c = cells.get(s)
            gain = ""
            if c and c["mean"] is not None and base is not None:
                gain = f"{c['mean'] - base:+.2f}"
            parts.append(
                f"{_cell(c)} | {gain} | {_num(c and c['linear'])} | {_num(c and c['knn'])}"
            )
        lines.append(f"| {arm} | {' | '.join(parts)} |")
    return "\n".join(lines) + "\n"


def chart(dataset: str, arms: dict[str, dict[int, dict[str, Any]]], path: Path) -> Path:
    """Fine-tuned top-1 and linear probe against pre-training scale, one line per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fractaldb.core.atomic import replace_atomically

    scales = scales_of(arms)
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.6))
    scratch = arms.get("scratch", {}).get(0)
    for ax, key, label in ((axes[0], "mean", "fine-tuned val top-1 (%)"),
                           (axes[1], "linear", "linear probe top-1 (%)")):  # fmt: skip
        if scratch and scratch[key] is not None:
            ax.axhline(scratch[key], color="black", linewidth=2, label="scratch")
            if key == "mean" and scratch["sd"]:
                lo, hi = scratch["mean"] - scratch["sd"], scratch["mean"] + scratch["sd"]
                ax.axhspan(lo, hi, color="black", alpha=0.1)
        for arm, cells in arms.items():
            pts = [(s, cells[s]) for s in scales if s in cells and cells[s][key] is not None]
            if arm == "scratch" or not pts:
                continue
            xs = [s for s, _ in pts]
            ys = [c[key] for _, c in pts]
            if key == "mean":
                ax.errorbar(xs, ys, yerr=[c["sd"] for _, c in pts], marker="o", capsize=3,
                            label=arm)  # fmt: skip
            else:
                ax.plot(xs, ys, marker="o", label=arm)
        ax.set_xscale("log", base=2)
        ax.set_xticks(scales, [f"{s}x" for s in scales])
        ax.set_xlabel("pre-training steps (x the budget's)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{dataset}: transfer against pre-training compute", fontsize=10)
    fig.tight_layout()
    try:
        return replace_atomically(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    finally:
        plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description="Transfer against pre-training compute, from several benchmarks.transfer runs.",
        epilog=__doc__.split("examples:", 1)[1].join(["examples:", ""]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "runs",
        nargs="+",
        type=Path,
        help="--out folders of benchmarks.transfer runs, or their results .json files",
    )
    parser.add_argument("--out", type=Path, required=True, help="where the table and charts go")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    parser.add_argument(
        "--arms", nargs="+", metavar="ARM",
        help="only these arms (default: scratch and every arm measured at two or more scales)",
    )  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Build the table and charts; 2 with a one-line message on bad input."""
    args = parse_args(argv)
    try:
        table, left = select_arms(collect([load_run(f) for f in args.runs]), args.arms)
    except BadInput as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    if left:
        print(f"left out ({'not asked for' if args.arms else 'one scale only'}): "
              f"{', '.join(left)}", file=sys.stderr)  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    text = "\n".join(markdown(ds, arms) for ds, arms in table.items())
    (args.out / "compute-curve.md").write_text(text)
    for ds, arms in table.items():
        chart(ds, arms, args.out / f"compute-curve-{ds}.png")
    print(text, end="")
    if args.json:
        summary = {
            ds: {arm: {str(s): {k: c[k] for k in ("mean", "sd", "linear", "knn", "pre_epochs")}
                       for s, c in cells.items()} for arm, cells in arms.items()}
            for ds, arms in table.items()
        }  # fmt: skip
        print(json.dumps({"compute_curve": summary, "runs": [str(r) for r in args.runs]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
