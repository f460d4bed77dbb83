"""Max pooling that records indices, and the unpooling that uses them.

SegNet's decoder upsamples by writing each pooled value back to the position its
maximum came from (zeros elsewhere). Pooling uses ceil mode, as Caffe did, so odd
sizes keep their border pixels (45 -> 23); unpooling must therefore be told the exact
pre-pool size (23 -> 45, not 46). `PoolRecord` carries both pieces of bookkeeping.

Unpooling is written as a scatter into a zero map rather than with
``F.max_unpool2d``: it exports to ONNX as a plain ScatterElements and its
backward is a gather, so gradients reach only the recorded positions.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PoolRecord(NamedTuple):
    """What a decoder needs to undo one pooling: argmax indices and the input size."""

    indices: Tensor  # (N, C, h, w) flat positions into the (H * W) plane of the input
    size: tuple[int, int]  # (H, W) before pooling


def max_pool_with_indices(x: Tensor) -> tuple[Tensor, PoolRecord]:
    """2x2, stride-2, ceil-mode max pooling; returns the pooled map and its record."""
    pooled, indices = F.max_pool2d(x, kernel_size=2, stride=2, ceil_mode=True, return_indices=True)
    return pooled, PoolRecord(indices, (x.shape[-2], x.shape[-1]))


def max_unpool(x: Tensor, record: PoolRecord) -> Tensor:
    """Place each value of ``x`` at its recorded argmax position; zeros elsewhere.

    Pooling windows do not overlap, so no two values share a position and the
    scatter is deterministic.
    """
    n, c = x.shape[:2]
    height, width = record.size
    out = x.new_zeros(n, c, height * width)
    out = out.scatter(2, record.indices.flatten(2), x.flatten(2))
    return out.view(n, c, height, width)


def max_unpool_index_free(x: Tensor, before_pool: Tensor) -> Tensor:
    """Unpool without indices, for runtimes that reject them (TensorRT, CoreML).

    Each pooled value is copied back to every position of its 2x2 window that equals
    the window's maximum in ``before_pool`` (the encoder map that was pooled). Where
    the maximum is unique this is identical to :func:`max_unpool`; where a window has
    tied maxima the value is written to all of them instead of the first one.
    """
    height, width = before_pool.shape[-2:]
    pooled_max = F.max_pool2d(before_pool, kernel_size=2, stride=2, ceil_mode=True)
    spread_max = _spread(pooled_max, height, width)
    spread_x = _spread(x, height, width)
    return torch.where(before_pool == spread_max, spread_x, torch.zeros_like(spread_x))


def _spread(x: Tensor, height: int, width: int) -> Tensor:
    """Repeat each value over its 2x2 window and crop to (height, width)."""
    return x.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)[..., :height, :width]


def min_input_size(levels: int) -> int:
    """Smallest height/width a network with ``levels`` poolings accepts.

    Every pooling must have at least two pixels per side to choose between, so the
    input of the deepest pooling is at least 2 pixels: size > 2 ** (levels - 1).
    """
    return 2 ** (levels - 1) + 1


def check_input_size(x: Tensor, levels: int, model_name: str) -> None:
    """Raise a clear error for inputs a network of this depth cannot process."""
    if x.dim() != 4:
        raise ValueError(f"{model_name} expects a batch of images (N, C, H, W); got shape {tuple(x.shape)}")
    minimum = min_input_size(levels)
    height, width = x.shape[-2:]
    if height < minimum or width < minimum:
        raise ValueError(
            f"{model_name} has {levels} pooling levels and needs inputs of at least "
            f"{minimum}x{minimum} pixels; got {height}x{width}. Resize or pad the image."
        )


class MaxPoolWithIndices(nn.Module):
    """Module form of :func:`max_pool_with_indices` (shows up in model printouts)."""

    def forward(self, x: Tensor) -> tuple[Tensor, PoolRecord]:
        return max_pool_with_indices(x)


class MaxUnpool(nn.Module):
    """Module form of :func:`max_unpool`."""

    def forward(self, x: Tensor, record: PoolRecord) -> Tensor:
        return max_unpool(x, record)
