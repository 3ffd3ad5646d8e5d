"""The report: per-arm summaries of finished runs, markdown tables, charts and summary.md."""

from __future__ import annotations

import json
import shlex
import statistics
from pathlib import Path

from benchmarks.transfer.budgets import BUDGETS, Budget
from benchmarks.transfer.downstream import Downstream
from benchmarks.transfer.plan import ft_run, probe_run


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(
    out: Path, dataset: str, arms: list[str], ft_seeds: list[int], saw: dict[str, str] | None = None
) -> list[dict]:
    """Per arm: last-epoch and best validation top-1, train top-1 and the per-epoch validation
    curve over the finished seeds; the frozen-feature probe's k-NN and linear top-1."""
    from finetune.report import load_run

    rows = []
    for arm in arms:
        runs = [ft_run(out, dataset, arm, s) for s in ft_seeds]
        seeds = [
            s for s, r in zip(ft_seeds, runs, strict=True) if (r / "model.safetensors").exists()
        ]
        done = [load_run(ft_run(out, dataset, arm, s)) for s in seeds]
        probe_file = probe_run(out, dataset, arm) / "probe.json"
        probe = json.loads(probe_file.read_text()) if probe_file.exists() else None
        if not done and probe is None:
            continue
        ends = [r["history"][-1] for r in done]
        epochs = min((len(r["history"]) for r in done), default=0)
        curve = [statistics.fmean(r["history"][e]["top1"] for r in done) for e in range(epochs)]
        rows.append({
            "arm": arm,
            "saw": (saw or {}).get(arm, ""),
            "seeds": seeds,
            "last": [r["last"]["top1"] for r in done],
            "best": [r["best"]["top1"] for r in done],
            "train": [h["train_top1"] for h in ends if "train_top1" in h],
            "curve": curve,
            "knn": probe["knn_top1"] if probe else None,
            "linear": probe["linear_top1"] if probe else None,
            "img_size": done[0]["img_size"] if done else probe["img_size"],
            "epochs": done[0]["epochs"] if done else None,
        })  # fmt: skip
    return rows


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def markdown(rows: list[dict], in_domain: bool = False) -> str:
    """Table: what each arm saw; fine-tuned top-1 (mean ± sd of last and best epoch), gain
    over scratch; linear-probe and k-NN top-1 on frozen features; train top-1; the seeds."""
    scratch = next(
        (statistics.fmean(r["last"]) for r in rows if r["arm"] == "scratch" and r["last"]), None
    )
    lines = [
        "| init | pre-training saw | fine-tuned, last epoch | best epoch | vs scratch | "
        "linear probe | k-NN | train top-1 | seeds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        saw = r.get("saw", "")
        if in_domain and r["arm"].startswith(("natural-", "target-")):
            saw += " (in-domain)"
        if r["last"]:
            last, best = mean_sd(r["last"]), mean_sd(r["best"])
            ft = f"{last[0]:.2f} ± {last[1]:.2f}"
            bst = f"{best[0]:.2f} ± {best[1]:.2f}"
            gain = statistics.fmean(r["last"]) - scratch if scratch is not None else None
        else:
            ft = bst = "-"
            gain = None
        gain_s = "" if r["arm"] == "scratch" or gain is None else f"{gain:+.2f}"
        train = f"{statistics.fmean(r['train']):.1f}" if r["train"] else "-"
        seeds = " ".join(f"{v:.1f}" for v in r["last"])
        lines.append(
            f"| {r['arm']} | {saw} | {ft} | {bst} | {gain_s} | {_pct(r.get('linear'))} | "
            f"{_pct(r.get('knn'))} | {train} | {len(r['last'])}: {seeds} |"
        )
    return "\n".join(lines) + "\n"


def curve_chart(dataset: str, rows: list[dict], path: Path) -> Path:
    """Validation top-1 against fine-tuning epoch (mean over seeds), one line per arm, scratch
    in black: whether the recipe is long enough for scratch to plateau."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fractaldb.core.atomic import replace_atomically

    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    for r in rows:
        if not r.get("curve"):
            continue
        epochs = range(1, len(r["curve"]) + 1)
        style = {"color": "black", "linewidth": 2.2} if r["arm"] == "scratch" else {"alpha": 0.7}
        ax.plot(epochs, r["curve"], label=r["arm"], **style)
    ax.set_xlabel("fine-tuning epoch")
    ax.set_ylabel("val top-1 (%)")
    ax.set_title(f"{dataset}: validation during fine-tuning (mean over seeds)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2, loc="lower right")
    fig.tight_layout()
    try:
        return replace_atomically(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    finally:
        plt.close(fig)


def chart(tables: dict[str, list[dict]], path: Path) -> Path:
    """One grouped bar chart: mean last-epoch top-1 per dataset and arm, sd as error bars and
    each seed as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from fractaldb.core.atomic import replace_atomically

    datasets = list(tables)
    arms = list(dict.fromkeys(r["arm"] for rows in tables.values() for r in rows))
    width = 0.8 / max(1, len(arms))
    fig, ax = plt.subplots(figsize=(max(4.0, 2.2 * len(datasets) + 1), 3.4))
    x = np.arange(len(datasets))
    for i, arm in enumerate(arms):
        rows = [next((r for r in tables[d] if r["arm"] == arm and r["last"]), None)
                for d in datasets]  # fmt: skip
        pos = x + (i - (len(arms) - 1) / 2) * width
        # an arm a group did not run (a variant with --arms): NaN draws no bar, no error bar
        means = [mean_sd(r["last"])[0] if r else float("nan") for r in rows]
        sds = [mean_sd(r["last"])[1] if r else float("nan") for r in rows]
        bars = ax.bar(pos, means, width, yerr=sds, capsize=3, label=arm)
        labels = [f"{m:.1f}" if r else "" for m, r in zip(means, rows, strict=True)]
        ax.bar_label(bars, labels=labels, fontsize=7, padding=2)
        for p, r in zip(pos, rows, strict=True):
            if r:
                ax.plot([p] * len(r["last"]), r["last"], "k.", markersize=3)
    ax.set_xticks(x, datasets)
    ax.set_ylabel("val top-1 (%), last epoch")
    ax.set_ylim(0, 100)
    ax.legend(title="init", fontsize=7, title_fontsize=7, ncol=2, loc="upper left")
    fig.tight_layout()
    try:
        return replace_atomically(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    finally:
        plt.close(fig)


def machine_line(b: Budget) -> str:
    """Where it ran: the GPU's name when the budget uses one, then the CPU line."""
    from fractaldb.core.machine import describe_machine

    device = describe_machine()
    if b.device.startswith("cuda"):
        try:
            import torch

            device = f"{torch.cuda.get_device_name(0)}; {device}"
        except Exception:  # no GPU visible to this process: the CPU line still says where
            pass
    return device


def summary(
    budget: str,
    dss: list[Downstream],
    tables: dict[str, list[dict]],
    ft_seeds: list[int],
    log: list[str],
    minutes: float,
    variant: list[str] | None = None,
) -> str:
    """Markdown: what was run (budget and its variant options, seeds, machine, commands) and a
    table per dataset."""
    shown = f"`{budget}`" + (f" (variant: `{shlex.join(variant)}`)" if variant else "")
    lines = [
        "# Transfer from fractal pre-training",
        "",
        f"budget {shown}, fine-tuning seeds {' '.join(map(str, ft_seeds))}, "
        f"{minutes:.0f} min, machine: {machine_line(BUDGETS[budget])}.",
        "Top-1 (%) on the held-out images, mean ± sample sd over the fine-tuning seeds; "
        "train top-1 on a fixed subset of the training images under the evaluation transform.",
    ]
    for ds in dss:
        r = ds.recipe
        lines += [
            "",
            f"## {ds.name}",
            "",
            f"{ds.source.name}: {' '.join(ds.split_args())}; fine-tuned at {r.img_size} px, "
            f"{r.epochs} epochs, batch {r.batch}, lr {r.lr:g}.",
            "",
            markdown(tables[ds.name], ds.name == "cifar10").rstrip("\n"),
        ]
    lines += ["", "![val top-1](results.png)", "", "Commands:", "", "```", *log, "```", ""]
    return "\n".join(lines)
