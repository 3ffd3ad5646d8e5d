"""The machine-readable results: `transfer-BUDGET-DATASET[-VARIANT].json`, one per budget,
variant and downstream set, merged after every invocation (a chunk of arms or seeds).

Each measured run is filed under its arm and a key that is the same in every checkout
(`shared/pt0/ft1`, `ld0.65/pt1/ft0`, `shared/pt0/probe`); a later invocation reads the file, skips
the runs it holds even when their run folders are gone (a pre-training it still needs is run
again: pre-training is deterministic), and writes the pooled table of every arm so far."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks.transfer.downstream import REPO, BadInput
from benchmarks.transfer.plan import Unit

DEFAULT_RESULTS_DIR = REPO / "benchmarks" / "results"
FORMAT = 1


def results_path(results_dir: Path, budget: str, dataset: str, variant: list[str]) -> Path:
    """The file of one budget, variant (the options that change the figures) and set."""
    slug = "".join(f"-{v.lstrip('-')}" for v in variant)
    return results_dir / f"transfer-{budget}-{dataset}{slug}.json"


def commit() -> str:
    """The checkout's commit (with -dirty when files differ from it), or "unknown"."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def load(path: Path, budget: str, variant: list[str]) -> dict[str, Any]:
    """The stored document, or an empty one when the file is not there; BadInput when it is
    unreadable or of another budget or variant (nothing is overwritten then)."""
    if not path.exists():
        return {
            "format": FORMAT,
            "budget": budget,
            "variant": variant,
            "arms": {},
            "invocations": [],
        }
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"{path} is not readable JSON ({exc}); fix: restore or delete it") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("arms"), dict):
        raise BadInput(f"{path} holds no per-arm results; fix: restore or delete it")
    if doc.get("budget") != budget or doc.get("variant") != variant:
        raise BadInput(
            f"{path} holds budget {doc.get('budget')!r} variant {doc.get('variant')!r}, not "
            f"{budget!r} {variant!r}; fix: another --results-dir, or delete it"
        )
    doc.setdefault("invocations", [])
    return doc


def read_unit(unit: Unit) -> dict[str, Any] | None:
    """A finished run's figures from its folder (None while it is not finished)."""
    if unit.ft is None:
        path = unit.folder / "probe.json"
        if not path.exists():
            return None
        probe = json.loads(path.read_text())
        return {"linear": probe["linear_top1"], "knn": probe["knn_top1"],
                "img_size": probe["img_size"]}  # fmt: skip
    if not (unit.folder / "model.safetensors").exists():
        return None
    from finetune.report import load_run

    run = load_run(unit.folder)
    history = run["history"]
    return {
        "last": run["last"]["top1"],
        "best": run["best"]["top1"],  # a maximum over validation: optimistic
        "train": history[-1].get("train_top1") if history else None,
        "curve": [h["top1"] for h in history],
        "img_size": run["img_size"],
        "epochs": run["epochs"],
    }


def stored(doc: dict[str, Any], unit: Unit) -> dict[str, Any] | None:
    """The unit's figures in the stored document, if any."""
    return doc["arms"].get(unit.arm, {}).get("runs", {}).get(unit.key)


def merge(
    doc: dict[str, Any],
    units: list[Unit],
    costs: dict[str, Any],
    saw: dict[str, str],
    invocation: dict[str, Any],
) -> dict[str, Any]:
    """The document with every finished unit's figures (from its folder: the newest), each
    planned arm's cost and what it saw, and this invocation's record."""
    for unit in units:
        record = read_unit(unit)
        if record is None:
            continue
        arm = doc["arms"].setdefault(unit.arm, {"runs": {}})
        arm["runs"][unit.key] = record
    for name, cost in costs.items():
        if name in doc["arms"]:
            doc["arms"][name]["cost"] = cost.as_dict()
            doc["arms"][name]["saw"] = saw.get(name, "")
    doc["invocations"].append(invocation)
    doc["commit"] = invocation["commit"]
    return doc


def invocation(argv: list[str], minutes: float, commands: list[str]) -> dict[str, Any]:
    """What ran: the command line, commit, wall time and its fractaldb commands."""
    return {
        "command": "python -m benchmarks.transfer " + " ".join(argv),
        "commit": commit(),
        "minutes": round(minutes, 1),
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "fractaldb_commands": commands,
    }


def write(path: Path, doc: dict[str, Any]) -> Path:
    """Write the document atomically (a reader never sees half of it)."""
    from fractaldb.core.atomic import write_text_atomically

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, json.dumps(doc, indent=1) + "\n")
    return path
