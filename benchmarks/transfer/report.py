"""The report: per-arm summaries of finished runs, markdown tables, charts and summary.md."""

from __future__ import annotations

import shlex
import statistics
from pathlib import Path

from benchmarks.transfer.budgets import BUDGETS, Budget
from benchmarks.transfer.downstream import Downstream
from benchmarks.transfer.stats import Difference, claim, welch


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _parse_key(key: str) -> tuple[str, int, int | None]:
    """(column, pre-training seed, fine-tuning seed or None for a probe) of a results key."""
    column, pt, run = key.split("/")
    return ("" if column == "shared" else column), int(pt[2:]), (
        None if run == "probe" else int(run[2:]))  # fmt: skip


def _pooled(runs: list[dict]) -> dict:
    """Figures pooled over runs: last, best and train top-1 per run, the mean curve."""
    epochs = min((len(r["curve"]) for r in runs), default=0)
    return {
        "last": [r["last"] for r in runs],
        "best": [r["best"] for r in runs],
        "train": [r["train"] for r in runs if r.get("train") is not None],
        "curve": [statistics.fmean(r["curve"][e] for r in runs) for e in range(epochs)],
        "curves": [r["curve"] for r in runs],
    }


def summarize(doc: dict, order: list[str], versus: dict[str, str] | None = None) -> list[dict]:
    """Per arm of the results document, in `order` (arms not in it last): every run pooled
    over pre-training x fine-tuning seeds (last, best, train top-1, validation curves), the
    frozen-feature probes (mean over pre-training seeds), the pre-training cost, and the
    arm's own recipe: the candidate column with the best mean last-epoch validation; the
    difference from scratch, and for an arm of `versus` ({arm: base}) from its base arm too
    when the base has runs."""
    rows = []
    names = sorted(doc["arms"], key=lambda a: (order.index(a) if a in order else len(order), a))
    for arm in names:
        entry = doc["arms"][arm]
        shared, probes, columns = [], [], {}
        for key in sorted(entry.get("runs", {})):
            record = entry["runs"][key]
            column, pt, ft = _parse_key(key)
            if ft is None:
                probes.append(record)
            elif column == "":
                shared.append((pt, ft, record))
            else:
                columns.setdefault(column, []).append(record)
        if not shared and not probes:
            continue
        shared.sort(key=lambda x: (x[1], x[0]))
        row = {"arm": arm, "saw": entry.get("saw", ""), "cost": entry.get("cost")}
        row |= _pooled([r for _, _, r in shared])
        row["seeds"] = [ft for _, ft, _ in shared]
        row["pt_seeds"] = [pt for pt, _, _ in shared]
        row["n"] = f"{len(set(row['pt_seeds']))} x {len(set(row['seeds']))}"
        row["linear"] = statistics.fmean(p["linear"] for p in probes) if probes else None
        row["knn"] = statistics.fmean(p["knn"] for p in probes) if probes else None
        first = shared[0][2] if shared else probes[0]
        row["img_size"], row["epochs"] = first["img_size"], first.get("epochs")
        if columns:
            # supervised arms: the shared column is also the sweep's x 1 candidate
            if any(c.startswith("plr") for c in columns) and shared:
                columns[""] = [r for _, _, r in shared]
            means = {c: statistics.fmean(r["last"] for r in rs) for c, rs in columns.items()}
            pick = max(means, key=lambda c: means[c])
            row["own"] = {"column": pick or "plr1", "last": [r["last"] for r in columns[pick]],
                          "candidates": {(c or "plr1"): m for c, m in means.items()}}  # fmt: skip
        else:
            row["own"] = None
        rows.append(row)
    scratch = next((r["last"] for r in rows if r["arm"] == "scratch"), [])
    for row in rows:
        d = welch(row["last"], scratch) if row["arm"] != "scratch" else None
        row["vs_scratch"] = d.as_dict() if d else None
        own = row["own"] and welch(row["own"]["last"], scratch)
        if row["own"]:
            row["own"]["vs_scratch"] = own.as_dict() if own else None
    last = {r["arm"]: r["last"] for r in rows if r["last"]}
    for row in rows:
        base = (versus or {}).get(row["arm"])
        row["versus"] = None
        if base in last:
            d = welch(row["last"], last[base])
            row["versus"] = {"arm": base, "diff": d.as_dict() if d else None}
    return rows


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _diff(d: dict | None) -> str:
    return "" if not d else f"{d['diff']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]"


def _cost(cost: dict | None) -> tuple[str, str, str]:
    if not cost:
        return "-", "-", "-"
    return f"{cost['steps']:,}", f"{cost['images']:,}", f"{cost['flops']:.2e}"


def in_domain_arm(arm: str) -> bool:
    """Whether the arm pre-trains on photos of the downstream kind (CIFAR-10 or the set's own)."""
    return arm.startswith("natural-") or "target-mae" in arm


def markdown(rows: list[dict], in_domain: bool = False) -> str:
    """Table: what each arm saw, its pre-training steps, images seen and training FLOPs; the
    runs pooled (pre-training x fine-tuning seeds); fine-tuned last-epoch top-1 mean ± sd, the
    difference from scratch with its 95 % CI and Welch p; the arm's own recipe (chosen on
    validation); linear-probe and k-NN top-1 on frozen features; train top-1. The best epoch,
    a maximum over the same validation, is optimistic: it is in the JSON only. When an arm is
    also compared with a base arm (the contour arms with fractaldb-sup), a column after p gives
    that difference with its CI and p."""
    bases = sorted({r["versus"]["arm"] for r in rows if r.get("versus")})
    second = f" vs {' / '.join(bases)} [95 % CI] (p) |" if bases else ""
    lines = [
        "| init | pre-training saw | pre-training steps | images seen | train FLOPs | "
        f"n (pt x ft) | fine-tuned, last epoch | vs scratch [95 % CI] | p |{second} own recipe "
        "(chosen on val) | linear probe | k-NN | train top-1 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if bases else ""),
    ]
    for r in rows:
        saw = r.get("saw", "")
        if in_domain and in_domain_arm(r["arm"]):
            saw += " (in-domain)"
        ft = "-"
        if r["last"]:
            m, sd = mean_sd(r["last"])
            ft = f"{m:.2f} ± {sd:.2f}"
        d = r.get("vs_scratch")
        p = f"{d['p']:.3f}" if d else ""
        own = "-"
        if r.get("own"):
            o = r["own"]
            m, sd = mean_sd(o["last"])
            own = f"{m:.2f} ± {sd:.2f} ({o['column']}) {_diff(o.get('vs_scratch'))}".rstrip()
        train = f"{statistics.fmean(r['train']):.1f}" if r["train"] else "-"
        steps, images, flops = _cost(r.get("cost"))
        v = (r.get("versus") or {}).get("diff")
        versus = f" {_diff(v)} (p {v['p']:.3f}) |" if v else " |"
        lines.append(
            f"| {r['arm']} | {saw} | {steps} | {images} | {flops} | {r.get('n', '-')} | {ft} | "
            f"{_diff(d)} | {p} |{versus if bases else ''} {own} | {_pct(r.get('linear'))} | "
            f"{_pct(r.get('knn'))} | {train} |"
        )
    return "\n".join(lines) + "\n"


def claims(rows: list[dict]) -> list[str]:
    """One sentence per arm against scratch, and one against its base arm where it has one;
    "no difference" when the interval holds zero."""
    out = []
    for r in rows:
        if r["arm"] == "scratch":
            continue
        d = r.get("vs_scratch")
        out.append("- " + claim(r["arm"], Difference(**d) if d else None))
        if r.get("versus"):
            v = r["versus"]["diff"]
            out.append("- " + claim(r["arm"], Difference(**v) if v else None, r["versus"]["arm"]))
    return out


def arm_styles(arms: list[str]) -> dict[str, dict]:
    """A line style per arm: scratch black and thick, the others 10 colours, then the next
    line style (21 arms never repeat a colour and style)."""
    import matplotlib

    palette = [matplotlib.colors.to_hex(c) for c in matplotlib.colormaps["tab10"].colors]
    out, i = {}, 0
    for arm in arms:
        if arm == "scratch":
            out[arm] = {"color": "black", "linewidth": 2.2}
            continue
        out[arm] = {"color": palette[i % 10], "linestyle": ("-", "--", ":", "-.")[i // 10 % 4]}
        i += 1
    return out


def curve_chart(dataset: str, rows: list[dict], path: Path) -> Path:
    """Validation top-1 against fine-tuning epoch: one colour per arm, the mean over its runs
    as a line and their range as a band, scratch in black: whether the recipe is long enough
    for scratch to plateau."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from fractaldb.core.atomic import replace_atomically

    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    drawn = [r for r in rows if r.get("curve")]
    styles = arm_styles([r["arm"] for r in drawn])
    for r in drawn:
        epochs = np.arange(1, len(r["curve"]) + 1)
        style = styles[r["arm"]]
        ax.plot(epochs, r["curve"], label=f"{r['arm']} ({len(r.get('curves') or [])})", **style)
        runs = [c[: len(epochs)] for c in r.get("curves") or [] if len(c) >= len(epochs)]
        if len(runs) > 1:
            ax.fill_between(epochs, np.min(runs, axis=0), np.max(runs, axis=0),
                            color=style["color"], alpha=0.12, linewidth=0)  # fmt: skip
    ax.set_xlabel("fine-tuning epoch")
    ax.set_ylabel("val top-1 (%)")
    ax.set_title(f"{dataset}: validation during fine-tuning (mean of the runs, band: their "
                 "range)", fontsize=9)  # fmt: skip
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
        "Top-1 (%) on the held-out images, mean ± sample sd over every run of an arm (n = "
        "pre-training seeds x fine-tuning seeds; scratch has no pre-training seed); the "
        "difference from scratch with its 95 % confidence interval and p-value (Welch's "
        "t-test); train top-1 on a fixed subset of the training images under the evaluation "
        "transform. FLOPs: training, about 3x the forward pass per image seen (the MAE encoder "
        "sees its visible patches only); a two-stage arm counts both stages. The best epoch "
        "(a maximum over the same validation, optimistic) is in the JSON only.",
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
            "",
            *claims(tables[ds.name]),
        ]
    lines += ["", "![val top-1](results.png)", "", "Commands:", "", "```", *log, "```", ""]
    return "\n".join(lines)
