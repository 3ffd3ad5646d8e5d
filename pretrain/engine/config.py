"""Recipes as data: shipped YAML files, explicit overrides, and strict key checking.

A resolved configuration is a flat dict: the engine's keys (ENGINE_DEFAULTS) plus the keys the
task declares (Task.defaults), overlaid by the recipe file and then by explicit overrides.
Any key outside that set is an error, so a typo can never be silently ignored.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from fractaldb.core.errors import FractalDBError
from fractaldb.core.options import parse_key_values, parse_value  # noqa: F401  (re-exported)
from fractaldb.core.workers import check_workers

ENGINE_DEFAULTS: dict[str, Any] = {
    "description": "",
    "source": "",
    "task": "supervised",
    # model
    "model": None,
    "model_args": {},
    "img_size": 224,
    # start from another run's weights (RUN/model.safetensors or a .safetensors file): every
    # tensor whose name and shape match, the classifier head left fresh (e.g. MAE, then
    # supervised training on fractals)
    "init_weights": None,
    # data (paths are recorded for reproducibility; the manifest hash is what resume checks)
    "data": None,
    "val_data": None,
    "on_the_fly": None,
    # --on-the-fly only: the render settings (a `fractaldb render` preset; when not given,
    # pretrain.sources.ONTHEFLY_PRESET) and the grid size; left empty for runs that read shards
    "render_preset": None,
    # render settings over the preset's (image_size, points, mode, color, scheme, ...)
    "render": {},
    # where to render: auto = on the GPU when training on CUDA (fractaldb[cuda]), else in
    # loader workers; gpu_mode: exact (the CPU's pixels) or fast (same distribution)
    "render_device": "auto",
    "gpu_mode": "exact",
    "instances_per_category": None,
    "samples_per_epoch": None,
    "workers": 8,
    # where training images are augmented: `device` (uint8 batches from the loader, augmented
    # on the training device by the task, pretrain/engine/augment.py), `cpu` (timm's PIL transform in
    # the loader workers), or `auto` (device on CUDA, cpu otherwise; see docs/training.md)
    "augment": "auto",
    # batch and learning rate: batch_size is GLOBAL (all ranks, all accumulation steps)
    "batch_size": 1024,
    "micro_batch": None,
    "lr": None,
    "blr": 5.0e-4,
    "lr_base_size": 512,
    # optimizer (timm create_optimizer_v2)
    "opt": "adamw",
    "weight_decay": 0.05,
    "opt_eps": None,
    "opt_betas": None,
    "momentum": 0.9,
    "layer_decay": None,
    # per-step schedule (timm create_scheduler_v2)
    "sched": "cosine",
    "epochs": 300,
    "warmup_epochs": 5,
    "warmup_lr": 1.0e-6,
    "min_lr": 1.0e-5,
    # numerics
    "amp": "auto",
    "clip_grad": None,
    # None: on for CUDA, off on CPU (--compile / --no-compile force it)
    "compile": None,
    "ema": False,
    "ema_decay": 0.9998,
    # run control
    "seed": 0,
    "device": "auto",
    "log_every": 50,
    "save_every": 10,
    "eval_every": 1,
    # undecodable samples (or unreadable shards) skipped per epoch before the run stops
    "max_bad_samples": 100,
    # what fell back on this machine and why (torch.compile -> eager, fused AdamW -> plain,
    # GPU rendering -> CPU): a record of the run, written by the engine, never an input
    "fallbacks": {},
}

# Where training images are augmented (the `augment` key): the batched device path, timm's PIL
# chain in the loader workers, or auto (resolved once, by resolve_config).
AUGMENT_MODES = ("auto", "cpu", "device")
# On a CPU-only machine the PIL path stays the default: see docs/training.md "The device data path".
CPU_DEFAULT = "cpu"
# Autocast dtypes (the `amp` key); auto = bf16 on GPU, none on CPU (engine.loop.resolve_amp).
AMP_MODES = ("auto", "bf16", "fp16", "none")

# Keys that may differ between a run and its resumption without changing the result.
RESUME_MUTABLE_KEYS = frozenset(
    {
        "data",
        "val_data",
        "on_the_fly",
        "workers",
        "device",
        "log_every",
        "save_every",
        "compile",
        "max_bad_samples",
        "render_device",  # exact GPU renders are the CPU's pixels
        "fallbacks",
    }
)


def list_recipes(package: str = "pretrain") -> list[str]:
    """Names of the recipes shipped in `package`/recipes (pretrain, finetune)."""
    folder = resources.files(package) / "recipes"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_recipe(name_or_path: str, package: str = "pretrain") -> dict[str, Any]:
    """Load a recipe shipped in `package` by name, or any YAML file by path (e.g. a previous
    RUN/config.yaml)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        text = path.read_text()
    else:
        res = resources.files(package) / "recipes" / f"{name_or_path}.yaml"
        if not res.is_file():
            names = list_recipes(package)
            close = difflib.get_close_matches(name_or_path, names, n=3)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise FractalDBError(
                f"unknown recipe {name_or_path!r}; {hint}fix: use one of {', '.join(names)} "
                "or a path to a .yaml file"
            )
        text = res.read_text()
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise FractalDBError(f"recipe {name_or_path} is not valid YAML ({e}); fix: the file") from e
    if not isinstance(data, dict):
        raise FractalDBError(f"recipe {name_or_path} is not a mapping; fix: write key: value lines")
    return data


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "str"
    if isinstance(v, (list, tuple)):
        return "list"
    if isinstance(v, dict):
        return "dict"
    return type(v).__name__


def _check_key(key: str, value: Any, defaults: dict[str, Any], where: str) -> None:
    if key not in defaults:
        close = difflib.get_close_matches(key, list(defaults), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise FractalDBError(
            f"unknown configuration key {key!r} in {where}; {hint}"
            f"fix: use one of the keys printed by --print-config"
        )
    default = defaults[key]
    # None defaults accept anything; otherwise the broad kind must match (1 vs 1.0 is fine).
    if default is not None and value is not None and _kind(default) != _kind(value):
        raise FractalDBError(
            f"configuration key {key!r} in {where} should be a {_kind(default)}, got {value!r}; "
            f"fix: e.g. {key}={default!r}"
        )


def resolve_config(
    task_defaults: dict[str, Any],
    recipe: str | None,
    overrides: dict[str, Any],
    task_name: str,
) -> dict[str, Any]:
    """Merge engine defaults, the task's defaults, a recipe and explicit overrides (in that order)."""
    defaults = {**ENGINE_DEFAULTS, **task_defaults, "task": task_name}
    cfg = dict(defaults)
    if recipe:
        data = load_recipe(recipe)
        for k, v in data.items():
            _check_key(k, v, defaults, f"recipe {recipe}")
        if data.get("task", task_name) != task_name:
            raise FractalDBError(
                f"recipe {recipe} is for task {data['task']!r}, not {task_name!r}; "
                f"fix: use `fractaldb pretrain {data['task']}` or another recipe"
            )
        cfg.update(data)
    for k, v in overrides.items():
        _check_key(k, v, defaults, "overrides")
        cfg[k] = v
    # Whole numbers in float slots (e.g. lr=1) are fine; normalise so config.yaml is tidy.
    for k, v in cfg.items():
        if isinstance(defaults.get(k), float) and isinstance(v, int) and not isinstance(v, bool):
            cfg[k] = float(v)
    cfg["model_args"] = dict(cfg.get("model_args") or {})
    # an old RUN/config.yaml as the recipe must not carry another machine's fallbacks
    cfg["fallbacks"] = {}
    check_ranges(cfg)
    # resolved here, once, and recorded: a resume on another machine keeps the same data path;
    # batches rendered on the GPU are augmented where they are
    gpu_rendered = bool(cfg.get("on_the_fly")) and cfg.get("render_device") == "cuda"
    cfg["augment"] = resolve_augment(cfg["augment"], cfg["device"], gpu_rendered)
    return cfg


def resolve_augment(mode: str, device: str = "auto", batches_on_device: bool = False) -> str:
    """`auto` -> `device` when training on CUDA (or when the batches already are on the
    device), else CPU_DEFAULT; `cpu`/`device` as given."""
    if mode not in AUGMENT_MODES:
        raise FractalDBError(f"augment {mode!r}; fix: --augment auto, cpu or device")
    if mode != "auto":
        return mode
    if batches_on_device or str(device).startswith("cuda"):
        return "device"
    if device == "auto":
        import torch  # here only: the configuration is read by the torch-free CLI

        if torch.cuda.is_available():
            return "device"
    return CPU_DEFAULT


def on_device(cfg: dict[str, Any]) -> bool:
    """Whether this run augments on the device (loaders then deliver uint8 batches); reads the
    mode resolve_config settled."""
    mode = cfg["augment"]
    if mode not in ("cpu", "device"):
        raise ValueError(f"augment {mode!r} is not resolved; build configs with resolve_config")
    return mode == "device"


def record_fallback(cfg: dict[str, Any], what: str, message: str) -> None:
    """Record in cfg["fallbacks"] (so in RUN/config.yaml) that `what` fell back, and say so in
    one warning line on stderr (rank 0 only)."""
    import os
    import sys

    from tqdm import tqdm  # writes around a progress bar, if one is showing

    line = " ".join(message.split())
    cfg.setdefault("fallbacks", {})[what] = line
    if os.environ.get("RANK", "0") == "0":
        tqdm.write(f"warning: {line}", file=sys.stderr)


def _auto_augment_name(policy: str) -> str:
    """The name of timm's augmentation policy family for an auto_augment string."""
    if policy.startswith("rand"):
        return "RandAugment"
    if policy.startswith("augmix"):
        return "AugMix"
    return "AutoAugment"


def effective_color_jitter(cfg: dict[str, Any]) -> float:
    """The colour jitter strength that actually runs.

    timm's create_transform (and so DeiT's training script) drops colour jitter whenever an
    auto_augment policy is set, unless the policy name contains '3a' (3-Augment); every
    augmentation path (PIL or device) applies this rule, so the recipes mean the same thing.
    """
    jitter = cfg.get("color_jitter")
    policy = cfg.get("auto_augment")
    if not jitter or (policy and "3a" not in str(policy)):
        return 0.0
    return float(jitter)


def config_notes(cfg: dict[str, Any]) -> dict[str, str]:
    """Notes on keys whose value is not what runs (shown in config.yaml and the log)."""
    notes = {}
    if cfg.get("color_jitter") and not effective_color_jitter(cfg):
        name = _auto_augment_name(str(cfg["auto_augment"]))
        notes["color_jitter"] = f"off: {name} replaces it, as in timm and DeiT"
    return notes


def describe_value(cfg: dict[str, Any], key: str) -> str:
    """A key's value for the log, with its note if what runs differs, e.g. `0.4 (off: ...)`."""
    note = config_notes(cfg).get(key)
    return f"{cfg[key]} ({note})" if note else str(cfg[key])


MAX_IMG_SIZE = 4096  # the renderer's largest image too
# key -> (smallest allowed value, whether the smallest is excluded, whether None is allowed)
_RANGES: dict[str, tuple[float, bool, bool]] = {
    "epochs": (1, False, False),
    "batch_size": (1, False, False),
    "micro_batch": (1, False, True),
    "lr": (0, True, True),
    "blr": (0, True, False),
    "lr_base_size": (0, True, False),
    "img_size": (8, False, False),
    "workers": (0, False, False),
    "warmup_epochs": (0, False, False),
    "weight_decay": (0, False, False),
    "log_every": (1, False, False),
    "eval_every": (1, False, False),
    "save_every": (0, False, True),
    "samples_per_epoch": (1, False, True),
    "max_bad_samples": (0, False, False),
}
# keys that have their own command-line option (the others are set with --set KEY=VALUE)
_OPTION_KEYS = {
    "epochs",
    "batch_size",
    "micro_batch",
    "lr",
    "blr",
    "img_size",
    "workers",
    "log_every",
    "save_every",
    "samples_per_epoch",
    "max_bad_samples",
}
_INTEGER_KEYS = _RANGES.keys() - {"lr", "blr", "weight_decay"}


def check_ranges(cfg: dict[str, Any]) -> None:
    """Refuse out-of-range numbers (epochs 0, a negative lr...) with one line naming the key."""
    for key, (low, exclusive, nullable) in _RANGES.items():
        if key not in cfg or (nullable and cfg[key] is None):
            continue
        value = cfg[key]
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if number and key in _INTEGER_KEYS:
            number = float(value).is_integer()
        ok = number and (value > low if exclusive else value >= low)
        if not ok:
            flag = f"--{key.replace('_', '-')}" if key in _OPTION_KEYS else f"--set {key}="
            sep = " " if key in _OPTION_KEYS else ""
            kind = "an integer" if key in _INTEGER_KEYS else "a number"
            bound = f"> {low:g}" if exclusive else f">= {low:g}"
            example = {"lr": 1e-3}.get(key) or ENGINE_DEFAULTS.get(key) or max(low, 1)
            raise FractalDBError(
                f"{key} must be {kind} {bound}, got {value!r}; fix: e.g. {flag}{sep}{example:g}"
            )
    if "workers" in cfg:
        check_workers(int(cfg["workers"]))
    if int(cfg.get("img_size") or 0) > MAX_IMG_SIZE:
        raise FractalDBError(
            f"img_size {cfg['img_size']} is over the limit of {MAX_IMG_SIZE} px (a ViT at that "
            "size holds tens of thousands of tokens per image); fix: e.g. --img-size 224"
        )


def dump_config(cfg: dict[str, Any]) -> str:
    """The resolved configuration as YAML (loadable again with --recipe PATH); keys whose value
    does not run as written carry a comment saying what does."""
    text = yaml.safe_dump(_plain(cfg), sort_keys=False, default_flow_style=None, width=100)
    notes = config_notes(cfg)
    if not notes:
        return text
    lines = []
    for line in text.splitlines():
        key = line.split(":", 1)[0]
        lines.append(f"{line}  # {notes[key]}" if key in notes and not line[:1].isspace() else line)
    return "\n".join(lines) + "\n"


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Keys whose values differ between two configs, ignoring RESUME_MUTABLE_KEYS."""
    keys = (set(old) | set(new)) - RESUME_MUTABLE_KEYS
    return sorted(k for k in keys if _plain(old.get(k)) != _plain(new.get(k)))
