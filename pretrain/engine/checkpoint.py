"""Atomic, weights_only-loadable training checkpoints (the one save/load pair of the project)."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fractaldb.core.atomic import link_or_copy, replace_atomically
from fractaldb.core.errors import FractalDBError
from pretrain.engine.models import unwrap
from pretrain.engine.runfolder import write_failure

FORMAT = "fractaldb-checkpoint/1"


def rng_state() -> dict[str, Any]:
    """This process's RNG states (torch, numpy, python, cuda) as tensors and plain types."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": int(version),
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss": py_gauss,
        },
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the RNG states written by rng_state()."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])


def save_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any,
    scaler: Any,
    ema: nn.Module | None,
    epoch: int,
    global_step: int,
    data_position: dict[str, int],
    config: dict[str, Any],
    manifest_sha256: str | None,
) -> Path:
    """Write everything needed to continue training to `path`, atomically (temp + rename).

    `epoch` is the number of completed epochs (the next epoch to run); RNG states are rank 0's.
    """
    path = Path(path)
    state = {
        "format": FORMAT,
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "ema": ema.state_dict() if ema is not None else None,
        "epoch": int(epoch),
        "global_step": int(global_step),
        "data_position": {k: int(v) for k, v in data_position.items()},
        "rng": rng_state(),
        "config": config,
        "manifest_sha256": manifest_sha256,
        "torch_version": str(torch.__version__),
    }
    try:
        replace_atomically(path, lambda tmp: torch.save(state, tmp))
    except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as RuntimeError
        raise write_failure("checkpoint", path, path.parent, exc) from exc
    return path


def keep_copy(last: Path, keep: Path) -> None:
    """Keep `last` as `keep` (a periodic checkpoint): a hard link where the file system allows,
    an atomic copy otherwise; one line if the disk is full."""
    try:
        link_or_copy(last, keep)
    except OSError as exc:
        raise write_failure("checkpoint", keep, keep.parent, exc) from exc


def _differing(saved: dict[str, Any], own: dict[str, Any]) -> list[str]:
    return [k for k, v in saved.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]


def check_class_count(path: Path, saved: dict[str, Any], model: nn.Module) -> None:
    """Refuse, in one line, weights whose classifier is for another class count than `model`'s
    (a run resumed on other data): the one shape difference that no setting explains."""
    own = model.state_dict()
    differ = _differing(saved, own)
    classes = getattr(model, "num_classes", None)
    # a classifier tensor: the class count first, every other dimension unchanged
    head = [
        k for k in differ if own[k].shape[0] == classes and own[k].shape[1:] == saved[k].shape[1:]
    ]
    if differ and head == differ:
        made = int(saved[head[0]].shape[0])
        raise FractalDBError(
            f"--resume {path}: the run was made with {made} classes, the data has {classes}; "
            "fix: use a new --out for this data (or resume with the run's own data)"
        )


def check_shapes(path: Path, saved: dict[str, Any], model: nn.Module) -> None:
    """Refuse, in one line and before anything is loaded, weights of other shapes or names than
    `model`'s (load_state_dict would raise a traceback)."""
    own = model.state_dict()
    differ = _differing(saved, own)
    missing, extra = sorted(set(own) - set(saved)), sorted(set(saved) - set(own))
    if not (differ or missing or extra):
        return
    found = [f"{k} {tuple(saved[k].shape)} vs {tuple(own[k].shape)}" for k in differ[:3]]
    found += [f"{k} missing" for k in missing[:2]] + [f"{k} not in this model" for k in extra[:2]]
    raise FractalDBError(
        f"--resume {path}: the checkpoint's weights do not fit this model ({', '.join(found)}); "
        "fix: resume with the original settings (see RUN/config.yaml) or use a new --out"
    )


def load_checkpoint(
    path: str | Path,
    *,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    ema: nn.Module | None = None,
    restore_rng: bool = False,
    before_load: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Load a checkpoint with weights_only=True into whichever components are given;
    `before_load(ckpt)` may refuse it first (other settings or data), before anything changes.

    Returns the checkpoint dict (epoch, global_step, data_position, config, manifest_sha256...).
    """
    path = Path(path)
    if not path.is_file():
        raise FractalDBError(f"checkpoint {path} not found; fix: check the --resume path")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: say so in one line
        raise FractalDBError(
            f"cannot read checkpoint {path} ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
            "fix: resume from another checkpoint or start a new --out"
        ) from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise FractalDBError(f"{path} is not a fractaldb checkpoint; fix: check the path")
    if model is not None:
        check_class_count(path, ckpt["model"], unwrap(model))
    if before_load is not None:
        before_load(ckpt)
    if model is not None:
        check_shapes(path, ckpt["model"], unwrap(model))
        unwrap(model).load_state_dict(ckpt["model"])
    if optimizer is not None and ckpt["optimizer"] is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and ckpt["scheduler"] is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    if scaler is not None and ckpt["scaler"] is not None:
        scaler.load_state_dict(ckpt["scaler"])
    if ema is not None:
        if ckpt["ema"] is None:
            raise FractalDBError(
                f"{path} holds no EMA weights but EMA is on; fix: resume with the same --set ema"
            )
        ema.load_state_dict(ckpt["ema"])
    if restore_rng:
        set_rng_state(ckpt["rng"])
    return ckpt
