"""RUN/results.json: what was fine-tuned from what, and its accuracy per epoch.

Schema (version 2): dataset, dataset_splits {train, test} (what each split is), dataset_sha256
(fingerprint of the samples), num_classes, classes, model, model_args, img_size, init {source,
kind, pretrain_config, manifest_hash (the pre-training data's, from its RUN/metrics.jsonl),
weights_sha256, loaded, missing, unexpected, dropped_head, resampled, architecture (scratch),
...}, recipe, recipe_source, linear_probe, trainable_tensors, epochs (planned), batch_size, lr,
normalize, config ("config.yaml"), epochs_done, last {epoch, top1, top5}, best {epoch, top1,
top5, selected_on, optimistic}, history [{epoch, top1, top5, loss, train_loss[, train_top1]
[, ema_top1][, test_samples][, test_unreadable]}].

The held-out split evaluated every epoch is called "test" throughout (dataset_splits says what it
is: the dataset's test split, or the part of a folder held out by --val-per-class). Accuracies are
percentages on it; train_top1 on a fixed subset of the training images under the evaluation
transform (fewer than 5 classes: "top5" is top-k over all classes). "best" is the epoch with the
highest top-1 on that same split, so it is an optimistic figure (selected_on "test",
optimistic true); "last" is the honest one. Version 1 files (history keys val_samples,
val_unreadable; best without selected_on) are read through `upgrade_results`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fractaldb.core.atomic import write_text_atomically

SCHEMA_VERSION = 2
# the one name of the held-out split every epoch is evaluated on
HELD_OUT = "test"
# version 1 history keys -> their version 2 names
_RENAMED_V1 = {"val_samples": "test_samples", "val_unreadable": "test_unreadable"}
RESULTS_NAME = "results.json"


def new_results(**fields: Any) -> dict[str, Any]:
    """Start a results record with no epochs evaluated yet."""
    return {
        "schema": SCHEMA_VERSION,
        **fields,
        "epochs_done": 0,
        "best": None,
        "last": None,
        "history": [],
    }


def record_epoch(results: dict[str, Any], epoch: int, metrics: dict[str, float]) -> dict[str, Any]:
    """Append one evaluation (must contain top1, top5) and update best (by top-1) and last."""
    row = {"epoch": epoch, **{k: float(v) for k, v in metrics.items()}}
    results["history"].append(row)
    results["epochs_done"] = epoch
    results["last"] = {"epoch": epoch, "top1": row["top1"], "top5": row["top5"]}
    if results["best"] is None or row["top1"] > results["best"]["top1"]:
        # chosen on the split it reports: marked so, never mistaken for a held-out figure
        results["best"] = {**results["last"], "selected_on": HELD_OUT, "optimistic": True}
    return results


def upgrade_results(results: dict[str, Any]) -> dict[str, Any]:
    """A results record in the current schema: version 1 files get their history keys renamed
    (val_samples -> test_samples, val_unreadable -> test_unreadable) and best marked as
    selected on the test split; the old keys stay readable under their new names only."""
    if int(results.get("schema", 1)) >= SCHEMA_VERSION:
        return results
    for row in results.get("history") or []:
        for old, new in _RENAMED_V1.items():
            if old in row:
                row[new] = row.pop(old)
    if isinstance(results.get("best"), dict):
        results["best"] = {**results["best"], "selected_on": HELD_OUT, "optimistic": True}
    results["schema"] = SCHEMA_VERSION
    return results


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically and durably (fractaldb.core.atomic)."""
    write_text_atomically(path, json.dumps(obj, indent=2, default=str) + "\n")


def write_results(run: str | os.PathLike, results: dict[str, Any]) -> Path:
    """Write RUN/results.json atomically and return its path."""
    path = Path(run) / RESULTS_NAME
    write_json_atomic(path, results)
    return path
