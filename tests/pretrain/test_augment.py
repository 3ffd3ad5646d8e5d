"""Batched device augmentation (pretrain/engine/augment.py) on CPU tensors: shapes, ranges, per-sample
independence, determinism, and agreement with timm's PIL path (crop distributions, op
strengths); the uint8 data path from shards to the model."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from PIL import Image

from fractaldb.core.errors import FractalDBError
from pretrain.engine.augment import (
    RAND_OPS,
    AugmentConfig,
    AugmentParams,
    BatchAugment,
    level_to_arg,
    parse_rand_augment,
    posterize,
    rand_augment_draw,
    sample_crops,
)
from pretrain.engine.config import resolve_augment

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def smooth_image(size: int = 48, seed: int = 0) -> np.ndarray:
    """An RGB uint8 image with structure at several scales (gradients plus blobs)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.stack([xx, yy, 0.5 + 0.5 * np.sin(6 * xx + 3 * yy)], axis=-1)
    coarse = rng.random((6, 6, 3))
    up = np.kron(coarse, np.ones((size // 6, size // 6, 1)))
    return np.clip(255 * (0.6 * base + 0.4 * up), 0, 255).astype(np.uint8)


def to_batch(*arrays: np.ndarray) -> torch.Tensor:
    return torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a in arrays])


def whole_image_params(n: int, size: int, ops=(), args=()) -> AugmentParams:
    """No crop, no flip, the given RandAugment layer(s) on every sample."""
    layers = len(ops)
    return AugmentParams(
        boxes=torch.tensor([[0.0, 0.0, size, size]]).repeat(n, 1),
        hflip=torch.zeros(n, dtype=torch.bool),
        vflip=torch.zeros(n, dtype=torch.bool),
        ops=torch.tensor([[RAND_OPS.index(o) for o in ops]] * n).reshape(n, layers),
        args=torch.tensor([list(args)] * n, dtype=torch.float).reshape(n, layers),
    )


def unit(aug: BatchAugment, images: torch.Tensor, params: AugmentParams) -> torch.Tensor:
    """Warp + channels + photometric ops, before normalisation: values in [0, 1]."""
    x = aug._channels(aug.warp(images, params))
    return aug._photometric(x, params) if params.ops.numel() else x


def test_shapes_dtype_and_value_range_gray_to_rgb():
    cfg = AugmentConfig(img_size=24, auto_augment="rand-m9-mstd0.5", mean=(0.5,) * 3,
                        std=(0.25,) * 3)  # fmt: skip
    aug = BatchAugment(cfg)
    gray = torch.randint(0, 256, (16, 1, 40, 40), dtype=torch.uint8)
    torch.manual_seed(0)
    out = aug(gray)
    assert out.shape == (16, 3, 24, 24) and out.dtype == torch.float32
    # normalised [0, 1] -> [-2, 2]; gray stays gray (all channels equal) through every op
    assert out.min() >= -2.0 - 1e-5 and out.max() <= 2.0 + 1e-5
    torch.testing.assert_close(out[:, 0], out[:, 2])
    with pytest.raises(FractalDBError, match="uint8"):
        aug(gray.float())


def test_one_channel_encoders_get_gray_and_colour_gets_three():
    rgb = to_batch(smooth_image(), smooth_image(seed=1))
    one = BatchAugment(AugmentConfig(img_size=16, mean=(0.5,), std=(0.5,), out_channels=1))
    assert one(rgb).shape == (2, 1, 16, 16)


def test_determinism_under_a_fixed_seed():
    aug = BatchAugment(AugmentConfig(img_size=20, auto_augment="rand-m9-mstd0.5", reprob=0.5,
                                     color_jitter=0.4))  # fmt: skip
    images = to_batch(*[smooth_image(seed=s) for s in range(6)])

    def run(seed):
        torch.manual_seed(seed)
        random.seed(seed)  # timm's RandomErasing draws with python's random
        return aug(images)

    torch.testing.assert_close(run(3), run(3), rtol=0, atol=0)
    assert not torch.equal(run(3), run(4))


def test_samples_are_augmented_independently():
    # Same image everywhere: different crops/ops per sample; and each sample's result depends
    # only on its own image and parameters (a sub-batch reproduces it exactly).
    cfg = AugmentConfig(img_size=20, auto_augment="rand-m9-mstd0.5", antialias=False)
    aug = BatchAugment(cfg)
    images = to_batch(*[smooth_image()] * 8)
    torch.manual_seed(0)
    params = aug.sample_params(8, 48, 48)
    out = unit(aug, images, params)
    flat = out.flatten(1)
    assert all(not torch.equal(flat[i], flat[j]) for i in range(8) for j in range(i))
    pick = [5, 1]
    sub = AugmentParams(params.boxes[pick], params.hflip[pick], params.vflip[pick],
                        params.ops[pick], params.args[pick])  # fmt: skip
    torch.testing.assert_close(unit(aug, images[pick], sub), out[pick])


def test_crop_scale_and_ratio_match_timm_random_resized_crop():
    from scipy.stats import ks_2samp
    from timm.data.transforms import RandomResizedCropAndInterpolation

    n, h, w = 3000, 48, 64
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    torch.manual_seed(0)
    boxes = sample_crops(n, h, w, scale, ratio)
    ours_scale = (boxes[:, 2] * boxes[:, 3] / (h * w)).numpy()
    ours_ratio = np.log((boxes[:, 2] / boxes[:, 3]).numpy())
    random.seed(0)
    img = Image.new("RGB", (w, h))
    ref = [RandomResizedCropAndInterpolation.get_params(img, scale, ratio) for _ in range(n)]
    ref_scale = np.array([rh * rw / (h * w) for _, _, rh, rw in ref])
    ref_ratio = np.log(np.array([rw / rh for _, _, rh, rw in ref]))
    assert ks_2samp(ours_scale, ref_scale).pvalue > 1e-3
    assert ks_2samp(ours_ratio, ref_ratio).pvalue > 1e-3
    # the boxes lie inside the image and the offsets are spread over all valid positions
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= w).all()
    assert (boxes[:, 1] >= 0).all() and (boxes[:, 1] + boxes[:, 3] <= h).all()
    # MAE's scale (0.2, 1) shifts the distribution: the test above can tell them apart
    mae = sample_crops(n, h, w, (0.2, 1.0), ratio)
    assert ks_2samp((mae[:, 2] * mae[:, 3] / (h * w)).numpy(), ref_scale).pvalue < 1e-3


@pytest.mark.parametrize("increasing", [False, True])
def test_levels_match_timm(increasing):
    from timm.data.auto_augment import LEVEL_TO_ARG

    names = {"Posterize": "PosterizeIncreasing", "Solarize": "SolarizeIncreasing",
             "Color": "ColorIncreasing", "Contrast": "ContrastIncreasing",
             "Brightness": "BrightnessIncreasing", "Sharpness": "SharpnessIncreasing"}  # fmt: skip
    for op in RAND_OPS:
        timm_fn = LEVEL_TO_ARG[names.get(op, op) if increasing else op]
        if timm_fn is None:
            continue
        for m in (3.0, 5.5, 9.0, 10.0):
            random.seed(1)  # timm's _randomly_negate: random.random() > 0.5 negates
            (want,) = timm_fn(m, {"translate_pct": 0.45})
            sign = torch.tensor([-1.0 if random.Random(1).random() > 0.5 else 1.0])
            got = level_to_arg(op, torch.tensor([m]), sign, increasing).item()
            assert got == pytest.approx(want, abs=1e-5), (op, m)


def test_posterize_at_zero_bits_is_black_as_on_the_pil_path():
    # timm's level for magnitude < 2.5 is 0 bits (Pillow >= 13 refuses those); both paths
    # give the published result, a black image, instead of failing
    from PIL import Image

    from pretrain.engine.augment_pil import posterize_any_bits

    for increasing in (False, True):
        mags = torch.linspace(0, 10, 41)
        bits = level_to_arg("Posterize", mags, torch.ones(41), increasing)
        assert bits.min() == 0 and bits.max() <= 4
    spec = parse_rand_augment("rand-m1-mstd0")  # magnitude 1 -> timm says 0 bits
    torch.manual_seed(0)
    ops, args = rand_augment_draw(2000, spec)
    drawn = args[ops == RAND_OPS.index("Posterize")]
    assert len(drawn) > 20 and (drawn == 0).all()
    x = torch.rand(1, 3, 8, 8).repeat(3, 1, 1, 1)
    out = posterize(x, torch.tensor([0.0, 1.0, 8.0]))
    assert out[0].abs().max() == 0
    assert set(torch.unique(out[1] * 255).round().tolist()) <= {0.0, 128.0}
    torch.testing.assert_close(out[2], (x[2] * 255).round() / 255)
    pil = Image.fromarray((x[0].permute(1, 2, 0).numpy() * 255).round().astype("uint8"))
    for b in (0, 1, 2):
        want = torch.from_numpy(np.array(posterize_any_bits(pil, b))).permute(2, 0, 1) / 255
        got = posterize(x[:1], torch.tensor([float(b)]))[0]
        torch.testing.assert_close(got, want.float())


def test_rand_augment_draws_ops_with_timm_frequencies():
    spec = parse_rand_augment("rand-m9-mstd0.5-inc1")
    assert (spec.magnitude, spec.magnitude_std, spec.increasing) == (9.0, 0.5, True)
    torch.manual_seed(0)
    ops, _ = rand_augment_draw(6000, spec)
    assert ops.shape == (6000, 2)
    skipped = (ops == -1).float().mean().item()
    assert abs(skipped - 0.5) < 0.03  # each layer applied with p = 0.5
    counts = torch.bincount(ops[ops >= 0], minlength=len(RAND_OPS)).float()
    assert (counts / counts.sum() - 1 / len(RAND_OPS)).abs().max() < 0.02
    for bad in ("augmix-m5", "rand-m9-tweights", "original"):
        with pytest.raises(FractalDBError, match="fix:"):
            parse_rand_augment(bad)


def _pil_op(name: str, img: Image.Image, arg: float) -> Image.Image:
    from timm.data import auto_augment as A

    fn = A.NAME_TO_OP[name]
    kw = {"fillcolor": (128, 128, 128), "resample": Image.Resampling.BICUBIC}
    if name in ("AutoContrast", "Equalize", "Invert"):
        return fn(img, **kw)
    if name == "Posterize":
        return fn(img, int(arg), **kw)
    return fn(img, arg, **kw)


@pytest.mark.parametrize(
    "name,arg,tol",
    [
        ("Rotate", 20.0, 0.03),
        ("Rotate", -27.0, 0.03),
        ("ShearX", 0.25, 0.03),
        ("ShearY", -0.2, 0.03),
        ("TranslateXRel", 0.3, 0.03),
        ("TranslateYRel", -0.4, 0.03),
        ("AutoContrast", 0.0, 0.01),
        ("Equalize", 0.0, 0.01),
        ("Invert", 0.0, 0.005),
        ("Posterize", 2.0, 0.005),
        ("Solarize", 100.0, 0.005),
        ("SolarizeAdd", 80.0, 0.005),
        ("Color", 1.7, 0.01),
        ("Contrast", 0.3, 0.01),
        ("Brightness", 1.6, 0.01),
        ("Sharpness", 1.9, 0.01),
    ],
)
def test_op_strength_matches_timm_pil_op(name, arg, tol):
    array = smooth_image()
    pil = np.asarray(_pil_op(name, Image.fromarray(array), arg)).astype(np.float32) / 255
    aug = BatchAugment(AugmentConfig(img_size=48, interpolation="bicubic"))
    ours = unit(aug, to_batch(array), whole_image_params(1, 48, [name], [arg]))
    ours = ours[0].permute(1, 2, 0).numpy()
    diff = np.abs(ours - pil).mean()
    untouched = np.abs(array.astype(np.float32) / 255 - pil).mean()
    assert diff < tol, (name, diff)
    assert diff < 0.25 * untouched, (name, diff, untouched)  # the op itself did something


def test_photometric_ops_touch_only_the_samples_that_drew_them():
    aug = BatchAugment(AugmentConfig(img_size=48))
    images = to_batch(*[smooth_image(seed=s) for s in range(3)])
    params = whole_image_params(3, 48, ["Invert"], [0.0])
    params.ops[1:, 0] = -1  # only sample 0 drew Invert
    plain = unit(aug, images, whole_image_params(3, 48))
    out = unit(aug, images, params)
    torch.testing.assert_close(out[1:], plain[1:])
    torch.testing.assert_close(out[0], 1 - plain[0])


def test_geometric_ops_fill_with_the_mean_colour_and_flip_mirrors():
    aug = BatchAugment(AugmentConfig(img_size=32, mean=(0.5, 0.5, 0.5)))
    white = torch.full((1, 3, 32, 32), 255, dtype=torch.uint8)
    out = unit(aug, white, whole_image_params(1, 32, ["Rotate"], [45.0]))
    assert out[0, :, 0, 0].tolist() == pytest.approx([128 / 255] * 3)  # corner: fill
    assert out[0, :, 16, 16].tolist() == pytest.approx([1.0] * 3)  # centre: image
    ramp = torch.arange(32, dtype=torch.uint8).repeat(1, 3, 32, 1) * 8
    params = whole_image_params(1, 32)
    params.hflip[:] = True
    torch.testing.assert_close(unit(aug, ramp, params), ramp.flip(-1).float() / 255)


def test_colour_jitter_is_off_when_rand_augment_is_on_as_in_timm():
    assert (
        BatchAugment(AugmentConfig(img_size=8, auto_augment="rand-m9", color_jitter=0.4)).jitter
        == 0
    )
    jitter = BatchAugment(AugmentConfig(img_size=8, color_jitter=0.4))
    torch.manual_seed(0)
    params = jitter.sample_params(500, 8, 8)
    assert params.jitter.min() >= 0.6 and params.jitter.max() <= 1.4
    assert sorted(params.jitter_order) == [0, 1, 2]


def test_random_erasing_is_timms_on_the_batch():
    aug = BatchAugment(AugmentConfig(img_size=16, reprob=1.0, remode="const"))
    images = torch.full((4, 3, 16, 16), 255, dtype=torch.uint8)
    random.seed(0)
    out = aug(images)
    # const mode writes zeros into one box per image; the rest stays (1 - 0.5) / 0.5 = 1
    assert ((out == 0).flatten(1).any(1)).all() and ((out == 1).flatten(1).any(1)).all()


def test_resolve_augment():
    assert resolve_augment("device", "cpu") == "device"
    assert resolve_augment("auto", "cuda:1") == "device"
    assert resolve_augment("auto", "cpu") == "cpu"
    with pytest.raises(FractalDBError, match="fix: --augment"):
        resolve_augment("gpu", "cpu")


def test_interpolation_without_batched_form_is_one_line_error():
    with pytest.raises(FractalDBError, match="--augment cpu"):
        BatchAugment(AugmentConfig(img_size=8, interpolation="lanczos"))


def test_supervised_augment_hook_mixes_on_the_device_path():
    from pretrain.engine.config import resolve_config
    from pretrain.supervised import SupervisedTask

    task = SupervisedTask()
    over = {"device": "cpu", "augment": "device", "mixup": 0.8, "cutmix": 1.0}
    cfg = resolve_config(task.defaults, "tiny-cpu", over, task.name)
    assert task.train_transform(cfg) is None
    task.setup(cfg, 4)
    images = torch.randint(0, 256, (8, 1, 40, 40), dtype=torch.uint8)
    x, y = task.augment((images, torch.arange(8) % 4))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32
    assert y.shape == (8, 4) and torch.allclose(y.sum(1), torch.ones(8))  # mixed soft targets
    assert math.isfinite(float(x.sum()))
