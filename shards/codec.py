"""Image decoding with OpenCV (faster than PIL for PNG/JPEG/WebP), to RGB or gray arrays."""

from __future__ import annotations

import cv2
import numpy as np

IMAGE_EXTS = ("png", "jpg", "jpeg", "webp")
# "RGB" decodes as stored and converts once (gray -> RGB is cheaper than IMREAD_COLOR + swap).
_FLAGS = {"RGB": cv2.IMREAD_UNCHANGED, "L": cv2.IMREAD_GRAYSCALE, None: cv2.IMREAD_UNCHANGED}
_TO_RGB = {2: cv2.COLOR_GRAY2RGB, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}


def decode_image(data: bytes, mode: str | None = "RGB") -> np.ndarray:
    """Decode encoded image bytes to uint8 HxWx3 RGB (`"RGB"`), HxW (`"L"`), or as stored."""
    if mode not in _FLAGS:
        raise ValueError(f"image mode must be 'RGB', 'L' or None, got {mode!r}")
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), _FLAGS[mode])
    except cv2.error as exc:  # some damaged headers raise instead of returning None
        raise ValueError(f"undecodable image ({exc.msg if hasattr(exc, 'msg') else exc})") from exc
    if img is None:
        raise ValueError("undecodable image")
    if mode == "RGB":
        return cv2.cvtColor(img, _TO_RGB[img.ndim if img.ndim == 2 else img.shape[2]])
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img


def find_image(sample: dict) -> bytes:
    """Return the encoded image of a WebDataset sample (the first known image extension)."""
    for ext in IMAGE_EXTS:
        if ext in sample:
            return sample[ext]
    raise KeyError(f"sample {sample.get('__key__')!r} holds no image ({', '.join(IMAGE_EXTS)})")
