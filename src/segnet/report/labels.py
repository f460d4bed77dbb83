"""Label maps as pictures: palette PNGs (pixel values are class ids), colour overlays and
uncertainty heat maps. What predict, video and serve write."""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..data import DatasetMeta
from .plots import colorize


def palette_png(labels: np.ndarray, meta: DatasetMeta) -> Image.Image:
    """A palette ("P" mode) PNG whose pixel values are the class ids and whose colours are the dataset's."""
    picture = Image.fromarray(np.asarray(labels, dtype=np.uint8))  # mode L; putpalette makes it P
    table = [meta.ignore_color] * 256
    table[: meta.num_classes] = list(meta.palette)
    picture.putpalette([v for colour in table for v in colour])
    return picture


def overlay(image: np.ndarray, labels: np.ndarray, meta: DatasetMeta, alpha: float = 0.5) -> Image.Image:
    """The image ``(H, W, 3)`` uint8 with the class colours blended over it."""
    blend = (1 - alpha) * image.astype(np.float32) + alpha * colorize(labels, meta).astype(np.float32)
    return Image.fromarray(blend.round().clip(0, 255).astype(np.uint8))


def uncertainty_png(variance: np.ndarray) -> Image.Image:
    """A heat map of per-pixel uncertainty (scaled to its own maximum)."""
    from matplotlib import colormaps

    top = float(variance.max()) or 1.0
    return Image.fromarray((colormaps["inferno"](variance / top)[..., :3] * 255).astype(np.uint8))
