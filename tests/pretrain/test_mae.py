"""Tests for the masked autoencoder in pretrain/mae.py (tiny CPU models)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import timm
import torch
from click.testing import CliRunner
from timm.layers import build_sincos2d_pos_embed

from fractaldb.core.errors import FractalDBError
from pretrain.mae import (
    MaskedAutoencoder,
    check_mask_ratio,
    forward_loss,
    patchify,
    random_masking,
    save_encoder,
    unpatchify,
)
from pretrain.mae_picture import reconstruction_grid, save_reconstruction

NAME = "vit_tiny_patch16_224"
TINY = {"patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}


def tiny_mae(in_chans: int = 3, **kwargs) -> MaskedAutoencoder:
    """A 32 px, 16-patch MAE small enough for CPU tests."""
    torch.manual_seed(0)
    kwargs.setdefault("decoder_dim", 32)
    kwargs.setdefault("decoder_depth", 1)
    kwargs.setdefault("decoder_heads", 2)
    return MaskedAutoencoder(NAME, img_size=32, model_args={**TINY, "in_chans": in_chans}, **kwargs)


def one_line_error(fn) -> str:
    """Run fn, expect FractalDBError, and check it renders as one line with exit code 2."""
    with pytest.raises(FractalDBError) as info:
        fn()
    err = info.value
    assert err.exit_code == 2
    msg = err.format_message()
    assert "\n" not in msg and "fix:" in msg
    return msg


@pytest.mark.parametrize("channels", [1, 3])
def test_patchify_roundtrip(channels: int) -> None:
    x = torch.randn(2, channels, 32, 24)
    p = patchify(x, 8)
    assert p.shape == (2, 4 * 3, 8 * 8 * channels)
    assert torch.equal(unpatchify(p, 8, channels, grid=(4, 3)), x)
    sq = torch.randn(3, channels, 32, 32)
    assert torch.equal(unpatchify(patchify(sq, 8), 8, channels), sq)
    # patch order is row-major: patch 1 is the top row, second column
    assert torch.equal(p[0, 1].reshape(8, 8, channels).permute(2, 0, 1), x[0, :, :8, 8:16])


@pytest.mark.parametrize("ratio", [0.75, 0.5, 0.6, 0.9])
def test_random_masking_keeps_exact_count_and_restores_order(ratio: float) -> None:
    n, length, dim = 8, 16, 5
    x = torch.randn(n, length, dim)
    gen = torch.Generator().manual_seed(1)
    x_masked, mask, ids_restore = random_masking(x, ratio, gen)
    keep = round((1 - ratio) * length)
    assert x_masked.shape == (n, keep, dim)
    assert torch.equal(mask.sum(1), torch.full((n,), float(length - keep)))
    # different samples get different masks
    assert len({tuple(m.tolist()) for m in mask}) > 1
    # the visible tokens are exactly the unmasked ones, in restored order
    for i in range(n):
        visible = x[i][mask[i] == 0]
        assert torch.equal(torch.sort(x_masked[i], dim=0).values, torch.sort(visible, dim=0).values)
    # gathering [visible, placeholders] with ids_restore gives back the sequence
    filler = torch.full((n, length - keep, dim), float("nan"))
    restored = torch.gather(
        torch.cat([x_masked, filler], 1), 1, ids_restore.unsqueeze(-1).expand(-1, -1, dim)
    )
    vis = mask == 0
    assert torch.equal(restored[vis], x[vis])
    assert torch.isnan(restored[~vis]).all()
    # same seed -> same mask
    _, mask2, _ = random_masking(x, ratio, torch.Generator().manual_seed(1))
    assert torch.equal(mask, mask2)


def test_round_not_floor() -> None:
    # int((1 - 0.7) * 10) would give 2 (0.3 * 10 = 2.999...), round gives 3
    _, mask, _ = random_masking(torch.randn(2, 10, 3), 0.7)
    assert torch.equal(mask.sum(1), torch.tensor([7.0, 7.0]))


def test_loss_only_on_masked_patches() -> None:
    torch.manual_seed(0)
    imgs = torch.randn(2, 3, 32, 32)
    pred = torch.randn(2, 16, 8 * 8 * 3)
    _, mask, _ = random_masking(torch.zeros(2, 16, 1), 0.75)
    for norm in (True, False):
        base = forward_loss(imgs, pred, mask, norm)
        changed = pred.clone()
        changed[mask == 0] += 10.0
        assert torch.allclose(forward_loss(imgs, changed, mask, norm), base)
        changed = pred.clone()
        changed[mask == 1] += 1.0
        assert not torch.allclose(forward_loss(imgs, changed, mask, norm), base)


def test_norm_pix_target() -> None:
    torch.manual_seed(0)
    imgs = torch.randn(2, 1, 32, 32)
    pred = torch.randn(2, 16, 64)
    mask = torch.ones(2, 16)
    target = patchify(imgs, 8)
    normed = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    assert torch.allclose(forward_loss(imgs, pred, mask, True), ((pred - normed) ** 2).mean())
    assert torch.allclose(forward_loss(imgs, pred, mask, False), ((pred - target) ** 2).mean())
    # a brightness/contrast change per image leaves normalised targets unchanged
    shifted = imgs * 3.0 + 2.0
    assert torch.allclose(
        forward_loss(shifted, pred, mask, True), forward_loss(imgs, pred, mask, True), atol=1e-4
    )
    assert not torch.allclose(
        forward_loss(shifted, pred, mask, False), forward_loss(imgs, pred, mask, False)
    )


@pytest.mark.parametrize("in_chans", [1, 3])
def test_forward_shapes_and_prefix_variants(in_chans: int) -> None:
    mae = tiny_mae(in_chans)
    imgs = torch.randn(2, in_chans, 32, 32)
    loss, pred, mask = mae(imgs)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert pred.shape == (2, 16, 64 * in_chans)
    assert torch.equal(mask.sum(1), torch.tensor([12.0, 12.0]))
    loss.backward()
    # frozen 2D sin-cos encoder positions (zero at the cls slot), as in MAE
    assert mae.encoder.pos_embed.grad is None
    assert torch.equal(mae.encoder.pos_embed[0, 0], torch.zeros(32))
    assert torch.allclose(mae.encoder.pos_embed[0, 1:], build_sincos2d_pos_embed([4, 4], 32))
    assert mae.mask_token.grad is not None and mae.encoder.cls_token.grad is not None


@pytest.mark.parametrize(
    "extra",
    [{"class_token": False, "global_pool": "avg"}, {"reg_tokens": 2, "no_embed_class": True}],
)
def test_models_without_cls_or_with_registers(extra: dict) -> None:
    torch.manual_seed(0)
    mae = MaskedAutoencoder(
        NAME, 32, model_args={**TINY, **extra}, decoder_dim=32, decoder_depth=1, decoder_heads=2
    )
    imgs = torch.randn(2, 3, 32, 32)
    latent, mask, ids = mae.forward_encoder(imgs, 0.75)
    assert latent.shape == (2, mae.num_prefix_tokens + 4, 32)
    loss, pred, _ = mae(imgs)
    assert pred.shape == (2, 16, 192) and torch.isfinite(loss)
    _check_unmasked_features(mae, imgs)


def _check_unmasked_features(mae: MaskedAutoencoder, imgs: torch.Tensor) -> None:
    """With nothing masked, the MAE encoder path equals the plain timm forward_features."""
    mae.eval()
    with torch.no_grad():
        plain = mae.forward_features(imgs)
        latent, mask, ids = mae.forward_encoder(imgs, 0.0)
    assert mask.sum() == 0
    k = mae.num_prefix_tokens
    patches = torch.gather(latent[:, k:], 1, ids.unsqueeze(-1).expand(-1, -1, latent.shape[-1]))
    assert torch.allclose(latent[:, :k], plain[:, :k], atol=1e-5)
    assert torch.allclose(patches, plain[:, k:], atol=1e-5)


def test_loss_falls_on_tiny_data() -> None:
    mae = tiny_mae(1)
    torch.manual_seed(0)
    imgs = torch.zeros(6, 1, 32, 32)
    for i in range(6):  # simple fixed shapes: bars and boxes
        imgs[i, 0, 4 * i : 4 * i + 8, :] = 1.0
        imgs[i, 0, :, 30 - 4 * i : 32 - 4 * i] = 0.5
    imgs = (imgs - 0.5) / 0.5
    opt = torch.optim.AdamW(
        [p for p in mae.parameters() if p.requires_grad], lr=2e-3, betas=(0.9, 0.95)
    )
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(40):
        loss, _, _ = mae(imgs, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.6 * first, (first, last)


@pytest.mark.parametrize("in_chans", [1, 3])
def test_exported_encoder_loads_into_timm(tmp_path, in_chans: int) -> None:
    mae = tiny_mae(in_chans)
    # train a step so the export is not just the initial weights
    opt = torch.optim.SGD([p for p in mae.parameters() if p.requires_grad], lr=0.1)
    imgs = torch.randn(2, in_chans, 32, 32)
    mae(imgs)[0].backward()
    opt.step()
    path = save_encoder(mae, tmp_path / "model.safetensors")
    args = {**TINY, "in_chans": in_chans}
    torch.manual_seed(123)
    loaded = timm.create_model(
        NAME,
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(path)),
        num_classes=0,
        img_size=32,
        **args,
    )
    fresh = timm.create_model(NAME, num_classes=0, img_size=32, **args)
    assert set(mae.encoder_state_dict()) == set(fresh.state_dict())
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, mae.encoder.state_dict()[k]), k
    loaded.eval()
    mae.eval()
    with torch.no_grad():
        assert torch.allclose(loaded.forward_features(imgs), mae.forward_features(imgs))
        assert torch.allclose(loaded(imgs), mae.encoder(imgs))
    _check_unmasked_features(mae, imgs)


def test_bad_mask_ratio() -> None:
    for bad in (0.0, 1.0, -0.1, 1.5):
        assert "mask ratio" in one_line_error(lambda b=bad: check_mask_ratio(b))
        assert "mask ratio" in one_line_error(lambda b=bad: tiny_mae(mask_ratio=b))
    mae = tiny_mae()
    imgs = torch.randn(1, 3, 32, 32)
    one_line_error(lambda: mae(imgs, mask_ratio=1.0))
    # 0.99 of 16 patches keeps none; 0.01 masks none: both are useless
    one_line_error(lambda: mae(imgs, mask_ratio=0.99))
    one_line_error(lambda: mae(imgs, mask_ratio=0.01))


def test_patch_size_must_divide_image() -> None:
    msg = one_line_error(
        lambda: MaskedAutoencoder(NAME, img_size=30, model_args=TINY, decoder_dim=32)
    )
    assert "does not divide" in msg
    one_line_error(lambda: patchify(torch.zeros(1, 3, 30, 30), 8))
    # the message also survives the CLI path: one line, exit code 2
    import click

    @click.command()
    def cmd() -> None:
        MaskedAutoencoder(NAME, img_size=36, model_args=TINY, decoder_dim=32)

    result = CliRunner().invoke(cmd, [])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and "does not divide" in result.output


def test_other_bad_input() -> None:
    assert "VisionTransformer" in one_line_error(
        lambda: MaskedAutoencoder("eva02_tiny_patch14_224", 28, model_args={"depth": 1})
    )
    assert "resnet18" in one_line_error(lambda: MaskedAutoencoder("resnet18", 32))
    one_line_error(lambda: MaskedAutoencoder("no_such_model", 32))
    one_line_error(lambda: tiny_mae(decoder_dim=30, decoder_heads=3))
    mae = tiny_mae(3)
    one_line_error(lambda: mae(torch.randn(1, 1, 32, 32)))
    one_line_error(lambda: mae(torch.randn(1, 3, 64, 64)))


@pytest.mark.parametrize("in_chans", [1, 3])
def test_reconstruction_picture(tmp_path, in_chans: int) -> None:
    from pretrain.mae_picture import MASK_RGB, RECON_LABEL_WIDTH

    mae = tiny_mae(in_chans)
    mae.train()
    imgs = torch.rand(3, in_chans, 32, 32) * 2 - 1
    grid = reconstruction_grid(mae, imgs, 0.75, seed=0)
    gap, size = 2, 96  # 32 px tiles scaled up three times
    left = RECON_LABEL_WIDTH + 2 * gap
    assert grid.dtype == np.uint8
    assert grid.shape == (3 * size + 4 * gap, left + 3 * size + 3 * gap, 3)
    assert mae.training  # mode restored

    def tile(row: int, col: int) -> np.ndarray:
        y0, x0 = gap + row * (size + gap), left + col * (size + gap)
        return grid[y0 : y0 + size, x0 : x0 + size]

    # row 0 is the de-normalised original, every pixel a 3x3 block
    orig = ((imgs[1] * 0.5 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    assert np.array_equal(tile(0, 1)[::3, ::3, 0], orig[0].numpy())
    assert np.array_equal(tile(0, 1)[1::3, 2::3, 0], orig[0].numpy())
    # row 1: 12 of 16 patches (24 px once scaled) painted the mask colour, the rest original
    masked = tile(1, 1)
    painted = [
        (masked[r : r + 24, c : c + 24] == MASK_RGB).all()
        for r in range(0, size, 24)
        for c in range(0, size, 24)
    ]
    assert sum(painted) == 12
    kept = [
        np.array_equal(masked[r : r + 24, c : c + 24], tile(0, 1)[r : r + 24, c : c + 24])
        for r in range(0, size, 24)
        for c in range(0, size, 24)
    ]
    assert [not k for k in kept] == painted
    # every row carries a text label on its left (dark anti-aliased pixels on white)
    for row in range(3):
        y0 = gap + row * (size + gap)
        assert (grid[y0 : y0 + size, :RECON_LABEL_WIDTH] < 100).sum() > 30
    # same seed -> same picture
    assert np.array_equal(grid, reconstruction_grid(mae, imgs, 0.75, seed=0))
    path = save_reconstruction(tmp_path / "run" / "reconstruction-epoch005.png", mae, imgs, 0.75)
    back = cv2.imread(str(path))
    assert back is not None and np.array_equal(back[..., ::-1], grid)


def test_reconstruction_mask_stands_out_on_gray_fractals() -> None:
    """FractalDB's gray-127 fractals on black: the mask must not look like fractal pixels."""
    from pretrain.mae_picture import MASK_RGB

    mae = tiny_mae(1)
    fractal = torch.full((2, 1, 32, 32), -1.0)  # black background
    fractal[:, :, 8:24, 4:28] = 127 / 255 * 2 - 1  # gray 127 shapes
    grid = reconstruction_grid(mae, fractal, 0.75, seed=0)
    colours = {tuple(px) for px in grid.reshape(-1, 3)[::7]}
    assert MASK_RGB in colours
    assert len(set(MASK_RGB)) == 3  # not a gray level: R, G and B differ


def test_decoder_puts_tokens_at_their_patch_positions() -> None:
    mae = tiny_mae(3).eval()
    imgs = torch.randn(3, 3, 32, 32)
    seen = {}
    mae.decoder_blocks.register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
    with torch.no_grad():
        latent, mask, ids_restore = mae.forward_encoder(imgs, 0.75)
        pred = mae.forward_decoder(latent, ids_restore)
        embedded = mae.decoder_embed(latent)
    x, k = seen["x"], mae.num_prefix_tokens
    pos = mae.decoder_pos_embed[0]
    ids_shuffle = torch.argsort(ids_restore, dim=1)
    for i in range(3):
        expected = mae.mask_token[0, 0] + pos[k:]
        for t in range(latent.shape[1] - k):  # t-th visible latent belongs to patch ids_shuffle[t]
            j = ids_shuffle[i, t]
            assert mask[i, j] == 0
            expected[j] = embedded[i, k + t] + pos[k + j]
        assert torch.allclose(x[i, k:], expected, atol=1e-6)
        assert torch.allclose(x[i, :k], embedded[i, :k] + pos[:k], atol=1e-6)
        # positions make the predictions of masked patches differ from each other
        masked_pred = pred[i][mask[i] == 1]
        assert (masked_pred - masked_pred[0]).abs().max() > 1e-3


@pytest.mark.parametrize(
    "recipe", ["mae-vit-tiny-fractal", "mae-vit-small-fractal", "mae-tiny-cpu"]
)
def test_recipes_build_a_model(recipe: str) -> None:
    import yaml

    path = Path(__file__).parents[2] / "pretrain" / "recipes" / f"{recipe}.yaml"
    cfg = yaml.safe_load(path.read_text())
    assert cfg["task"] == "mae" and cfg["description"] and cfg["source"]
    assert cfg["lr_base_size"] == 256 and 0 < cfg["mask_ratio"] < 1
    assert cfg["opt_betas"] == [0.9, 0.95]
    with torch.device("meta"):  # shapes only: no memory or init time for 224 px models
        mae = MaskedAutoencoder(
            cfg["model"],
            cfg["img_size"],
            model_args=cfg.get("model_args", {}),
            decoder_dim=cfg["decoder_dim"],
            decoder_depth=cfg["decoder_depth"],
            decoder_heads=cfg["decoder_heads"],
            mask_ratio=cfg["mask_ratio"],
            norm_pix_loss=cfg["norm_pix_loss"],
        )
    assert mae.decoder_pred.out_features == mae.patch_size**2 * 3


@pytest.mark.parametrize("extra", [{}, {"global_pool": "avg"}, {"global_pool": "map"}])
def test_every_trainable_parameter_gets_a_gradient(extra: dict) -> None:
    # DDP without find_unused_parameters fails if a trainable parameter is left out of the graph
    torch.manual_seed(0)
    mae = MaskedAutoencoder(
        NAME, 32, model_args={**TINY, **extra}, decoder_dim=32, decoder_depth=1, decoder_heads=2
    )
    mae(torch.randn(2, 3, 32, 32))[0].backward()
    missing = [n for n, p in mae.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
    assert set(mae.no_weight_decay()) <= {n for n, _ in mae.named_parameters()}
    assert "mask_token" in mae.no_weight_decay()
