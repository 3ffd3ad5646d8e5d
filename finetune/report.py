"""Compare fine-tuning and probe runs: markdown tables, a warning where runs shown side by side are
not like for like, and a bar chart with one bar per run."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fractaldb.core.atomic import replace_atomically
from fractaldb.core.errors import FractalDBError

from .results import HELD_OUT, RESULTS_NAME, upgrade_results

PROBE_NAME = "probe.json"
FINETUNE_COLUMNS = ("init", "dataset", "model", "img", "recipe", "epochs", "last top-1",
                    "best top-1*", "best top-5*", "run")  # fmt: skip
PROBE_COLUMNS = ("init", "dataset", "model", "img", "k-NN top-1", "linear-probe top-1", "run")
FOOTNOTE = (
    f"\\* best: the epoch with the highest top-1 on the same {HELD_OUT} split it reports "
    "(optimistic); last: the final epoch.\n"
)
# what makes two runs of one dataset comparable (probe.json has no recipe: fine-tuning only)
LIKE_FOR_LIKE = ("model", "model_args", "img_size", "recipe", "dataset_sha256")


def load_run(run: str | os.PathLike) -> dict[str, Any]:
    """Read RUN/results.json (`fractaldb finetune`) or RUN/probe.json (`fractaldb probe`); RUN may
    also be the file itself. The record gets _run (its folder) and _kind (finetune or probe)."""
    path = Path(run)
    if not path.exists():
        raise FractalDBError(
            f"{path} does not exist; fix: pass run folders of `fractaldb finetune` or `probe`"
        )
    if path.is_dir():
        path = path / (RESULTS_NAME if (path / RESULTS_NAME).is_file() else PROBE_NAME)
    if not path.is_file():
        raise FractalDBError(
            f"{path} not found (no epoch evaluated yet?); fix: pass finished `fractaldb finetune` runs"
        )
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise FractalDBError(f"{path} is not valid JSON ({err}); fix: re-run or remove it") from err
    probe = isinstance(results, dict) and "linear_top1" in results
    if not isinstance(results, dict) or "dataset" not in results:
        raise FractalDBError(
            f"{path} is not a fine-tuning or probe results file; fix: check the path"
        )
    if probe:
        # probe.json keeps --init as given and its summary apart
        summary = results.get("init_summary")
        results["init"] = summary if isinstance(summary, dict) else {"source": results["init"]}
    else:
        results = upgrade_results(results)
    results["_run"], results["_kind"] = str(path.parent), "probe" if probe else "finetune"
    return results


def _has_results(path: Path) -> bool:
    return (path / RESULTS_NAME).is_file() or (path / PROBE_NAME).is_file()


def load_runs(runs: list[str], note: Any = print) -> list[dict[str, Any]]:
    """Read every fine-tuning and probe run among `runs` (e.g. `runs/*`): folders with neither
    results.json nor probe.json (pre-training runs, runs not evaluated yet) are skipped with a note."""
    loaded, skipped = [], []
    for run in runs:
        path = Path(run)
        if path.is_dir() and not _has_results(path):
            skipped.append(path)
        elif path.is_dir() and (path / RESULTS_NAME).is_file() and (path / PROBE_NAME).is_file():
            loaded += [load_run(path / RESULTS_NAME), load_run(path / PROBE_NAME)]
        else:
            loaded.append(load_run(path))
    if not loaded:
        raise FractalDBError(
            f"no {RESULTS_NAME} in {', '.join(map(str, skipped[:3]))}"
            f"{' ...' if len(skipped) > 3 else ''} (pre-training runs, or no epoch evaluated yet); "
            "fix: pass `fractaldb finetune` or `fractaldb probe` run folders"
        )
    for path in skipped:
        note(f"note: skipped {path}: no {RESULTS_NAME} or {PROBE_NAME} (not a fine-tuning or "
             "probe run, or no epoch done)")  # fmt: skip
    # a run named twice (`runs/* runs/c10`) is one row
    return list({(os.path.realpath(r["_run"]), r["_kind"]): r for r in loaded}.values())


def init_label(results: dict[str, Any]) -> str:
    """Short name of the init source: 'scratch', 'timm', a run folder or weights file name."""
    init = results.get("init") or {}
    source = str(init.get("source", "?"))
    return source if source in ("scratch", "timm") else Path(source.rstrip("/")).name or source


def run_labels(runs: list[dict[str, Any]]) -> dict[str, str]:
    """A short, distinct label per run folder: its name, with as many parent folders as it takes
    to tell two runs of the same name apart."""
    paths = sorted({Path(r["_run"]) for r in runs})

    def label(p: Path) -> str:
        for depth in range(1, len(p.parts)):
            tail = p.parts[-depth:]
            if all(q.parts[-depth:] != tail for q in paths if q != p):
                return "/".join(tail)
        return str(p)

    return {str(p): label(p) for p in paths}


def ordered(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs sorted by dataset, init source, then run folder: the same whatever the argument order."""
    return sorted(runs, key=lambda r: (r["dataset"], init_label(r), r["_run"], r["_kind"]))


def _pct(block: dict[str, Any] | None, key: str) -> str:
    return f"{block[key]:.2f}" if block and block.get(key) is not None else "-"


def _recipe(r: dict[str, Any]) -> str:
    return str(r.get("recipe") or "-") + (" (linear probe)" if r.get("linear_probe") else "")


def rows(runs: list[dict[str, Any]]) -> list[list[str]]:
    """Fine-tuning table rows (FINETUNE_COLUMNS), sorted by dataset, init source, run."""
    out = []
    for r in ordered([r for r in runs if r["_kind"] == "finetune"]):
        epochs = f"{r.get('epochs_done', 0)}/{r.get('epochs', '?')}"
        best, last = r.get("best"), r.get("last")
        out.append(
            [init_label(r), r["dataset"], str(r.get("model", "-")), str(r.get("img_size", "-")),
             _recipe(r), epochs, _pct(last, "top1"), _pct(best, "top1"), _pct(best, "top5"),
             r["_run"]]
        )  # fmt: skip
    return out


def probe_rows(runs: list[dict[str, Any]]) -> list[list[str]]:
    """Probe table rows (PROBE_COLUMNS), sorted as `rows`."""
    return [
        [init_label(r), r["dataset"], str(r.get("model", "-")), str(r.get("img_size", "-")),
         _pct(r, "knn_top1"), _pct(r, "linear_top1"), r["_run"]]
        for r in ordered([r for r in runs if r["_kind"] == "probe"])
    ]  # fmt: skip


def _table(columns: tuple[str, ...], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(row) + " |" for row in body]


def _value(v: Any) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {v[k]}" for k in sorted(v)) + "}"
    return "-" if v is None else str(v)


def differences(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, list[str]]]]:
    """dataset -> key -> shown value -> run labels, for every key of LIKE_FOR_LIKE in which the
    runs of that dataset differ (recipe among fine-tuning runs only; "data" for the digest)."""
    labels = run_labels(runs)
    out: dict[str, dict[str, dict[str, list[str]]]] = {}
    for dataset in sorted({r["dataset"] for r in runs}):
        group = ordered([r for r in runs if r["dataset"] == dataset])
        for key in LIKE_FOR_LIKE:
            values: dict[str, list[str]] = {}
            for r in group:
                if key != "recipe" or r["_kind"] == "finetune":
                    shown = _recipe(r) if key == "recipe" else _value(r.get(key))
                    values.setdefault(shown, []).append(labels[r["_run"]])
            if len(values) < 2:
                continue
            if key == "dataset_sha256":  # the digests say nothing to a reader: the runs do
                values = {f"#{i + 1}": who for i, who in enumerate(values.values())}
            out.setdefault(dataset, {})["data" if key == "dataset_sha256" else key] = values
    return out


def mismatches(runs: list[dict[str, Any]]) -> list[str]:
    """One warning line per dataset whose runs differ in model, model args, image size, recipe
    (fine-tuning runs) or data: their figures are not like for like."""
    warnings = []
    for dataset, keys in differences(runs).items():
        differ = [
            f"{key} " + "; ".join(f"{v} ({', '.join(sorted(who))})" for v, who in values.items())
            for key, values in keys.items()
        ]
        warnings.append(
            f"warning: not like for like: the {dataset} runs differ in " + " | ".join(differ)
            + "; fix: compare runs with the same --model, --model-arg, --img-size, --recipe and "
            "data"
        )  # fmt: skip
    return warnings


def markdown_table(runs: list[dict[str, Any]]) -> str:
    """The report as markdown: a fine-tuning table, a probe table (accuracies in %), the note on
    "best" and a warning line for every dataset whose runs are not like for like."""
    parts = []
    body = rows(runs)
    if body:
        parts.append("\n".join(_table(FINETUNE_COLUMNS, body)) + "\n\n" + FOOTNOTE)
    body = probe_rows(runs)
    if body:
        parts.append("\n".join(_table(PROBE_COLUMNS, body)) + "\n")
    warnings = mismatches(runs)
    if warnings:
        parts.append("\n".join(f"**{w}**" for w in warnings) + "\n")
    return "\n".join(parts)


def chart_bars(runs: list[dict[str, Any]]) -> list[tuple[str, str, float]]:
    """(label, kind, top-1) per run, in table order: fine-tuning runs their last-epoch top-1
    (best is chosen on the split it reports), probes their linear-probe top-1."""
    labels = run_labels(runs)
    bars = []
    for r in ordered(runs):
        label = f"{r['dataset']}: {labels[r['_run']]} ({init_label(r)})"
        if r["_kind"] == "probe":
            bars.append((label, "linear probe (frozen)", r.get("linear_top1") or 0.0))
        else:
            bars.append((label, "fine-tuned, last epoch", (r.get("last") or {}).get("top1") or 0.0))
    return bars


def bar_chart(runs: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Horizontal bar chart, one bar per run labelled by its folder (and init), coloured by what
    the figure is; written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    bars = chart_bars(runs)
    kinds = sorted({kind for _, kind, _ in bars})
    colours = dict(zip(kinds, ("tab:blue", "tab:orange"), strict=False))
    fig, ax = plt.subplots(figsize=(8.0, 1.4 + 0.4 * len(bars)))
    y = list(range(len(bars)))[::-1]  # the first row of the table at the top
    drawn = ax.barh(y, [v for *_, v in bars], color=[colours[k] for _, k, _ in bars])
    ax.bar_label(drawn, fmt="%.1f", fontsize=9, padding=2)
    ax.set_yticks(y, [label for label, *_ in bars], fontsize=9)
    ax.set_xlabel(f"top-1 on the {HELD_OUT} split (%)", fontsize=10)
    ax.set_xlim(0, 105)
    handles = [Patch(color=colours[kind], label=kind) for kind in kinds]
    ax.legend(handles=handles, fontsize=8, loc="lower right")
    differ = sorted({key for keys in differences(runs).values() for key in keys})
    if differ:  # the chart travels without the table: it carries the warning too
        ax.set_title(f"warning: not like for like, runs differ in {', '.join(differ)} "
                     "(see the report)", color="tab:red", fontsize=9)  # fmt: skip
    fig.tight_layout()
    try:
        return replace_atomically(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    finally:
        plt.close(fig)
