"""Compare fine-tuning runs: a markdown table (init source x dataset) and a bar chart."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fractaldb.core.atomic import replace_atomically
from fractaldb.core.errors import FractalDBError

from .results import RESULTS_NAME

COLUMNS = (
    "init",
    "dataset",
    "model",
    "recipe",
    "epochs",
    "best top-1",
    "last top-1",
    "best top-5",
    "run",
)


def load_run(run: str | os.PathLike) -> dict[str, Any]:
    """Read RUN/results.json (RUN may also be the file itself)."""
    path = Path(run)
    if not path.exists():
        raise FractalDBError(
            f"{path} does not exist; fix: pass run folders of `fractaldb finetune`"
        )
    if path.is_dir():
        path = path / RESULTS_NAME
    if not path.is_file():
        raise FractalDBError(
            f"{path} not found (no epoch evaluated yet?); fix: pass finished `fractaldb finetune` runs"
        )
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise FractalDBError(f"{path} is not valid JSON ({err}); fix: re-run or remove it") from err
    if not isinstance(results, dict) or "dataset" not in results:
        raise FractalDBError(f"{path} is not a fine-tuning results file; fix: check the path")
    results["_run"] = str(path.parent)
    return results


def load_runs(runs: list[str], note: Any = print) -> list[dict[str, Any]]:
    """Read the results of every fine-tuning run among `runs` (e.g. `runs/*`): folders without
    results.json (pre-training runs, runs not evaluated yet) are skipped with a note."""
    loaded, skipped = [], []
    for run in runs:
        path = Path(run)
        if path.is_dir() and not (path / RESULTS_NAME).is_file():
            skipped.append(path)
            continue
        loaded.append(load_run(path))
    if not loaded:
        raise FractalDBError(
            f"no {RESULTS_NAME} in {', '.join(map(str, skipped[:3]))}"
            f"{' ...' if len(skipped) > 3 else ''} (pre-training runs, or no epoch evaluated yet); "
            "fix: pass `fractaldb finetune` run folders"
        )
    for path in skipped:
        note(f"note: skipped {path}: no {RESULTS_NAME} (not a fine-tuning run, or no epoch done)")
    return loaded


def init_label(results: dict[str, Any]) -> str:
    """Short name of the init source: 'scratch', 'timm', a run folder or weights file name."""
    init = results.get("init") or {}
    source = str(init.get("source", "?"))
    return source if source in ("scratch", "timm") else Path(source.rstrip("/")).name or source


def _pct(block: dict[str, Any] | None, key: str) -> str:
    return f"{block[key]:.2f}" if block and block.get(key) is not None else "-"


def rows(runs: list[dict[str, Any]]) -> list[list[str]]:
    """Table rows sorted by dataset then init source."""
    out = []
    for r in sorted(runs, key=lambda r: (r["dataset"], init_label(r), r["_run"])):
        recipe = str(r.get("recipe", "-")) + (" (linear probe)" if r.get("linear_probe") else "")
        epochs = f"{r.get('epochs_done', 0)}/{r.get('epochs', '?')}"
        best, last = r.get("best"), r.get("last")
        out.append(
            [init_label(r), r["dataset"], str(r.get("model", "-")), recipe, epochs,
             _pct(best, "top1"), _pct(last, "top1"), _pct(best, "top5"), r["_run"]]
        )  # fmt: skip
    return out


def markdown_table(runs: list[dict[str, Any]]) -> str:
    """Markdown table of the runs (accuracies in %)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(runs)]
    return "\n".join(lines) + "\n"


def bar_chart(runs: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Grouped bar chart of best top-1 per dataset, one bar per init source; written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    datasets = sorted({r["dataset"] for r in runs})
    inits = sorted({init_label(r) for r in runs})
    best = {(r["dataset"], init_label(r)): (r.get("best") or {}).get("top1") or 0.0 for r in runs}
    width = 0.8 / len(inits)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.5 * len(datasets) * max(1, len(inits)) / 2), 3.5))
    x = np.arange(len(datasets))
    for i, init in enumerate(inits):
        heights = [best.get((d, init), 0.0) for d in datasets]
        bars = ax.bar(x + (i - (len(inits) - 1) / 2) * width, heights, width, label=init)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(x, datasets)
    ax.set_ylabel("best top-1 (%)")
    ax.set_ylim(0, 100)
    ax.legend(title="init", fontsize=7)
    fig.tight_layout()
    try:
        return replace_atomically(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    finally:
        plt.close(fig)
