"""Max pooling that records indices, and the unpooling that uses them.

SegNet's decoder upsamples by writing each pooled value back to the position its
maximum came from (zeros elsewhere). Pooling uses ceil mode, as Caffe did, so odd
sizes keep their border pixels (45 -> 23); unpooling must therefore be told the exact
pre-pool size (23 -> 45, not 46). `PoolRecord` carries both pieces of bookkeeping.

Unpooling runs ``F.max_unpool2d`` (an order of magnitude faster than a scatter on CPU in
bf16 and channels_last, benchmarks/unpool.py) and falls back to a scatter into a zero map
where that kernel is not wanted: under ``torch.use_deterministic_algorithms`` (which
refuses ``max_unpool2d``) and in ONNX export (a plain ScatterElements). Both give the same
outputs and gradients bit for bit: the windows never overlap, and both backwards are a
gather, so gradients reach only the recorded positions.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PoolRecord(NamedTuple):
    """What a decoder needs to undo one pooling: argmax indices and the input size
    (index-free mode: no indices, the pooled input map instead)."""

    indices: Tensor | None  # (N, C, h, w) flat positions into the (H * W) plane of the input
    size: tuple[int, int]  # (H, W) before pooling
    before_pool: Tensor | None = None  # index-free mode only


def max_pool_with_indices(x: Tensor, index_free: bool = False) -> tuple[Tensor, PoolRecord]:
    """2x2, stride-2, ceil-mode max pooling; returns the pooled map and its record.

    ``index_free`` records the input map instead of indices (see
    :func:`max_unpool_index_free`), so the graph has no pooling indices at all.
    """
    size = (x.shape[-2], x.shape[-1])
    if index_free:
        return F.max_pool2d(x, kernel_size=2, stride=2, ceil_mode=True), PoolRecord(None, size, x)
    pooled, indices = F.max_pool2d(x, kernel_size=2, stride=2, ceil_mode=True, return_indices=True)
    return pooled, PoolRecord(indices, size)


def use_index_free_unpooling(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Switch every pooling/unpooling pair of ``model`` to (or back from) index-free mode."""
    for module in model.modules():
        if hasattr(module, "index_free"):
            module.index_free = enabled
    return model


def max_unpool(x: Tensor, record: PoolRecord) -> Tensor:
    """Place each value of ``x`` at its recorded argmax position; zeros elsewhere.

    Pooling windows do not overlap, so no two values share a position and the result
    is deterministic whichever kernel runs (see the module docstring). A record
    without indices unpools index-free.
    """
    if record.indices is None:
        return max_unpool_index_free(x, record.before_pool)
    if not (torch.are_deterministic_algorithms_enabled() or torch.onnx.is_in_onnx_export()):
        return F.max_unpool2d(x, record.indices, kernel_size=2, stride=2, output_size=record.size)
    n, c = x.shape[:2]
    height, width = record.size
    out = x.new_zeros(n, c, height * width)
    out = out.scatter(2, record.indices.flatten(2), x.flatten(2))
    return out.view(n, c, height, width)


def max_unpool_index_free(x: Tensor, before_pool: Tensor) -> Tensor:
    """Unpool without indices, for runtimes that reject them (TensorRT, CoreML).

    Each pooled value goes to the position of its 2x2 window that holds the window's
    maximum in ``before_pool`` (the encoder map that was pooled); among tied maxima, the
    first in raster order, which is the one PyTorch's pooling records. So the result equals
    :func:`max_unpool` exactly, ties included (all-zero windows after a ReLU are common).
    Built from pad, reshape, compare and cumulative sum: plain ONNX operators.
    """
    n, c, height, width = before_pool.shape
    h, w = x.shape[-2:]
    # pad to the pooled grid (ceil mode) with -inf so padding never wins a window
    padded = F.pad(before_pool, (0, 2 * w - width, 0, 2 * h - height), value=float("-inf"))
    windows = padded.view(n, c, h, 2, w, 2).permute(0, 1, 2, 4, 3, 5).reshape(n, c, h, w, 4)
    is_max = windows == windows.amax(-1, keepdim=True)
    first = is_max & (is_max.to(torch.int32).cumsum(-1) == 1)
    out = torch.where(first, x.unsqueeze(-1), torch.zeros((), dtype=x.dtype, device=x.device))
    out = out.view(n, c, h, w, 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(n, c, 2 * h, 2 * w)
    return out[..., :height, :width]


def min_input_size(levels: int) -> int:
    """Smallest height/width a network with ``levels`` poolings accepts.

    Every pooling must have at least two pixels per side to choose between, so the
    input of the deepest pooling is at least 2 pixels: size > 2 ** (levels - 1).
    """
    return 2 ** (levels - 1) + 1


def smallest_input(model) -> int:
    """Smallest height/width ``model`` accepts: its ``min_size`` where it sets one, else
    what its ``pool_levels`` poolings need (``min_input_size``)."""
    return getattr(model, "min_size", None) or min_input_size(getattr(model, "pool_levels", 5))


def check_input_size(x: Tensor, levels: int, model_name: str, minimum: int | None = None) -> None:
    """Raise a clear error for inputs a network of this depth cannot process (``minimum``:
    the network's own floor, default ``min_input_size(levels)``)."""
    if x.dim() != 4:
        raise ValueError(f"{model_name} expects a batch of images (N, C, H, W); got shape {tuple(x.shape)}")
    minimum = minimum or min_input_size(levels)
    height, width = x.shape[-2:]
    if height < minimum or width < minimum:
        raise ValueError(
            f"{model_name} has {levels} pooling levels and needs inputs of at least "
            f"{minimum}x{minimum} pixels; got {height}x{width}. Resize or pad the image."
        )
