"""Segment images and write what people look at: palette label maps and colour overlays."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..data import DatasetMeta, load_image
from .evaluate import predict_labels


def segment(model: nn.Module, image, normalization: dict, input_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Class ids ``(H, W)`` for one image: a ``(3, H, W)`` uint8 tensor, a PIL image or a file path."""
    if isinstance(image, (str, os.PathLike)):
        image = load_image(image)
    elif isinstance(image, Image.Image):
        image = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) uint8 image, got {tuple(image.shape)} {image.dtype}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return predict_labels(model, image[None].to(device), normalization, input_size)[0].cpu()
    finally:
        model.train(was_training)


def palette_png(labels: np.ndarray, meta: DatasetMeta) -> Image.Image:
    """A palette ("P" mode) PNG whose pixel values are the class ids and whose colours are the dataset's."""
    picture = Image.fromarray(np.asarray(labels, dtype=np.uint8), mode="P")
    table = [meta.ignore_color] * 256
    table[: meta.num_classes] = list(meta.palette)
    picture.putpalette([v for colour in table for v in colour])
    return picture


def overlay(image: np.ndarray, labels: np.ndarray, meta: DatasetMeta, alpha: float = 0.5) -> Image.Image:
    """The image with the class colours blended over it."""
    from ..report import colorize

    blend = (1 - alpha) * image.astype(np.float32) + alpha * colorize(labels, meta).astype(np.float32)
    return Image.fromarray(blend.round().clip(0, 255).astype(np.uint8))


def write_prediction(image: torch.Tensor, labels: torch.Tensor, meta: DatasetMeta, out_dir: str | os.PathLike,
                     stem: str) -> list[Path]:
    """Write ``stem.png`` (label map, values = class ids) and ``stem_overlay.png``; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels_np = labels.cpu().numpy()
    paths = [out / f"{stem}.png", out / f"{stem}_overlay.png"]
    pictures = [palette_png(labels_np, meta), overlay(image.permute(1, 2, 0).cpu().numpy(), labels_np, meta)]
    for path, picture in zip(paths, pictures):
        tmp = path.with_name(f".{path.name}.tmp")
        picture.save(tmp, format="PNG")
        os.replace(tmp, path)
    return paths
