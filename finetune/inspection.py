"""`fractaldb inspect`: pictures of what a ViT learned, runs side by side in columns.

Attention maps come from timm's own `timm.utils.AttentionExtract` (forward hooks on each
block's `attn_drop`, which sees the softmax output once each Attention's `fused_attn` flag is
off); layer outputs for CKA from the model's `forward_intermediates`. The numbers are
finetune.attention's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fractaldb.core.atomic import replace_atomically
from fractaldb.core.errors import FractalDBError

from . import attention as A

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass
class Inspected:
    """A loaded ViT and what is needed to feed and read it."""

    label: str
    model: torch.nn.Module
    img_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    prefix: int  # class + distillation + register tokens
    grid: tuple[int, int]
    patch: int


def _run_config(path: Path) -> dict[str, Any]:
    import yaml

    cfg_path = path / "config.yaml"
    if not cfg_path.is_file():
        raise FractalDBError(f"{path} has no config.yaml; fix: pass a pre-training/fine-tuning run")
    try:
        cfg = yaml.safe_load(cfg_path.read_text())
    except yaml.YAMLError as err:
        raise FractalDBError(f"{cfg_path} is not valid YAML ({err}); fix: restore it") from err
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), str):
        raise FractalDBError(f"{cfg_path} names no model; fix: pass a run of this project")
    return cfg


def load_vit(
    source: str,
    model_name: str | None = None,
    model_args: dict[str, Any] | None = None,
    img_size: int | None = None,
) -> Inspected:
    """Build the run's (or --model's) timm model with non-fused attention and load its weights."""
    import timm

    from .weights import _read_weights, load_state_into

    path = Path(source)
    if not path.exists():
        raise FractalDBError(
            f"{source} does not exist; fix: pass a run folder or .safetensors file"
        )
    if path.is_dir():
        cfg = _run_config(path)
        weights = path / "model.safetensors"
        if not weights.is_file():
            raise FractalDBError(f"{path} has no model.safetensors; fix: pass a finished run")
        name, args = cfg["model"], dict(cfg.get("model_args") or {})
        size = int(img_size or cfg.get("img_size") or 224)
        mean, std = cfg.get("mean"), cfg.get("std")
    else:
        if not model_name:
            raise FractalDBError(f"{source} is a weights file; fix: also pass --model NAME")
        weights, name, args, size, mean, std = path, model_name, {}, img_size, None, None
    args.update(model_args or {})
    for key in ("num_classes", "img_size", "drop_path_rate", "pretrained"):
        args.pop(key, None)
    try:
        kwargs = {"img_size": size} if size else {}
        model = timm.create_model(name, num_classes=0, **kwargs, **args)
    except TypeError:
        try:  # not a ViT: no img_size argument (e.g. a CNN)
            model = timm.create_model(name, num_classes=0, **args)
        except Exception as err:
            raise FractalDBError(f"cannot build {name} ({err}); fix: check --model") from err
    except Exception as err:  # unknown names, bad arguments
        raise FractalDBError(
            f"cannot build {name} ({err}); fix: check --model/--model-arg"
        ) from err
    if not (hasattr(model, "blocks") and hasattr(model, "patch_embed")):
        raise FractalDBError(
            f"{name} has no ViT attention blocks to inspect; fix: pass a timm ViT/DeiT run"
        )
    for module in model.modules():
        # attention probabilities exist only on the non-fused path; the per-module flag (rather
        # than timm.layers.set_fused_attn) leaves other models of this process as they are
        if hasattr(module, "fused_attn"):
            module.fused_attn = False
    load_state_into(model, _read_weights(weights), str(source), echo=lambda line: None)
    model.eval()
    cfg_mean = model.pretrained_cfg.get("mean", (0.5, 0.5, 0.5))
    cfg_std = model.pretrained_cfg.get("std", (0.5, 0.5, 0.5))
    pe = model.patch_embed
    return Inspected(
        label=run_label(path),
        model=model,
        img_size=int(pe.img_size[0]),
        mean=tuple(mean or cfg_mean),
        std=tuple(std or cfg_std),
        prefix=int(getattr(model, "num_prefix_tokens", 1)),
        grid=tuple(int(g) for g in pe.grid_size),
        patch=int(pe.patch_size[0]),
    )


def run_label(path: Path) -> str:
    """A column title: the run folder's name (with its parent's for seedN folders) or file stem."""
    if path.is_file():
        return path.stem
    path = path.resolve()
    return f"{path.parent.name}/{path.name}" if path.name.startswith("seed") else path.name


PICTURE_IMAGES = 8  # images (rows) drawn in rollout.png and heads.png


def find_images(folder: str | Path, limit: int) -> list[Path]:
    """The first `limit` readable images (sorted by path) anywhere under `folder`; unreadable
    ones are skipped with a warning naming them, as training does."""
    import click
    from PIL import Image

    root = Path(folder)
    if not root.is_dir():
        raise FractalDBError(
            f"--images {folder} is not a folder; fix: a folder of .jpg/.png images"
        )
    found = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise FractalDBError(f"no images under {folder}; fix: a folder of .jpg/.png images")
    readable: list[Path] = []
    for path in found:
        if len(readable) == limit:
            break
        try:
            with Image.open(path) as image:
                image.load()
        except (OSError, SyntaxError, ValueError) as exc:  # PIL raises all three for bad files
            click.echo(f"warning: skipping unreadable image {path} ({exc})", err=True)
            continue
        readable.append(path)
    if not readable:
        raise FractalDBError(f"no readable image under {folder}; fix: a folder of .jpg/.png images")
    return readable


def to_batch(v: Inspected, images: list[Path]) -> tuple[torch.Tensor, np.ndarray]:
    """The images as the model's normalised input, and as HxWx3 floats in [0, 1] to show."""
    from PIL import Image
    from timm.data import create_transform

    tf = create_transform(v.img_size, is_training=False, mean=v.mean, std=v.std, crop_pct=1.0)
    pics = [Image.open(p).convert("RGB") for p in images]
    x = torch.stack([tf(p) for p in pics])
    mean, std = torch.tensor(v.mean)[:, None, None], torch.tensor(v.std)[:, None, None]
    shown = (x * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    return x, shown


@torch.no_grad()
def attention_maps(v: Inspected, x: torch.Tensor) -> list[torch.Tensor]:
    """Every block's attention probabilities, (B, heads, N, N), first block first."""
    from timm.utils import AttentionExtract

    try:
        extract = AttentionExtract(v.model, method="hook")
    except RuntimeError as err:
        raise FractalDBError(
            f"{v.label} has no attention layers to read ({err}); fix: pass a timm ViT/DeiT run"
        ) from err
    maps = list(extract(x).values())
    extract.hooks = None  # drop the hooks' references; the model is not used again through it
    return [m.float() for m in maps]


@torch.no_grad()
def layer_outputs(v: Inspected, x: torch.Tensor) -> list[torch.Tensor]:
    """Every block's patch-token output, (B, P, D) each."""
    return list(v.model.forward_intermediates(x, intermediates_only=True, output_fmt="NLC"))


def _save(fig: Any, path: Path, dpi: int = 72) -> Path:
    import matplotlib.pyplot as plt

    try:
        return replace_atomically(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    finally:
        plt.close(fig)


def _overlay(ax: Any, image: np.ndarray, heat: np.ndarray, vmax: float) -> None:
    """The image under its heat map; one colour scale (0 to vmax) per figure, so that a nearly
    uniform map looks flat instead of being stretched to full contrast."""
    ax.imshow(image)
    h, w = image.shape[:2]
    ax.imshow(heat, cmap="inferno", alpha=0.55, extent=(0, w, h, 0), interpolation="bilinear",
              vmin=0.0, vmax=vmax)  # fmt: skip
    ax.axis("off")


def draw_rollout(
    views: list[Inspected], shown: list[np.ndarray], rollouts: list[torch.Tensor], path: Path
) -> Path:
    """Rows: images; columns: the image, then each run's attention rollout over it."""
    import matplotlib.pyplot as plt

    n, cols = len(shown[0]), 1 + len(views)
    vmax = max(float(r.max()) for r in rollouts)
    fig, axes = plt.subplots(n, cols, figsize=(1.6 * cols, 1.6 * n), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(shown[0][i])
        axes[i, 0].axis("off")
        for j, (v, roll) in enumerate(zip(views, rollouts, strict=True)):
            _overlay(axes[i, j + 1], shown[j][i], roll[i].numpy(), vmax)
            if i == 0:
                axes[0, j + 1].set_title(v.label, fontsize=7)
    axes[0, 0].set_title("image", fontsize=7)
    fig.suptitle("attention rollout (Abnar & Zuidema 2020)", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def draw_heads(
    views: list[Inspected], shown: list[np.ndarray], last_maps: list[torch.Tensor], path: Path
) -> Path:
    """Rows: (image, run); columns: the last layer's class-token attention of each head."""
    import matplotlib.pyplot as plt

    heads = max(m.shape[1] for m in last_maps)
    n = len(shown[0])
    rows = [(i, j) for i in range(n) for j in range(len(views))]
    maps = {
        (i, j, h): A.token_map(last_maps[j][i : i + 1, h], views[j].prefix, views[j].grid)[0]
        for i, j in rows
        for h in range(last_maps[j].shape[1])
    }
    vmax = max(float(m.max()) for m in maps.values())
    fig, axes = plt.subplots(
        len(rows), heads, figsize=(1.3 * heads + 0.4, 1.3 * len(rows)), squeeze=False
    )
    for r, (i, j) in enumerate(rows):
        v = views[j]
        for h in range(heads):
            ax = axes[r, h]
            ax.axis("off")
            if (i, j, h) in maps:
                _overlay(ax, shown[j][i], maps[(i, j, h)].numpy(), vmax)
            if r == 0:
                ax.set_title(f"head {h}", fontsize=7)
        axes[r, 0].text(-0.1, 0.5, v.label, fontsize=6, rotation=90, va="center", ha="right",
                        transform=axes[r, 0].transAxes)  # fmt: skip
    fig.suptitle("last layer: class-token attention per head", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


# the charts (attention distance, position embedding): at least MIN_CHART_WIDTH_IN x CHART_DPI
# = 1000 px wide whatever the number of runs, their text in points readable at that size
CHART_DPI = 125
MIN_CHART_WIDTH_IN = 8.0
FONT = 10


def _wide(runs: int, height: float) -> tuple[float, float]:
    """Figure size (inches) of a chart with one panel per run."""
    return max(MIN_CHART_WIDTH_IN, 4.0 * runs), height


def draw_distances(views: list[Inspected], distances: list[torch.Tensor], path: Path) -> Path:
    """One panel per run: mean attention distance (px) of every head against the layer."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(views), figsize=_wide(len(views), 4.0), squeeze=False,
                             sharey=True)  # fmt: skip
    top = max(max(float(d.max()) for d in distances), max(v.img_size for v in views) / 2) * 1.1
    for ax, v, d in zip(axes[0], views, distances, strict=True):
        layers, heads = d.shape
        for h in range(heads):
            ax.scatter(np.arange(1, layers + 1), d[:, h].numpy(), s=24, label=f"head {h}")
        # what attention spread evenly over all patches would give
        uniform = float(A.patch_distances(v.grid, v.patch).mean())
        ax.axhline(uniform, color="gray", linestyle="--", linewidth=1.0)
        ax.set_title(v.label, fontsize=FONT + 1)
        ax.set_xlabel("layer (dashed: uniform attention)", fontsize=FONT)
        ax.set_ylim(0, top)
        ax.set_xticks(np.arange(1, layers + 1))
        ax.tick_params(labelsize=FONT - 1)
    axes[0, 0].set_ylabel("mean attention distance (px)", fontsize=FONT)
    axes[0, 0].legend(fontsize=FONT - 2, ncol=2, loc="lower right")
    fig.tight_layout()
    return _save(fig, path, dpi=CHART_DPI)


def similarity_mosaic(sim: torch.Tensor, grid: tuple[int, int]) -> np.ndarray:
    """(P, P) similarities -> one image: for each patch (gh x gw tiles), its similarity to
    every patch (a gh x gw tile), tiles separated by a NaN gap."""
    gh, gw = grid
    tiles = sim.reshape(gh, gw, gh, gw).numpy()
    out = np.full((gh * (gh + 1), gw * (gw + 1)), np.nan)
    for r in range(gh):
        for c in range(gw):
            out[r * (gh + 1) : r * (gh + 1) + gh, c * (gw + 1) : c * (gw + 1) + gw] = tiles[r, c]
    return out


def draw_positions(views: list[Inspected], sims: list[torch.Tensor | None], path: Path) -> Path:
    """One panel per run: cosine similarity of each patch's position embedding to the others."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(views), figsize=_wide(len(views), 4.6), squeeze=False)
    image = None
    for ax, v, sim in zip(axes[0], views, sims, strict=True):
        ax.axis("off")
        ax.set_title(v.label if sim is not None else f"{v.label}: no position embedding",
                     fontsize=FONT + 1)  # fmt: skip
        if sim is not None:
            image = ax.imshow(similarity_mosaic(sim, v.grid), cmap="viridis", vmin=-1, vmax=1)
    if image is not None:
        fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8).ax.tick_params(labelsize=FONT - 1)
    fig.suptitle("position embedding cosine similarity", fontsize=FONT + 2)
    fig.text(0.01, 0.01, "tile (row r, column c): patch (r, c)'s similarity to every patch",
             fontsize=FONT - 1)  # fmt: skip
    return _save(fig, path, dpi=CHART_DPI)


def draw_cka(a: Inspected, b: Inspected, matrix: torch.Tensor, path: Path) -> Path:
    """Heatmap of linear CKA between the layers of two runs."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3.2, 2.8))
    image = ax.imshow(matrix.numpy(), cmap="magma", vmin=0, vmax=1, origin="lower")
    ax.set_xticks(range(matrix.shape[1]), range(1, matrix.shape[1] + 1), fontsize=6)
    ax.set_yticks(range(matrix.shape[0]), range(1, matrix.shape[0] + 1), fontsize=6)
    ax.set_xlabel(f"{b.label} layer", fontsize=7)
    ax.set_ylabel(f"{a.label} layer", fontsize=7)
    ax.set_title("linear CKA (Raghu et al. 2021)", fontsize=8)
    fig.colorbar(image, ax=ax).ax.tick_params(labelsize=6)
    fig.tight_layout()
    return _save(fig, path)


def pos_embed_of(v: Inspected) -> torch.Tensor | None:
    """The patch part of a learned absolute position embedding, or None without one."""
    pe = getattr(v.model, "pos_embed", None)
    if not isinstance(pe, torch.Tensor):
        return None
    prefix = 0 if getattr(v.model, "no_embed_class", False) else v.prefix
    return (
        A.position_similarity(pe, prefix) if pe.shape[1] - prefix == v.grid[0] * v.grid[1] else None
    )


def inspect_runs(
    runs: list[str],
    images: str,
    out: str,
    *,
    num_images: int = 4,
    cka: bool = False,
    model_name: str | None = None,
    model_args: dict[str, Any] | None = None,
    img_size: int | None = None,
) -> dict[str, Any]:
    """Draw every picture for the runs into `out`; return the figures written and the numbers."""
    import matplotlib

    matplotlib.use("Agg")
    if cka and len(runs) != 2:
        raise FractalDBError(f"--cka compares two runs, got {len(runs)}; fix: pass exactly two")
    files = find_images(images, num_images)
    views = [load_vit(r, model_name, model_args, img_size) for r in runs]
    out_dir = Path(out)
    shown, rollouts, last, distances, sims, layers = [], [], [], [], [], []
    for v in views:
        x, pics = to_batch(v, files)
        maps = attention_maps(v, x)
        shown.append(pics)
        rollouts.append(A.token_map(A.attention_rollout(maps), v.prefix, v.grid))
        last.append(maps[-1])
        distances.append(
            torch.stack([A.mean_attention_distance(m, v.grid, v.patch, v.prefix) for m in maps])
        )
        sims.append(pos_embed_of(v))
        if cka:
            layers.append(layer_outputs(v, x))
    # a picture has a row per image: past a few rows it is a strip nobody can read
    k = min(len(files), PICTURE_IMAGES)
    pics = [p[:k] for p in shown]
    written = {
        "rollout": draw_rollout(views, pics, [r[:k] for r in rollouts], out_dir / "rollout.png"),
        "heads": draw_heads(views, pics, [m[:k] for m in last], out_dir / "heads.png"),
        "attention_distance": draw_distances(views, distances, out_dir / "attention_distance.png"),
        "position_embedding": draw_positions(views, sims, out_dir / "position_embedding.png"),
    }
    numbers: dict[str, Any] = {
        "images": [str(f) for f in files],
        "mean_attention_distance_px": {
            v.label: d.tolist() for v, d in zip(views, distances, strict=True)
        },
    }
    if cka:
        matrix = A.cka_matrix(layers[0], layers[1])
        written["cka"] = draw_cka(views[0], views[1], matrix, out_dir / "cka.png")
        numbers["cka"] = matrix.tolist()
    replace_atomically(
        out_dir / "inspect.json",
        lambda tmp: tmp.write_text(
            json.dumps({**numbers, "figures": {k: str(p) for k, p in written.items()}}, indent=2)
        ),
    )
    return {"figures": written, **numbers}
