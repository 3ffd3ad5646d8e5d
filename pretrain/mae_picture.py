"""The MAE reconstruction picture: rows of originals, masked inputs and reconstructions of a
fixed set of images, written as RUN/reconstruction-epochNNN.png during MAE pre-training."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from fractaldb.core.errors import FractalDBError
from pretrain.mae import DEFAULT_MEAN, DEFAULT_STD, MaskedAutoencoder, check_mask_ratio


def _to_uint8(imgs: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """De-normalise (N, C, H, W) to uint8 (N, H, W, 3) RGB; gray is repeated to three channels."""
    c = imgs.shape[1]
    m = torch.as_tensor(mean, dtype=imgs.dtype).reshape(1, -1, 1, 1).expand(1, c, 1, 1)
    s = torch.as_tensor(std, dtype=imgs.dtype).reshape(1, -1, 1, 1).expand(1, c, 1, 1)
    x = (imgs * s + m).clamp(0, 1).mul(255).round().to(torch.uint8)
    if c == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.permute(0, 2, 3, 1).numpy()


# Reconstruction pictures: masked patches painted in a colour no gray fractal has, tiles
# scaled up (nearest neighbour, so pixels stay crisp) to at least this size, rows labelled.
MASK_RGB = (40, 110, 230)
RECON_TILE_MIN = 96
RECON_LABEL_WIDTH = 112


def _row_label(text: str, height: int) -> np.ndarray:
    """A white RECON_LABEL_WIDTH x height RGB block with `text` drawn in black, centred."""
    import cv2

    label = np.full((height, RECON_LABEL_WIDTH, 3), 255, np.uint8)
    y = height // 2 + 4
    cv2.putText(label, text, (4, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return label


@torch.no_grad()
def reconstruction_grid(
    model: MaskedAutoencoder,
    images: torch.Tensor,
    mask_ratio: float | None = None,
    seed: int = 0,
    mean: Sequence[float] = DEFAULT_MEAN,
    std: Sequence[float] = DEFAULT_STD,
    gap: int = 2,
) -> np.ndarray:
    """uint8 RGB picture, one column per image; labelled rows: original / masked /
    reconstruction.

    Masked patches are painted MASK_RGB (gray fractals on black would hide a gray mask); tiles
    are scaled up by a whole factor to at least RECON_TILE_MIN px. The reconstruction is the
    raw prediction on every patch, as in the MAE paper's figures (visible patches are not pasted
    back). With norm_pix_loss the prediction is mapped back to pixels with each target patch's
    own mean and std, as the MAE visualisation does. A fixed seed gives the same mask at every
    epoch, so pictures are comparable across a run.
    """
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        x = images.to(device=device, dtype=torch.float32)
        gen = torch.Generator().manual_seed(seed)
        ratio = model.mask_ratio if mask_ratio is None else mask_ratio
        check_mask_ratio(ratio, model.num_patches)
        latent, mask, ids_restore = model.forward_encoder(x, ratio, gen)
        pred = model.forward_decoder(latent, ids_restore).float()
    finally:
        model.train(was_training)
    target = model.patchify(x)
    if model.norm_pix_loss:
        mu = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        pred = pred * (var + 1.0e-6) ** 0.5 + mu
    originals = _to_uint8(x.cpu(), mean, std)
    # where each pixel's patch was masked: (N, H, W), from the per-patch mask
    p = model.patch_size
    grid_h = originals.shape[1] // p
    patch_mask = mask.cpu().reshape(len(x), grid_h, -1).bool().numpy()
    pixel_mask = patch_mask.repeat(p, axis=1).repeat(p, axis=2)
    masked = originals.copy()
    masked[pixel_mask] = MASK_RGB
    tiles = [originals, masked, _to_uint8(model.unpatchify(pred).cpu(), mean, std)]
    n, h, w = originals.shape[:3]
    scale = max(1, -(-RECON_TILE_MIN // min(h, w)))
    h, w = h * scale, w * scale
    labels = ("original", f"masked ({100 * ratio:.0f} %)", "reconstruction")
    left = RECON_LABEL_WIDTH + gap
    out = np.full((3 * h + 4 * gap, left + n * w + (n + 1) * gap, 3), 255, dtype=np.uint8)
    for r, row in enumerate(tiles):
        y0 = gap + r * (h + gap)
        out[y0 : y0 + h, :RECON_LABEL_WIDTH] = _row_label(labels[r], h)
        for i in range(n):
            x0 = left + gap + i * (w + gap)
            out[y0 : y0 + h, x0 : x0 + w] = row[i].repeat(scale, axis=0).repeat(scale, axis=1)
    return out


def save_reconstruction(
    path: str | os.PathLike,
    model: MaskedAutoencoder,
    images: torch.Tensor,
    mask_ratio: float | None = None,
    seed: int = 0,
    mean: Sequence[float] = DEFAULT_MEAN,
    std: Sequence[float] = DEFAULT_STD,
) -> Path:
    """Write reconstruction_grid(...) as a PNG with OpenCV (atomically) and return the path."""
    from fractaldb.preview import save_image

    grid = reconstruction_grid(model, images, mask_ratio, seed, mean, std)
    path = Path(path)
    try:
        save_image(path, grid)
    except OSError:
        raise FractalDBError(
            f"cannot write {path}; fix: check the run directory is writable"
        ) from None
    return path
