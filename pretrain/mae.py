"""Masked autoencoder (He et al., 2022) whose encoder is a plain timm VisionTransformer.

Read top to bottom like the reference's models_mae.py: the model (encoder, decoder, weight
initialisation, patchify, masking, forward_encoder, forward_decoder, forward_loss, forward),
then its pieces as plain functions of tensors (patchify, unpatchify, random_masking,
forward_loss), so each can be tested alone. The encoder is created by name with
`timm.create_model`, so `encoder_state_dict()` loads back with `timm.create_model(name,
pretrained=True, pretrained_cfg_overlay=dict(file=...), num_classes=0, **model_args)`. The
reconstruction picture (original / masked / reconstruction) is pretrain/mae_picture.py.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import timm
import torch
from timm.layers import build_sincos2d_pos_embed
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from fractaldb.core.atomic import replace_atomically
from fractaldb.core.errors import FractalDBError

# FractalDB recipes normalise with mean = std = 0.5 (Nakashima et al., AAAI 2022).
DEFAULT_MEAN: tuple[float, ...] = (0.5,)
DEFAULT_STD: tuple[float, ...] = (0.5,)


class MaskedAutoencoder(nn.Module):
    """MAE with a timm VisionTransformer encoder and a small transformer decoder."""

    def __init__(
        self,
        model: str = "vit_tiny_patch16_224",
        img_size: int | Sequence[int] = 224,
        *,
        model_args: dict | None = None,
        decoder_dim: int = 512,
        decoder_depth: int = 8,
        decoder_heads: int = 16,
        decoder_mlp_ratio: float = 4.0,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = True,
    ) -> None:
        """Build the encoder by timm name and the decoder (defaults are the paper's ViT-B values)."""
        super().__init__()
        self.model_name = model
        self.model_args = dict(model_args or {})
        size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.img_size: tuple[int, int] = (int(size[0]), int(size[1]))

        self.encoder = _create_encoder(model, img_size, self.model_args)
        enc = self.encoder
        ph, pw = enc.patch_embed.patch_size
        if ph != pw:
            raise FractalDBError(
                f"patch size {ph}x{pw} is not square; fix: use a square patch size"
            )
        if any(s % ph for s in self.img_size):
            raise FractalDBError(
                f"patch size {ph} does not divide the image size "
                f"{self.img_size[0]}x{self.img_size[1]}; fix: use a multiple of the patch size"
            )
        self.patch_size = ph
        self.in_chans = enc.patch_embed.proj.in_channels
        self.grid: tuple[int, int] = (self.img_size[0] // ph, self.img_size[1] // ph)
        self.num_patches = self.grid[0] * self.grid[1]
        self.num_prefix_tokens = enc.num_prefix_tokens
        embed_dim = enc.embed_dim

        if decoder_dim < 4 or decoder_dim % 4 or decoder_heads < 1 or decoder_dim % decoder_heads:
            raise FractalDBError(
                f"decoder dim {decoder_dim} must be a multiple of 4 (sin-cos positions) and of "
                f"decoder heads {decoder_heads}; fix: e.g. --decoder-dim 192 --decoder-heads 3"
            )
        if decoder_depth < 1:
            raise FractalDBError(f"decoder depth {decoder_depth} < 1; fix: e.g. --decoder-depth 4")
        if embed_dim % 4:
            raise FractalDBError(
                f"encoder width {embed_dim} is not a multiple of 4, needed for sin-cos positions; "
                "fix: choose another embed_dim"
            )
        check_mask_ratio(mask_ratio, self.num_patches)
        self.mask_ratio = float(mask_ratio)
        self.norm_pix_loss = bool(norm_pix_loss)
        self.decoder_dim, self.decoder_depth, self.decoder_heads = (
            decoder_dim,
            decoder_depth,
            decoder_heads,
        )

        self.decoder_embed = nn.Linear(embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        # Fixed, not learned: MAE keeps both position tables frozen 2D sin-cos; persistent=False
        # because the table is a pure function of the grid.
        self.register_buffer(
            "decoder_pos_embed", self._sincos(decoder_dim, self.num_prefix_tokens), persistent=False
        )
        self.decoder_blocks = nn.Sequential(
            *[
                Block(decoder_dim, decoder_heads, decoder_mlp_ratio, qkv_bias=True)
                for _ in range(decoder_depth)
            ]
        )
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_dim, ph * ph * self.in_chans)
        self._init_weights()
        # The pooling head (fc_norm / attention pool of global_pool='avg'/'map' models) is not
        # used by MAE; freezing it keeps every trainable parameter in the graph, which DDP needs
        # (no find_unused_parameters). It is exported untouched and trains when fine-tuning.
        for unused in (enc.fc_norm, enc.attn_pool, enc.head):
            if unused is not None:
                unused.requires_grad_(False)

    def _sincos(self, dim: int, prefix: int) -> torch.Tensor:
        """(1, prefix + L, dim) 2D sin-cos table, zero at prefix (cls/reg) positions as in MAE."""
        table = build_sincos2d_pos_embed(list(self.grid), dim)
        return torch.cat([torch.zeros(prefix, dim), table], dim=0).unsqueeze(0)

    def _init_weights(self) -> None:
        """MAE initialisation: frozen sin-cos encoder positions, xavier linears, N(0, .02) tokens."""
        enc = self.encoder
        prefix_in_table = 0 if enc.no_embed_class else self.num_prefix_tokens
        with torch.no_grad():
            enc.pos_embed.copy_(self._sincos(enc.embed_dim, prefix_in_table))
        enc.pos_embed.requires_grad_(False)
        w = enc.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        for token in (enc.cls_token, enc.reg_token, self.mask_token):
            if token is not None:
                nn.init.normal_(token, std=0.02)
        for name, module in self.named_modules():
            if name == "encoder.patch_embed.proj":
                continue
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def no_weight_decay(self) -> set[str]:
        """Parameter names exempt from weight decay (timm's create_optimizer_v2 reads this)."""
        names = {"encoder.pos_embed", "encoder.cls_token", "encoder.reg_token", "mask_token"}
        return {n for n, _ in self.named_parameters() if n in names}

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """Patchify with this model's patch size."""
        return patchify(imgs, self.patch_size)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """Unpatchify with this model's patch size, channels and grid."""
        return unpatchify(x, self.patch_size, self.in_chans, self.grid)

    def _check_images(self, imgs: torch.Tensor) -> None:
        """One-line error for images the encoder was not built for (timm would assert)."""
        expected = (self.in_chans, *self.img_size)
        if imgs.ndim != 4 or tuple(imgs.shape[1:]) != expected:
            raise FractalDBError(
                f"images of shape {tuple(imgs.shape)} do not match the model input "
                f"(N, {expected[0]}, {expected[1]}, {expected[2]}); fix: resize to the model's "
                "img_size and use in_chans=1 for gray or 3 for colour images"
            )

    def forward_features(self, imgs: torch.Tensor) -> torch.Tensor:
        """The plain timm encoder on unmasked images: (N, prefix + L, D), as after fine-tune loading."""
        self._check_images(imgs)
        return self.encoder.forward_features(imgs)

    def forward_encoder(
        self, imgs: torch.Tensor, mask_ratio: float, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode the visible patches: (latent (N, prefix + keep, D), mask, ids_restore)."""
        self._check_images(imgs)
        enc = self.encoder
        x = enc.patch_embed(imgs)
        # timm's own _pos_embed adds positions and prepends cls/reg tokens for every ViT variant
        # (no_embed_class, reg tokens, dynamic size); masking afterwards keeps that logic in timm.
        x = enc._pos_embed(x)
        prefix, patches = x[:, : self.num_prefix_tokens], x[:, self.num_prefix_tokens :]
        patches, mask, ids_restore = random_masking(patches, mask_ratio, generator)
        x = torch.cat([prefix, patches], dim=1)
        x = enc.norm_pre(x)
        x = enc.blocks(x)
        x = enc.norm(x)
        return x, mask, ids_restore

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Predict every patch's pixels from the visible latents: (N, L, p*p*C)."""
        x = self.decoder_embed(latent)
        n_prefix = self.num_prefix_tokens
        n, length = ids_restore.shape
        visible = x[:, n_prefix:]
        fill = self.mask_token.to(x.dtype).expand(n, length - visible.shape[1], -1)
        tokens = torch.cat([visible, fill], dim=1)
        tokens = torch.gather(tokens, 1, ids_restore.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
        x = torch.cat([x[:, :n_prefix], tokens], dim=1)
        x = x + self.decoder_pos_embed.to(x.dtype)
        x = self.decoder_blocks(x)
        x = self.decoder_norm(x)
        return self.decoder_pred(x)[:, n_prefix:]

    def forward_loss(
        self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Masked-patch loss with this model's patch size and norm_pix_loss setting."""
        return forward_loss(imgs, pred, mask, self.norm_pix_loss, self.patch_size)

    def forward(
        self,
        imgs: torch.Tensor,
        mask_ratio: float | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, pred (N, L, p*p*C), mask (N, L) with 1 = masked); mask_ratio defaults to the model's."""
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        check_mask_ratio(ratio, self.num_patches)
        latent, mask, ids_restore = self.forward_encoder(imgs, ratio, generator)
        pred = self.forward_decoder(latent, ids_restore)
        return self.forward_loss(imgs, pred, mask), pred, mask

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The encoder's weights only, keys exactly as in the timm model, on CPU and contiguous."""
        return {k: v.detach().cpu().contiguous() for k, v in self.encoder.state_dict().items()}

    def config(self) -> dict:
        """JSON-able constructor arguments, enough to rebuild this model."""
        return {
            "model": self.model_name,
            "img_size": list(self.img_size),
            "model_args": self.model_args,
            "decoder_dim": self.decoder_dim,
            "decoder_depth": self.decoder_depth,
            "decoder_heads": self.decoder_heads,
            "mask_ratio": self.mask_ratio,
            "norm_pix_loss": self.norm_pix_loss,
        }


def save_encoder(model: MaskedAutoencoder, path: str | os.PathLike) -> Path:
    """Write the encoder as safetensors (atomically), with the model name and args as metadata."""
    from safetensors.torch import save_file

    meta = {
        "format": "pt",
        "model": model.model_name,
        "img_size": json.dumps(list(model.img_size)),
        "model_args": json.dumps(model.model_args),
    }
    state = model.encoder_state_dict()
    return replace_atomically(path, lambda tmp: save_file(state, tmp, metadata=meta))


# --- the pieces, as functions of tensors (the reference's methods, each testable alone) ------


def patchify(imgs: torch.Tensor, p: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, L, p*p*C) with patches in row-major order, pixels as (p, p, C)."""
    n, c, h, w = imgs.shape
    if h % p or w % p:
        raise FractalDBError(
            f"patch size {p} does not divide the image size {h}x{w}; "
            "fix: use an image size that is a multiple of the patch size"
        )
    gh, gw = h // p, w // p
    x = imgs.reshape(n, c, gh, p, gw, p)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(n, gh * gw, p * p * c)


def unpatchify(
    x: torch.Tensor, p: int, channels: int, grid: tuple[int, int] | None = None
) -> torch.Tensor:
    """(N, L, p*p*C) -> (N, C, H, W); the patch grid is square unless `grid` = (rows, cols)."""
    n, length, _ = x.shape
    if grid is None:
        side = math.isqrt(length)
        if side * side != length:
            raise ValueError(f"{length} patches do not form a square grid; pass grid=(rows, cols)")
        grid = (side, side)
    gh, gw = grid
    x = x.reshape(n, gh, gw, p, p, channels)
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(n, channels, gh * p, gw * p)


def random_masking(
    x: torch.Tensor, mask_ratio: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep a random round((1 - ratio) * L) patches per sample (argsort of per-sample noise).

    Returns (x_masked (N, keep, D), mask (N, L) with 1 = masked, ids_restore (N, L)) where
    gathering [x_masked, mask tokens] with ids_restore puts tokens back in patch order.
    A ratio of 0 keeps every patch (shuffled), which is useful for feature extraction.
    """
    n, length, dim = x.shape
    keep = num_kept(length, mask_ratio)
    if not 0.0 <= mask_ratio < 1.0 or keep < 1:
        raise FractalDBError(
            f"mask ratio {mask_ratio} keeps {keep} of {length} patches; "
            "fix: use a ratio in [0, 1) that leaves at least one patch visible, e.g. 0.75"
        )
    # Noise is drawn on the generator's device so a CPU generator gives the same mask anywhere.
    noise_device = generator.device if generator is not None else x.device
    noise = torch.rand(n, length, generator=generator, device=noise_device).to(x.device)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :keep]
    x_masked = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, dim))
    mask = torch.ones(n, length, device=x.device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return x_masked, mask, ids_restore


def forward_loss(
    imgs: torch.Tensor,
    pred: torch.Tensor,
    mask: torch.Tensor,
    norm_pix_loss: bool = True,
    patch_size: int | None = None,
) -> torch.Tensor:
    """Mean squared error on masked patches only; with norm_pix_loss the target is per-patch normalised.

    The patch size is inferred from pred's last dimension (p*p*C) unless given.
    """
    c = imgs.shape[1]
    if patch_size is None:
        patch_size = math.isqrt(pred.shape[-1] // c)
    target = patchify(imgs, patch_size).float()
    if norm_pix_loss:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    # float32 so a bf16 autocast prediction does not lose precision in the reduction
    loss = ((pred.float() - target) ** 2).mean(dim=-1)
    return (loss * mask).sum() / mask.sum()


def num_kept(num_patches: int, mask_ratio: float) -> int:
    """Number of visible patches per sample: round((1 - mask_ratio) * num_patches)."""
    return int(round((1.0 - mask_ratio) * num_patches))


def check_mask_ratio(mask_ratio: float, num_patches: int | None = None) -> None:
    """Raise FractalDBError unless 0 < mask_ratio < 1 (and, given L, some patches are masked and some kept)."""
    if not (isinstance(mask_ratio, (int, float)) and 0.0 < float(mask_ratio) < 1.0):
        raise FractalDBError(
            f"mask ratio {mask_ratio!r} is outside (0, 1); fix: pass e.g. --mask-ratio 0.75"
        )
    if num_patches is not None:
        keep = num_kept(num_patches, mask_ratio)
        if keep < 1 or keep >= num_patches:
            raise FractalDBError(
                f"mask ratio {mask_ratio} keeps {keep} of {num_patches} patches, so "
                f"{'nothing is visible' if keep < 1 else 'nothing is masked'}; "
                "fix: choose a ratio that masks some but not all patches, e.g. 0.75"
            )


def _create_encoder(
    model: str, img_size: int | Sequence[int], model_args: dict
) -> VisionTransformer:
    """Create the timm ViT encoder, turning timm failures into one-line errors."""
    try:
        encoder = timm.create_model(model, num_classes=0, img_size=img_size, **model_args)
    except (RuntimeError, TypeError, ValueError, AssertionError) as err:
        raise FractalDBError(
            f"cannot create timm model {model!r} with img_size={img_size} and {model_args}: "
            f"{err}; fix: use a timm ViT name such as vit_tiny_patch16_224 and valid model args"
        ) from None
    if not isinstance(encoder, VisionTransformer):
        raise FractalDBError(
            f"MAE needs a timm VisionTransformer encoder, but {model!r} is "
            f"{type(encoder).__name__}; fix: use a ViT/DeiT name such as vit_tiny_patch16_224"
        )
    if encoder.pos_embed is None:
        raise FractalDBError(
            f"{model!r} has no absolute position embedding, which masked patches need; "
            "fix: drop pos_embed='none' from the model args"
        )
    if not isinstance(encoder.patch_drop, nn.Identity):
        raise FractalDBError(
            "patch dropout would drop tokens on top of the MAE mask; fix: remove patch_drop_rate"
        )
    return encoder
