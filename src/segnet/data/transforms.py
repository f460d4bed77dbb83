"""Joint image + label transforms, and normalisation.

Augmentation uses ``torchvision.transforms.v2`` with the label wrapped as a ``Mask``, so it
is always resized with nearest neighbour and padded with the ignore value.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2


class JointTransform:
    """Apply a ``transforms.v2`` pipeline to ``(image uint8 (3,H,W), label int64 (H,W))``."""

    def __init__(self, transform: v2.Transform) -> None:
        self.transform = transform

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.transform(tv_tensors.Image(image), tv_tensors.Mask(label))
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)


def augmentation(
    ignore_index: int,
    crop_size: tuple[int, int] | None = None,
    scale: tuple[float, float] = (1.0, 1.0),
    hflip: bool = True,
    color_jitter: float = 0.0,
) -> JointTransform:
    """Flips, random scale then crop (labels padded with ``ignore_index``), colour jitter."""
    steps: list[v2.Transform] = []
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    if scale != (1.0, 1.0):
        steps.append(v2.RandomAffine(degrees=0, scale=scale, fill={tv_tensors.Image: 0, tv_tensors.Mask: ignore_index}))
    if crop_size is not None:
        steps.append(v2.RandomCrop(crop_size, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: ignore_index}))
    if color_jitter > 0:
        steps.append(v2.ColorJitter(color_jitter, color_jitter, color_jitter))
    return JointTransform(v2.Compose(steps))


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 ``(N, 3, H, W)`` (any device) -> float, scaled to [0, 1], then ``(x - mean) / std``."""
    mean_t = torch.tensor(mean, device=images.device, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=images.device, dtype=torch.float32).view(1, -1, 1, 1)
    return (images.float() / 255 - mean_t) / std_t
