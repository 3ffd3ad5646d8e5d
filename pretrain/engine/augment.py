"""Batched training augmentation on the device: a whole uint8 batch in, a model-ready batch out.

The loader workers only decode (uint8, gray stays one channel); this module does, per sample
but on the whole batch at once, what timm's PIL chain (`create_transform(is_training=True)`)
does image by image:

* RandomResizedCrop (the recipe's scale, ratio and interpolation), horizontal/vertical flips
  and RandAugment's geometric ops (Rotate, ShearX/Y, TranslateX/YRel) are folded into ONE
  `grid_sample` per batch: every output pixel is mapped through the RandAugment ops, then the
  flip, then the crop box, to the source image. Pixels whose RandAugment pre-image leaves the
  crop get the fill colour, as PIL's `fillcolor` gives them.
* RandAugment's photometric ops (AutoContrast, Equalize, Invert, Posterize, Solarize,
  SolarizeAdd, Color, Contrast, Brightness, Sharpness) run as batched tensor ops on the
  samples that drew them, in layer order.
* colour jitter (brightness, contrast, saturation) only when RandAugment is off, as in timm;
  gray -> RGB expansion; normalisation; timm's RandomErasing on the device.

Random parameters are drawn on the host from torch's global CPU generator (a few numbers per
sample), so the step never waits on the device, and a CPU run and a GPU run with the same seed
draw the same crops and ops.

The faithful subset, and where it differs from the PIL path (documented, tested for
distributions and op strengths in tests/pretrain/test_augment.py):
* geometric RandAugment ops are applied before the photometric ones of the same sample (PIL
  interleaves them in the drawn order); the fill colour is then also subject to the photometric
  ops drawn after it, as in PIL when the geometric op came first;
* no uint8 rounding between ops (PIL rounds after every op); Posterize/Solarize/Equalize round
  their input to 8-bit levels as PIL does;
* Posterize at 0 bits (timm's level for the strongest magnitudes, which Pillow >= 13 rejects)
  gives a black image, as the TensorFlow reference and the PIL path
  (pretrain/engine/augment_pil.py) do;
* a crop that shrinks the image by more than 1.25x is sampled at 2x the output resolution and
  box-filtered (PIL's resampling filters widen with the scale factor; `grid_sample` alone would
  alias thin fractal strokes); the fill mask is computed at the output resolution;
* colour jitter applies brightness, contrast and saturation in one random order per batch
  (torchvision draws the order per image); hue jitter is not supported (timm's float
  `color_jitter` sets none).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from fractaldb.core.errors import FractalDBError
from pretrain.engine.config import effective_color_jitter

LEVEL_DENOM = 10.0  # timm's _LEVEL_DENOM: magnitude 10 is the strongest level
GEOMETRIC_OPS = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
# timm's _RAND_TRANSFORMS order (the "increasing" variants differ only in their level maps)
RAND_OPS = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "Posterize",
    "Solarize",
    "SolarizeAdd",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateXRel",
    "TranslateYRel",
)
PHOTOMETRIC_OPS = tuple(op for op in RAND_OPS if op not in GEOMETRIC_OPS)
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, PIL's convert("L")
_INTERPOLATIONS = {"bicubic": "bicubic", "bilinear": "bilinear", "nearest": "nearest"}


@dataclass(frozen=True)
class RandAugmentSpec:
    """timm's `rand-...` string as numbers: magnitude, layers, probability, noise, variant."""

    magnitude: float = 10.0
    num_layers: int = 2
    prob: float = 0.5
    magnitude_std: float = 0.0
    magnitude_max: float = LEVEL_DENOM
    increasing: bool = False


def parse_rand_augment(config: str) -> RandAugmentSpec:
    """Parse timm's RandAugment string (rand-m9-mstd0.5[-inc1][-n2][-p0.5][-mmax10])."""
    parts = config.split("-")
    if parts[0] != "rand":
        raise FractalDBError(
            f"auto_augment {config!r}: only RandAugment ('rand-...') runs on the device; "
            "fix: --augment cpu for timm's other policies, or --set auto_augment=rand-m9-mstd0.5-inc1"
        )
    values: dict[str, Any] = {}
    for part in parts[1:]:
        match = re.fullmatch(r"(mstd|mmax|inc|m|n|p)([0-9.]+|inf)", part)
        if match is None:
            raise FractalDBError(
                f"auto_augment {config!r}: option {part!r} is not supported on the device "
                "(m, n, p, mstd, mmax, inc are); fix: --augment cpu, or drop the option"
            )
        values[match.group(1)] = float(match.group(2))
    mstd = values.get("mstd", 0.0)
    return RandAugmentSpec(
        magnitude=values.get("m", 10.0),
        num_layers=int(values.get("n", 2)),
        prob=values.get("p", 0.5),
        magnitude_std=float("inf") if mstd > 100 else mstd,
        magnitude_max=values.get("mmax", LEVEL_DENOM),
        increasing=bool(values.get("inc", 0)),
    )


def level_to_arg(op: str, magnitude: torch.Tensor, sign: torch.Tensor, increasing: bool):
    """timm's level -> argument maps (auto_augment.LEVEL_TO_ARG), on tensors of magnitudes.

    `sign` (+1/-1) plays timm's `_randomly_negate`. Posterize may ask for 0 bits (black).
    """
    level = magnitude / LEVEL_DENOM
    if op == "Rotate":
        return level * 30.0 * sign
    if op in ("ShearX", "ShearY"):
        return level * 0.3 * sign
    if op in ("TranslateXRel", "TranslateYRel"):
        return level * 0.45 * sign
    if op == "Posterize":
        bits = torch.floor(level * 4)
        bits = 4 - bits if increasing else bits
        return bits.clamp(0, 8)
    if op == "Solarize":
        thresh = torch.clamp(torch.floor(level * 256), max=256)
        return 256 - thresh if increasing else thresh
    if op == "SolarizeAdd":
        return torch.clamp(torch.floor(level * 110), max=128)
    if op in ("Color", "Contrast", "Brightness", "Sharpness"):
        if increasing:
            return torch.clamp(1.0 + sign * level * 0.9, min=0.1)
        return level * 1.8 + 0.1
    return torch.zeros_like(magnitude)  # AutoContrast, Equalize, Invert take no argument


# --- photometric ops on float images in [0, 1], (N, C, H, W), per-sample arguments (N,) -------


_CONSTANTS: dict[tuple, torch.Tensor] = {}


def constant(values: tuple[float, ...], like: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """A small constant tensor on `like`'s device, made once: building it from a Python list
    every batch would be a blocking host-to-device copy in the middle of the step."""
    key = (values, like.device, like.dtype, shape)
    if key not in _CONSTANTS:
        _CONSTANTS[key] = torch.tensor(values, dtype=like.dtype, device=like.device).view(shape)
    return _CONSTANTS[key]


def _per_sample(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    w = constant(_LUMA, x, (1, 3, 1, 1))
    return (x * w).sum(1, keepdim=True)


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL ImageEnhance: degenerate + factor x (image - degenerate), clipped."""
    return (degenerate + _per_sample(factor) * (x - degenerate)).clamp_(0.0, 1.0)


def _levels(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x * 255.0)


def autocontrast(x: torch.Tensor, _arg: torch.Tensor | None = None) -> torch.Tensor:
    """Stretch each channel of each image to the full range (PIL autocontrast, cutoff 0)."""
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    span = hi - lo
    return torch.where(span > 0, (x - lo) / span.clamp_min(1e-12), x)


def equalize(x: torch.Tensor, _arg: torch.Tensor | None = None) -> torch.Tensor:
    """Histogram equalisation of each channel of each image (PIL's ImageOps.equalize)."""
    n, c, h, w = x.shape
    v = _levels(x).long().clamp_(0, 255).view(n * c, h * w)
    hist = torch.zeros(n * c, 256, device=x.device, dtype=torch.long)
    hist.scatter_add_(1, v, torch.ones_like(v))
    last_nonzero = 255 - torch.argmax((hist.flip(1) > 0).long(), dim=1, keepdim=True)
    step = (h * w - hist.gather(1, last_nonzero)) // 255
    before = torch.cumsum(hist, 1) - hist
    lut = torch.clamp((before + step // 2) // step.clamp_min(1), max=255)
    out = torch.where(step > 0, lut.gather(1, v), v)
    return (out.float() / 255.0).view(n, c, h, w)


def invert(x: torch.Tensor, _arg: torch.Tensor | None = None) -> torch.Tensor:
    """1 - x."""
    return 1.0 - x


def posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Keep the `bits` most significant bits of each 8-bit level; 0 bits gives black."""
    step = torch.pow(2.0, 8.0 - bits.clamp(0, 8).float())
    return torch.floor(_levels(x) / _per_sample(step)) * _per_sample(step) / 255.0


def solarize(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Invert the levels at or above `threshold` (0..256)."""
    v = _levels(x)
    return torch.where(v >= _per_sample(threshold.float()), 255.0 - v, v) / 255.0


def solarize_add(x: torch.Tensor, add: torch.Tensor) -> torch.Tensor:
    """Add `add` to the levels below 128 (timm's solarize_add)."""
    v = _levels(x)
    return torch.where(v < 128, (v + _per_sample(add.float())).clamp_(max=255.0), v) / 255.0


def color(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Saturation: blend with the image's gray version."""
    return _blend(_gray(x), x, factor)


def contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the mean gray level of the image (rounded to a level, as PIL does)."""
    mean = torch.round(_gray(x).mean(dim=(1, 2, 3), keepdim=True) * 255.0) / 255.0
    return _blend(mean.expand_as(x), x, factor)


def brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with black."""
    return _blend(torch.zeros_like(x), x, factor)


def sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with PIL's SMOOTH-filtered image (border pixels keep their value)."""
    c = x.shape[1]
    kernel = constant((1 / 13, 1 / 13, 1 / 13, 1 / 13, 5 / 13, 1 / 13, 1 / 13, 1 / 13, 1 / 13),
                      x, (1, 1, 3, 3))  # fmt: skip
    smooth = F.conv2d(x, kernel.expand(c, 1, 3, 3), groups=c)
    degenerate = x.clone()
    degenerate[:, :, 1:-1, 1:-1] = smooth
    return _blend(degenerate, x, factor)


PHOTOMETRIC_FNS = {
    "AutoContrast": autocontrast,
    "Equalize": equalize,
    "Invert": invert,
    "Posterize": posterize,
    "Solarize": solarize,
    "SolarizeAdd": solarize_add,
    "Color": color,
    "Contrast": contrast,
    "Brightness": brightness,
    "Sharpness": sharpness,
}


# --- parameter sampling on the host ---------------------------------------------------------


def sample_crops(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    attempts: int = 10,
) -> torch.Tensor:
    """RandomResizedCrop boxes (x0, y0, w, h) in pixels, (n, 4): torchvision's get_params,
    all samples at once (10 attempts, then the centre crop clamped to `ratio`)."""
    area = float(height * width)
    target = area * torch.empty(n, attempts).uniform_(scale[0], scale[1])
    log_r = torch.empty(n, attempts).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    aspect = torch.exp(log_r)
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (h > 0) & (w <= width) & (h <= height)
    first = torch.argmax(ok.long(), dim=1, keepdim=True)
    found = ok.any(dim=1)
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)
    # torch.randint(0, H - h + 1) per sample
    y0 = torch.floor(torch.rand(n) * (height - h + 1))
    x0 = torch.floor(torch.rand(n) * (width - w + 1))
    # fallback: whole image, clamped to the ratio range, centred
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fh, fw = height, int(round(height * max(ratio)))
    else:
        fw, fh = width, height
    fallback = torch.tensor([(width - fw) // 2, (height - fh) // 2, fw, fh], dtype=torch.float)
    boxes = torch.stack([x0, y0, w, h], dim=1)
    return torch.where(found[:, None], boxes, fallback)


@dataclass
class AugmentParams:
    """Everything random about one batch, drawn on the host (see sample_params)."""

    boxes: torch.Tensor  # (n, 4) crop x0, y0, w, h in source pixels
    hflip: torch.Tensor  # (n,) bool
    vflip: torch.Tensor  # (n,) bool
    ops: torch.Tensor  # (n, layers) index into RAND_OPS, -1 where the layer is skipped
    args: torch.Tensor  # (n, layers) the op's argument (timm's level_to_arg)
    jitter: torch.Tensor | None = None  # (n, 3) brightness, contrast, saturation factors
    jitter_order: list[int] = field(default_factory=list)


def rand_augment_draw(n: int, spec: RandAugmentSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample and layer: the op (index into RAND_OPS, -1 = skipped) and its argument."""
    layers = spec.num_layers
    ops = torch.randint(0, len(RAND_OPS), (n, layers))
    applied = torch.rand(n, layers) < spec.prob
    if spec.magnitude_std == float("inf"):
        mag = torch.rand(n, layers) * spec.magnitude
    elif spec.magnitude_std > 0:
        mag = torch.normal(spec.magnitude, spec.magnitude_std, size=(n, layers))
    else:
        mag = torch.full((n, layers), float(spec.magnitude))
    mag = mag.clamp(0.0, spec.magnitude_max)
    sign = torch.where(torch.rand(n, layers) < 0.5, 1.0, -1.0)
    args = torch.zeros(n, layers)
    for k, op in enumerate(RAND_OPS):
        hit = ops == k
        args = torch.where(hit, level_to_arg(op, mag, sign, spec.increasing), args)
    return torch.where(applied, ops, torch.full_like(ops, -1)), args


def geometric_matrices(ops: torch.Tensor, args: torch.Tensor) -> torch.Tensor:
    """(n, 3, 3): output -> input maps, in normalised coordinates, of the RandAugment layers'
    geometric ops composed in layer order (photometric and skipped layers are identities).

    PIL's affine ops map output pixel (x, y) to input (a x + b y + c, d x + e y + f) from the
    top-left corner; rotation turns about the centre; on a square image in [-1, 1] coordinates:
    ShearX f: x' = x + f y + f, TranslateXRel p: x' = x + 2p, Rotate t: R(-t) about 0.
    """
    n, layers = ops.shape
    total = torch.eye(3).expand(n, 3, 3).clone()
    for layer in range(layers):
        op, a = ops[:, layer], args[:, layer]
        m = torch.eye(3).expand(n, 3, 3).clone()
        rad = torch.deg2rad(a)
        rot = op == RAND_OPS.index("Rotate")
        m[rot, 0, 0] = torch.cos(rad[rot])
        m[rot, 0, 1] = -torch.sin(rad[rot])
        m[rot, 1, 0] = torch.sin(rad[rot])
        m[rot, 1, 1] = torch.cos(rad[rot])
        sx = op == RAND_OPS.index("ShearX")
        m[sx, 0, 1] = a[sx]
        m[sx, 0, 2] = a[sx]
        sy = op == RAND_OPS.index("ShearY")
        m[sy, 1, 0] = a[sy]
        m[sy, 1, 2] = a[sy]
        tx = op == RAND_OPS.index("TranslateXRel")
        m[tx, 0, 2] = 2 * a[tx]
        ty = op == RAND_OPS.index("TranslateYRel")
        m[ty, 1, 2] = 2 * a[ty]
        total = total @ m  # the earlier layer's map is applied last (image of an image)
    return total


# --- the batch augmentation ------------------------------------------------------------------


@dataclass
class AugmentConfig:
    """The recipe values the batched path reads (same meaning as timm's create_transform)."""

    img_size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    interpolation: str = "bicubic"
    hflip: float = 0.5
    vflip: float = 0.0
    auto_augment: str | None = None
    color_jitter: float = 0.0
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    reprob: float = 0.0
    remode: str = "pixel"
    recount: int = 1
    out_channels: int = 3
    antialias: bool = True

    @classmethod
    def from_cfg(cls, cfg: dict[str, Any], out_channels: int = 3) -> AugmentConfig:
        """From a resolved engine config (keys absent from a task's config keep defaults)."""
        mean = tuple(float(v) for v in cfg["mean"])[: max(out_channels, 1)]
        std = tuple(float(v) for v in cfg["std"])[: max(out_channels, 1)]
        return cls(
            img_size=int(cfg["img_size"]),
            scale=tuple(cfg.get("scale", (0.08, 1.0))),
            ratio=tuple(cfg.get("ratio") or (3 / 4, 4 / 3)),
            interpolation=str(cfg.get("interpolation", "bicubic")),
            hflip=float(cfg.get("hflip", 0.5)),
            vflip=float(cfg.get("vflip", 0.0)),
            auto_augment=cfg.get("auto_augment") or None,
            color_jitter=float(cfg.get("color_jitter") or 0.0),
            mean=mean,
            std=std,
            reprob=float(cfg.get("reprob", 0.0)),
            remode=str(cfg.get("remode", "pixel")),
            out_channels=out_channels,
        )


class BatchAugment:
    """uint8 (B, C, H, W) on any device -> normalised float (B, out_channels, S, S), per-sample
    random crop/flip/RandAugment/jitter/erasing (see the module docstring)."""

    def __init__(self, config: AugmentConfig) -> None:
        self.config = config
        if config.interpolation not in _INTERPOLATIONS:
            raise FractalDBError(
                f"interpolation {config.interpolation!r} has no batched form; fix: "
                f"--set interpolation=bicubic (or {', '.join(_INTERPOLATIONS)}), or --augment cpu"
            )
        self.rand = parse_rand_augment(config.auto_augment) if config.auto_augment else None
        # timm's rule (colour jitter off under an auto-augment policy), shared with the PIL path
        self.jitter = effective_color_jitter(
            {"color_jitter": config.color_jitter, "auto_augment": config.auto_augment}
        )
        # timm's RandAugment fill: the mean colour in 8-bit levels
        self.fill = tuple(min(255, round(255 * m)) / 255.0 for m in config.mean)
        self._erasing: dict[str, Any] = {}

    def sample_params(self, n: int, height: int, width: int) -> AugmentParams:
        """Draw crops, flips, RandAugment ops and jitter for `n` images of height x width."""
        c = self.config
        boxes = sample_crops(n, height, width, c.scale, c.ratio)
        hflip = torch.rand(n) < c.hflip
        vflip = torch.rand(n) < c.vflip
        if self.rand is not None:
            ops, args = rand_augment_draw(n, self.rand)
        else:
            ops, args = torch.full((n, 0), -1), torch.zeros(n, 0)
        params = AugmentParams(boxes, hflip, vflip, ops, args)
        if self.jitter > 0:
            params.jitter = torch.empty(n, 3).uniform_(max(0.0, 1 - self.jitter), 1 + self.jitter)
            params.jitter_order = torch.randperm(3).tolist()
        return params

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Augment a uint8 batch; returns float32 normalised images on the same device."""
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise FractalDBError(
                f"device augmentation takes uint8 (B, C, H, W) batches, got {images.dtype} "
                f"{tuple(images.shape)}; fix: loaders without a train transform (--augment device)"
            )
        n, _, h, w = images.shape
        params = self.sample_params(n, h, w)
        return self.apply(images, params)

    def apply(self, images: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Apply drawn parameters: warp, channels, photometric ops, normalise, erase."""
        x = self.warp(images, params)
        x = self._channels(x)
        if params.ops.numel():
            x = self._photometric(x, params)
        if params.jitter is not None:
            x = self._color_jitter(x, params)
        x = self.normalize(x)
        if self.config.reprob > 0:
            x = self._erasing_for(x.device)(x)
        return x

    def warp(self, images: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Crop + flip + geometric RandAugment as one grid_sample per sample; float in [0, 1].

        Samples whose crop shrinks the image by more than 1.25x are sampled at twice the output
        size and box-filtered (antialiasing), the others directly: two calls at most.
        """
        c = self.config
        n, ch, h, w = images.shape
        size = c.img_size
        boxes = params.boxes
        geo = (
            geometric_matrices(params.ops, params.args)
            if params.ops.numel()
            else torch.eye(3).expand(n, 3, 3)
        )
        # output -> RandAugment pre-image q -> flip -> crop box -> normalised source coordinates
        crop = torch.zeros(n, 3, 3)
        crop[:, 0, 0] = boxes[:, 2] / w * torch.where(params.hflip, -1.0, 1.0)
        crop[:, 1, 1] = boxes[:, 3] / h * torch.where(params.vflip, -1.0, 1.0)
        crop[:, 0, 2] = (2 * boxes[:, 0] + boxes[:, 2]) / w - 1
        crop[:, 1, 2] = (2 * boxes[:, 1] + boxes[:, 3]) / h - 1
        crop[:, 2, 2] = 1.0
        theta = (crop @ geo)[:, :2, :]
        src = images.float().div_(255.0)
        if ch == 1 and c.out_channels == 3 and len(set(self.fill)) > 1:
            src = src.expand(n, 3, h, w)  # a coloured fill needs the colour channels first
        shrink = torch.maximum(boxes[:, 2], boxes[:, 3]) / size
        factor = (
            torch.where(shrink > 1.25, 2, 1) if c.antialias else torch.ones(n, dtype=torch.long)
        )
        out = src.new_empty(n, src.shape[1], size, size)
        for k in (1, 2):
            sel = torch.nonzero(factor == k).flatten()
            if not len(sel):
                continue
            whole = len(sel) == n
            idx = sel.to(src.device, non_blocking=True)
            grid = F.affine_grid(
                theta[sel].to(src.device, non_blocking=True),
                [len(sel), 1, size * k, size * k],
                align_corners=False,
            )
            part = F.grid_sample(
                src if whole else src[idx], grid, mode=_INTERPOLATIONS[c.interpolation],
                padding_mode="border", align_corners=False,
            )  # fmt: skip
            if k > 1:
                part = F.avg_pool2d(part, k)
            if whole:
                out = part
            else:
                out[idx] = part
        return self._fill_outside(out, geo, params)

    def _fill_outside(
        self, out: torch.Tensor, geo: torch.Tensor, params: AugmentParams
    ) -> torch.Tensor:
        """The fill colour where a geometric op's pre-image leaves the crop (PIL's fillcolor);
        only samples that drew a geometric op are looked at."""
        if not params.ops.numel():
            return out.clamp_(0.0, 1.0)
        geometric = torch.tensor([RAND_OPS.index(o) for o in GEOMETRIC_OPS])
        sel = torch.nonzero(torch.isin(params.ops, geometric).any(dim=1)).flatten()
        if len(sel):
            n, channels, size, _ = out.shape
            idx = sel.to(out.device, non_blocking=True)
            q = F.affine_grid(
                geo[sel, :2, :].to(out.device, non_blocking=True),
                [len(sel), 1, size, size],
                align_corners=False,
            )
            inside = (q.abs() <= 1.0).all(dim=-1).unsqueeze(1)
            values = self.fill if len(self.fill) == channels else self.fill[:1] * channels
            fill = constant(tuple(values), out, (1, channels, 1, 1))
            out[idx] = torch.where(inside, out[idx], fill)
        return out.clamp_(0.0, 1.0)

    def _channels(self, x: torch.Tensor) -> torch.Tensor:
        """Gray -> RGB (or RGB -> gray for one-channel encoders), on the device."""
        want = self.config.out_channels
        if x.shape[1] == want:
            return x
        if want == 3 and x.shape[1] == 1:
            return x.expand(-1, 3, -1, -1).contiguous()
        if want == 1 and x.shape[1] == 3:
            return _gray(x)
        raise FractalDBError(f"cannot turn {x.shape[1]}-channel images into {want} channels")

    def _photometric(self, x: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Each layer's photometric ops on the samples that drew them (host-side selection)."""
        for layer in range(params.ops.shape[1]):
            drawn = params.ops[:, layer]
            for name in PHOTOMETRIC_OPS:
                sel = torch.nonzero(drawn == RAND_OPS.index(name)).flatten()
                if not len(sel):
                    continue
                idx = sel.to(x.device, non_blocking=True)
                arg = params.args[sel, layer].to(x.device, non_blocking=True)
                x[idx] = PHOTOMETRIC_FNS[name](x[idx], arg)
        return x

    def _color_jitter(self, x: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        factors = params.jitter.to(x.device, non_blocking=True)
        fns = (brightness, contrast, color)
        for i in params.jitter_order:
            x = fns[i](x, factors[:, i])
        return x

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(x - mean) / std with the recipe's per-channel values."""
        c = self.config
        ch = x.shape[1]
        mean = constant(tuple(c.mean[:ch]), x, (1, ch, 1, 1))
        std = constant(tuple(c.std[:ch]), x, (1, ch, 1, 1))
        return (x - mean) / std

    def _erasing_for(self, device: torch.device) -> Any:
        key = str(device)
        if key not in self._erasing:
            from timm.data.random_erasing import RandomErasing

            c = self.config
            self._erasing[key] = RandomErasing(
                probability=c.reprob, mode=c.remode, max_count=c.recount, device=key
            )
        return self._erasing[key]


def eval_resize(images: torch.Tensor, config: AugmentConfig) -> torch.Tensor:
    """Deterministic uint8 batch -> normalised model input: resize to img_size (antialiased),
    channels, normalise. For previews of raw training batches (e.g. MAE reconstructions)."""
    aug = BatchAugment(replace_config(config, auto_augment=None, color_jitter=0.0, reprob=0.0))
    x = images.float() / 255.0
    size = config.img_size
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
    return aug.normalize(aug._channels(x.clamp(0.0, 1.0)))


class PhotoToUint8:
    """The loader-worker side of the device path for photos (fine-tuning): a decoded PIL image
    -> uint8 (3, size, size) tensor, nothing else.

    Photos come in many sizes and a batch needs one: each is resized (PIL, antialiased) to the
    training size unless it already has it. Unlike the PIL path, whose crop sees the original
    aspect ratio, this squashes non-square photos first (all of the image stays in view; the
    crop's own aspect-ratio jitter is unchanged). CIFAR's 32 px images are upsampled here.
    """

    def __init__(self, size: int) -> None:
        self.size = int(size)

    def __call__(self, image: Any) -> torch.Tensor:
        """PIL image -> uint8 CHW tensor of the training size."""
        import numpy as np
        from PIL import Image

        image = image.convert("RGB")
        if image.size != (self.size, self.size):
            image = image.resize((self.size, self.size), Image.Resampling.BICUBIC)
        return torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()


def replace_config(config: AugmentConfig, **changes: Any) -> AugmentConfig:
    """A copy of `config` with some fields changed."""
    from dataclasses import replace

    return replace(config, **changes)
