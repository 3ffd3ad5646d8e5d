"""Initialise a fine-tuning model from a pre-training run, a weights file, timm, or scratch.

Supervised checkpoints, MAE encoder-only checkpoints and full MAE checkpoints (encoder keys
possibly under a prefix such as `encoder.`; decoder keys are reported as unexpected) all load.
The source's classifier head is never loaded: a fine-tune starts from the model's own fresh
head even when the class counts match (MAE's fine-tuning re-initialises the head after
loading; DeiT's drops it only on a shape mismatch, which would start a CIFAR-10 fine-tune from
a trained CIFAR-10 classifier). Absolute position embeddings are resampled to the new grid and
patch-embedding kernels to the new patch size with timm's helpers. Any other shape mismatch, or nothing matching at all, is an error: a run
that asked for pre-trained weights never silently trains from scratch.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fractaldb.core.errors import FractalDBError

SHOW_KEYS = 8  # how many missing/unexpected keys are printed before "..."
# wrappers added by DDP / torch.compile; stripped before matching
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def _load_failure(err: Exception) -> str:
    """torch.load's reason in a few words, without its advice to load with weights_only=False
    (which would run whatever code the untrusted file holds)."""
    text = str(err)
    if "WeightsUnpickler error:" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()
        return detail[0] if detail else "unsupported content"
    first = text.splitlines()[0] if text else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def _read_weights(path: Path) -> dict[str, Any]:
    """Read a state dict from .safetensors, or .pt/.pth with torch.load(weights_only=True)."""
    import torch

    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # safetensors raises its own error types for bad headers
            raise FractalDBError(
                f"cannot read {path} as safetensors ({err}); fix: re-export it"
            ) from err
    if suffix in (".pt", ".pth", ".bin", ".ckpt"):
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as err:  # pickle refusals and corrupt files alike
            raise FractalDBError(
                f"cannot load {path} with torch.load(weights_only=True): not a plain PyTorch "
                f"weights file ({_load_failure(err)}); fix: save a plain state dict or a "
                ".safetensors file"
            ) from err
        for key in ("model", "state_dict", "model_ema"):
            if isinstance(obj, dict) and isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
            raise FractalDBError(
                f"{path} holds no state dict of tensors; fix: save {{'model': model.state_dict()}}"
            )
        return obj
    raise FractalDBError(
        f"--init {path}: unknown weights format {suffix!r}; fix: use .safetensors, .pt or .pth"
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _manifest_hash(run: Path | None) -> str | None:
    """The pre-training data's manifest hash, from the setup line the engine writes to
    RUN/metrics.jsonl (the last one: a resumed run appends its own)."""
    path = run / "metrics.jsonl" if run is not None else None
    if path is None or not path.is_file():
        return None
    found = None
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by an interruption
        if isinstance(entry, dict) and entry.get("type") == "setup":
            found = entry.get("manifest_sha256") or found
    return found


def resolve_init(source: str) -> dict[str, Any]:
    """Describe an --init SOURCE: kind, weights path, pre-training config and manifest hash."""
    import yaml

    if source in ("scratch", "timm"):
        return {
            "kind": source,
            "source": source,
            "weights": None,
            "config": None,
            "manifest_hash": None,
        }
    path = Path(source)
    if not path.exists():
        raise FractalDBError(
            f"--init {source} does not exist; fix: pass a pre-training run folder, "
            "a .safetensors/.pt file, 'timm' or 'scratch'"
        )
    config, run = None, None
    if path.is_dir():
        run = path
        weights = path / "model.safetensors"
        if not weights.is_file():
            raise FractalDBError(
                f"--init {source} has no model.safetensors; fix: point at a finished pre-training "
                "run folder or at a weights file"
            )
        if (path / "config.yaml").is_file():
            try:
                config = yaml.safe_load((path / "config.yaml").read_text())
            except yaml.YAMLError as err:
                raise FractalDBError(
                    f"{path / 'config.yaml'} is not valid YAML ({err}); fix: restore the run's file"
                ) from err
    else:
        weights = path
    return {
        "kind": "run" if run else "file",
        "source": str(path),
        "weights": str(weights),
        "config": config,
        "manifest_hash": _manifest_hash(run),
    }


def _classifier_prefixes(model: Any) -> tuple[str, ...]:
    """Name prefixes of the classifier head(s), from timm's pretrained_cfg."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier") or "head"
    names = (names,) if isinstance(names, str) else tuple(names)
    return tuple(n + "." for n in names)


def _strip_prefix(state: dict[str, Any], model_keys: set[str]) -> tuple[dict[str, Any], str]:
    """Remove wrapper prefixes, then the leading module name that makes the most keys match."""
    out = {}
    for k, v in state.items():
        for p in _WRAPPER_PREFIXES:
            k = k.removeprefix(p)
        out[k] = v
    candidates = {""} | {k.split(".", 1)[0] + "." for k in out if "." in k}
    best = max(
        sorted(candidates),
        key=lambda p: sum(k[len(p) :] in model_keys for k in out if k.startswith(p)),
    )
    if not best:
        return out, ""
    # full MAE checkpoints keep the encoder under a prefix; everything else there is unexpected
    stripped = {k[len(best) :]: v for k, v in out.items() if k.startswith(best)}
    stripped.update({k: v for k, v in out.items() if not k.startswith(best)})
    return stripped, best


def _pos_embed_prefix(model: Any) -> int:
    return (
        0
        if getattr(model, "no_embed_class", False)
        else int(getattr(model, "num_prefix_tokens", 1))
    )


def _is_square(n: int) -> bool:
    return n > 0 and math.isqrt(n) ** 2 == n


def _match_prefix_tokens(value: Any, src: int, dst: int) -> tuple[Any, str]:
    """Give a pos_embed `dst` prefix-token rows instead of `src`: a distillation token's new row
    starts as a copy of the class token's (both are read by a head); extra rows are dropped."""
    import torch

    prefix, grid = value[:, :src], value[:, src:]
    if dst > src:
        extra = prefix[:, :1].expand(-1, dst - src, -1)
        return torch.cat([prefix, extra, grid], dim=1), (
            f"{dst - src} new prefix token position(s) (distillation token) copied from the "
            "class token's"
        )
    return torch.cat(
        [prefix[:, :dst], grid], dim=1
    ), f"dropped {src - dst} prefix token position(s)"


def _adapt(key: str, value: Any, target: Any, model: Any) -> tuple[Any, str | None]:
    """Resample pos_embed / patch-embed kernels (size and input channels) to the target shape;
    return (tensor, note)."""
    from timm.layers import resample_abs_pos_embed, resample_patch_embed

    if key.endswith("pos_embed") and value.ndim == 3 and value.shape[-1] == target.shape[-1]:
        prefix = _pos_embed_prefix(model)
        new_n = target.shape[1] - prefix
        new = getattr(model.patch_embed, "grid_size", None)
        new = tuple(new) if new is not None else (math.isqrt(new_n),) * 2
        # a plain ViT has one prefix token (class), a distilled DeiT two (class, distillation)
        src = next((p for p in (prefix, 1, 2) if _is_square(value.shape[1] - p)), None)
        if src is None or new[0] * new[1] != new_n:
            return value, None
        old = math.isqrt(value.shape[1] - src)
        notes = []
        if (old, old) != new:
            value = resample_abs_pos_embed(
                value.float(), new_size=list(new), old_size=[old, old], num_prefix_tokens=src
            ).to(value.dtype)
            notes.append(f"resampled grid {old}x{old} -> {new[0]}x{new[1]}")
        if src != prefix:
            value, note = _match_prefix_tokens(value, src, prefix)
            notes.append(note)
        return value, f"{key}: {'; '.join(notes)}" if notes else None
    if (
        key.endswith("patch_embed.proj.weight")
        and value.ndim == 4
        and value.shape[0] == target.shape[0]
    ):
        notes = []
        if value.shape[1] != target.shape[1]:
            value, note = _adapt_channels(key, value, target.shape[1])
            notes.append(note)
        if value.shape[-2:] != target.shape[-2:]:
            new = list(target.shape[-2:])
            old_kernel = tuple(value.shape[-2:])
            value = resample_patch_embed(value.float(), new).to(value.dtype)
            notes.append(f"{key}: resampled kernel {old_kernel} -> {tuple(new)}")
        return value, "; ".join(notes) or None
    return value, None


def _adapt_channels(key: str, value: Any, channels: int) -> tuple[Any, str]:
    """timm's adapt_input_conv: e.g. gray-pretrained (in_chans=1) kernels for an RGB model are
    repeated over the three channels and scaled by 1/3, so a gray image gives the same output."""
    from timm.models import adapt_input_conv

    try:
        adapted = adapt_input_conv(channels, value, base_chans=value.shape[1])
    except TypeError as err:  # timm < 1.0.31 adapts only from 3-channel weights
        raise FractalDBError(
            f"{key} was pre-trained on {value.shape[1]} channel(s) and the model takes "
            f"{channels}; adapting them needs timm >= 1.0.31 (adapt_input_conv base_chans); "
            "fix: pip install -U timm"
        ) from err
    how = " (gray kernels repeated over RGB, scaled by 1/3)" if value.shape[1] == 1 else ""
    return adapted, (
        f"{key}: adapted {value.shape[1]} -> {channels} input channels with timm's "
        f"adapt_input_conv{how}"
    )


def load_state_into(
    model: Any, state: dict[str, Any], source: str, echo: Callable[[str], None] = print
) -> dict[str, Any]:
    """Load matching tensors of `state` into `model`; return counts, notes and dropped keys."""
    own = model.state_dict()
    state, prefix = _strip_prefix(state, set(own))
    heads = _classifier_prefixes(model)
    matched, notes, dropped, mismatched, unexpected = {}, [], [], [], []
    reshaped = []  # classifier tensors of another shape (another class count)
    for key, value in state.items():
        if key not in own:
            unexpected.append(key)
            continue
        target = own[key]
        if key.startswith(heads):
            dropped.append(key)
            if value.shape != target.shape:
                reshaped.append(key)
            continue
        if value.shape != target.shape:
            value, note = _adapt(key, value, target, model)
            if value.shape != target.shape:
                mismatched.append(f"{key} {tuple(value.shape)} vs {tuple(target.shape)}")
                continue
            notes.append(note)
        matched[key] = value
    if mismatched:
        raise FractalDBError(
            f"--init {source} does not fit the model: {len(mismatched)} tensors differ in shape "
            f"(e.g. {'; '.join(mismatched[:3])}); fix: pass the --model/--model-arg used in "
            "pre-training, or --init scratch"
        )
    if not matched:
        raise FractalDBError(
            f"--init {source}: no tensor matches the model ({len(unexpected)} unexpected keys, "
            f"e.g. {', '.join(unexpected[:3]) or 'none'}); fix: pass the --model used in "
            "pre-training, or --init scratch to train from scratch on purpose"
        )
    result = model.load_state_dict(matched, strict=False)
    missing = list(result.missing_keys)

    def show(keys: list[str]) -> str:
        more = f", ... (+{len(keys) - SHOW_KEYS})" if len(keys) > SHOW_KEYS else ""
        return ", ".join(keys[:SHOW_KEYS]) + more

    echo(f"init: loaded {len(matched)}/{len(own)} tensors from {source}")
    if prefix:
        echo(f"init: took the model from keys under {prefix!r}")
    for note in notes:
        echo(f"init: {note}")
    if reshaped:
        echo(f"init: dropped classifier with a different shape: {show(reshaped)}")
    same = [k for k in dropped if k not in reshaped]
    fresh = [k for k in own if k.startswith(heads)]
    if fresh:
        echo(
            f"init: classifier head starts fresh (the model's own initialisation): {show(fresh)}"
            + (f"; the source's same-shape {show(same)} not loaded" if same else "")
        )
    echo(f"init: missing keys ({len(missing)}): {show(missing) or '-'}")
    new_distill = [k for k in missing if k == "dist_token" or k.startswith("head_dist.")]
    if new_distill and "dist_token" not in state:
        echo(
            f"init: the source has no distillation token: {', '.join(new_distill)} start new "
            "(random), as DeiT's distilled fine-tuning from a plain ViT expects"
        )
    echo(f"init: unexpected keys ({len(unexpected)}): {show(unexpected) or '-'}")
    return {
        "loaded": len(matched),
        "missing": len(missing),
        "unexpected": len(unexpected),
        "missing_keys": missing,
        "dropped_head": dropped,
        # results.json records the rule: runs made before it may have kept a same-shape head
        "head": "fresh",
        "resampled": notes,
        "key_prefix": prefix,
    }


def load_init(
    model: Any,
    source: str,
    *,
    model_name: str | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Initialise `model` from SOURCE (run folder, weights file, 'timm' or 'scratch'); return a summary."""
    info = resolve_init(source)
    summary: dict[str, Any] = {
        "source": info["source"],
        "kind": info["kind"],
        "pretrain_config": info["config"],
        "manifest_hash": info["manifest_hash"],
        "loaded": 0,
        "missing": 0,
        "unexpected": 0,
        "head": "fresh",
    }
    if info["kind"] == "scratch":
        echo("init: scratch (random initialisation, on purpose)")
        return summary
    if info["kind"] == "timm":
        state = _timm_pretrained_state(
            model_name or getattr(model, "default_cfg", {}).get("architecture")
        )
    else:
        weights = Path(info["weights"])
        state = _read_weights(weights)
        summary["weights_sha256"] = _sha256(weights)
    summary.update(load_state_into(model, state, info["source"], echo))
    return summary


def _timm_pretrained_state(model_name: str | None) -> dict[str, Any]:
    """Fetch timm's own pre-trained weights for `model_name` (needs the Hugging Face hub)."""
    import timm

    if not model_name:
        raise FractalDBError("--init timm needs --model NAME; fix: pass the timm model name")
    try:
        return timm.create_model(model_name, pretrained=True).state_dict()
    except Exception as err:  # hub/network errors come in many types
        raise FractalDBError(
            f"cannot fetch timm weights for {model_name} ({str(err).splitlines()[0][:160]}); "
            "fix: check the name has pretrained weights and the hub is reachable, or pass a "
            "downloaded .safetensors file to --init"
        ) from err
