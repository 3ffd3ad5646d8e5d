"""RUN/results.json: what was fine-tuned from what, and its accuracy per epoch.

Schema (version 1): dataset, dataset_splits, dataset_sha256 (fingerprint of the samples),
num_classes, classes, model, model_args, img_size, init {source, kind, pretrain_config,
manifest_hash (the pre-training data's, from its RUN/metrics.jsonl), weights_sha256, loaded,
missing, unexpected, dropped_head, resampled, ...}, recipe, recipe_source, linear_probe,
trainable_tensors, epochs (planned), batch_size, lr, normalize, config ("config.yaml"),
epochs_done, best {epoch, top1, top5}, last {epoch, top1, top5},
history [{epoch, top1, top5, loss, train_loss[, train_top1][, ema_top1]}]. Accuracies are
percentages on the test split, train_top1 on a fixed subset of the training images under the
evaluation transform (fewer than 5 classes: "top5" is top-k over all classes).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fractaldb.core.atomic import write_text_atomically

SCHEMA_VERSION = 1
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
        results["best"] = dict(results["last"])
    return results


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically and durably (fractaldb.core.atomic)."""
    write_text_atomically(path, json.dumps(obj, indent=2, default=str) + "\n")


def write_results(run: str | os.PathLike, results: dict[str, Any]) -> Path:
    """Write RUN/results.json atomically and return its path."""
    path = Path(run) / RESULTS_NAME
    write_json_atomic(path, results)
    return path
