"""How convolution kernels are stored on disk (``segnet slim --weights``, model folders):
``fp32`` as trained; ``bf16``, half the size; ``int8`` with one fp32 scale per output channel,
a quarter. Every reader gets fp32 back. Imports only torch."""

from __future__ import annotations

import os

import torch

WEIGHT_STORAGE = ("fp32", "bf16", "int8")


def _is_kernel(value) -> bool:
    return isinstance(value, torch.Tensor) and value.is_floating_point() and value.dim() == 4


def store_kernels(state: dict, weights: str) -> tuple[dict, dict]:
    """``(state, scales)``: ``state`` with its convolution kernels (4-D floating tensors) stored
    as ``weights`` says (one of ``WEIGHT_STORAGE``), every other tensor unchanged; ``scales``
    holds the int8 kernels' scales (empty otherwise)."""
    if weights == "int8":
        return quantize_kernels(state)
    if weights == "bf16":
        return {key: value.detach().to(torch.bfloat16) if _is_kernel(value) else value
                for key, value in state.items()}, {}
    if weights == "fp32":
        return dict(state), {}
    raise ValueError(f"weights must be one of {', '.join(WEIGHT_STORAGE)}, got {weights!r}")


def restore_kernels(state: dict, scales: dict | None, where: str | os.PathLike = "the checkpoint") -> tuple[dict, str]:
    """``(state, stored)``: ``state`` with every kernel back in fp32, and how the file held
    them (``fp32``, ``bf16`` or ``int8``). int8 kernels are checked against their ``scales``
    (:func:`dequantize_kernels`)."""
    tensors = [value for value in state.values() if isinstance(value, torch.Tensor)]
    if scales or any(value.dtype == torch.int8 for value in tensors):
        return dequantize_kernels(state, scales or {}, where), "int8"
    if any(value.dtype == torch.bfloat16 for value in tensors):
        return {key: value.float() if isinstance(value, torch.Tensor) and value.dtype == torch.bfloat16 else value
                for key, value in state.items()}, "bf16"
    return state, "fp32"


def quantize_kernels(state: dict) -> tuple[dict, dict]:
    """``(state, scales)``: every convolution kernel (4-D floating tensor) of ``state`` in int8,
    symmetric per output channel, with its fp32 scales (shape ``(out, 1, 1, 1)``); every
    other tensor unchanged. :func:`dequantize_kernels` undoes it to within half a scale step
    per weight; docs/results.md measures what that costs in accuracy (nothing measurable on
    CamVid for SegNet and SegNet-Basic)."""
    quantized, scales = {}, {}
    for key, value in state.items():
        if _is_kernel(value):
            scale = value.detach().float().abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12) / 127
            quantized[key] = (value.detach().float() / scale).round().clamp(-127, 127).to(torch.int8)
            scales[key] = scale
        else:
            quantized[key] = value
    return quantized, scales


def dequantize_kernels(state: dict, scales: dict, where: str | os.PathLike = "the checkpoint") -> dict:
    """``state`` with each int8 kernel named in ``scales`` multiplied back into fp32.

    A scale without its int8 kernel, a scale of the wrong shape, or an int8 tensor without
    a scale is refused with ``where`` and the tensor named: such a file was edited.
    """
    problems = []
    for key, scale in scales.items():
        kernel = state.get(key)
        if kernel is None or kernel.dtype != torch.int8:
            problems.append(f"{key} has a scale but no int8 weights")
        elif not isinstance(scale, torch.Tensor) or tuple(scale.shape) != (kernel.shape[0], 1, 1, 1):
            problems.append(f"{key}'s scale is not one value per output channel ({kernel.shape[0]})")
    problems += [f"{key} is int8 without a scale" for key, value in state.items()
                 if isinstance(value, torch.Tensor) and value.dtype == torch.int8 and key not in scales]
    if problems:
        raise ValueError(f"{where}: its int8 weights cannot be read: {'; '.join(problems[:3])}. The file was edited "
                         "or damaged; write it again with 'segnet slim --weights int8'")
    return {key: value.float() * scales[key].float() if key in scales else value for key, value in state.items()}
