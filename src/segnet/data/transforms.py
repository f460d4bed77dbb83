"""Normalisation of uint8 image batches. (Training augments in ``ResidentLoader``: flips,
scale, crops and colour jitter on the resident batches, labels always by nearest neighbour.)"""

from __future__ import annotations

from typing import Sequence

import torch


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(N, 3, H, W)`` pixels on a 0-255 scale (uint8, or float after colour jitter; any
    device) -> float, scaled to [0, 1], then ``(x - mean) / std``."""
    mean_t = torch.tensor(mean, device=images.device, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=images.device, dtype=torch.float32).view(1, -1, 1, 1)
    return (images.float() / 255 - mean_t) / std_t
