"""ONNX export through ``torch.onnx.export(..., dynamo=True)``, checked in onnxruntime.

The exported graph takes a normalised float32 image batch ``image (N, 3, H, W)`` with
dynamic N, H and W and returns ``logits (N, K, H, W)``. Batch norm is folded first. The
mean/std the model expects, the class names and palette are stored as ONNX metadata.

Why the parity check is statistical: max unpooling sends each value to the argmax of its
pooling window, so where two values in a window differ by less than float32 rounding, a
different (equally valid) order of additions flips the argmax and moves a decoder value by
one pixel. PyTorch's own float32 and float64 results differ that way (0.01-0.02% of the
labels at 360x480 with random weights), and in a deep decoder one flip spreads over a
neighbourhood. The check therefore requires at most 2% of the
logits to differ by more than 1e-3 * (1 + |reference|) and at least 99.5% of the predicted
labels to agree; a real export bug (a wrong layer, a shifted crop) fails both by far.
The check images are random pixels put through the model's own normalisation when it is
given: a trained model fed values far outside what it was trained on (e.g. [0, 1] for one
that expects 0-255) is ill-conditioned, and even its float32 and float64 PyTorch outputs
then disagree on a fifth of the logits.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.transforms import normalize
from ..files import atomic_path
from ..models import smallest_input, use_index_free_unpooling
from .fold import fold_batchnorm

VALUE_TOLERANCE = 1e-3
MAX_OFF_FRACTION = 0.02
MIN_LABEL_AGREEMENT = 0.995


class ParityError(RuntimeError):
    """The exported model's outputs differ from PyTorch's beyond the stated tolerance."""


def prepare_for_inference(model: nn.Module, index_free: bool = False) -> nn.Module:
    """An eval-mode copy with batch norm folded (and index-free unpooling if asked)."""
    folded, _ = fold_batchnorm(model)
    if index_free:
        use_index_free_unpooling(folded)
    return folded


def compare_outputs(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """The parity numbers between two logit arrays ``(N, K, H, W)``."""
    difference = np.abs(reference - candidate)
    off = difference > VALUE_TOLERANCE * (1 + np.abs(reference))
    return {"max_abs_difference": float(difference.max()), "values_off_fraction": float(off.mean()),
            "label_agreement": float((reference.argmax(1) == candidate.argmax(1)).mean())}


def parity_ok(numbers: dict) -> bool:
    return numbers["values_off_fraction"] <= MAX_OFF_FRACTION and numbers["label_agreement"] >= MIN_LABEL_AGREEMENT


def _export(prepared: torch.nn.Module, sample: torch.Tensor, path: Path, floor: int) -> None:
    """Export with dynamic batch, and height and width from ``floor`` (the model's smallest input) up."""
    dims = {0: torch.export.Dim("batch", min=1, max=4096), 2: torch.export.Dim("height", min=floor, max=8192),
            3: torch.export.Dim("width", min=floor, max=8192)}
    torch.onnx.export(prepared, (sample,), path, dynamo=True, input_names=["image"], output_names=["logits"],
                      dynamic_shapes={"x": dims}, external_data=False)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    sizes: list[tuple[int, int]] = ((360, 480), (45, 61)),
    index_free: bool = False,
    metadata: dict | None = None,
    seed: int = 0,
    normalization: dict | None = None,
) -> dict:
    """Export ``model`` to ``path`` and check it in onnxruntime at every size in ``sizes``.

    The check inputs are random images, normalised with ``normalization`` (``{"mean", "std"}``
    of [0, 1] pixels, as in a checkpoint) when given, else uniform in [0, 1].

    Returns ``{"path", "checks": [{"shape", parity numbers...}]}``; raises ``ParityError``
    (and removes the file) when a check fails. Written atomically.
    """
    import onnx
    import onnxruntime

    path = Path(path)
    floor = smallest_input(model)
    too_small = [f"{h}x{w}" for h, w in sizes if min(h, w) < floor]
    if too_small:  # refused before anything is written
        raise ValueError(f"check size {', '.join(too_small)} is below the smallest input this model accepts "
                         f"({floor}x{floor}: {getattr(model, 'pool_levels', 5)} poolings need two pixels each at the "
                         "deepest); give --check-sizes of at least that")
    path.parent.mkdir(parents=True, exist_ok=True)
    prepared = prepare_for_inference(model, index_free).cpu()
    generator = torch.Generator().manual_seed(seed)

    def random_images(*shape: int) -> torch.Tensor:
        if normalization is None:
            return torch.rand(*shape, generator=generator)
        pixels = torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)
        return normalize(pixels, normalization["mean"], normalization["std"])

    sample = random_images(1, 3, *sizes[0])
    with atomic_path(path) as tmp:
        _export(prepared, sample, tmp, floor)
        proto = onnx.load(str(tmp))
        for key, value in {**(metadata or {}), "index_free": index_free, "batchnorm_folded": True,
                                  "min_input_size": [floor, floor], "max_input_size": [8192, 8192]}.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
        onnx.save(proto, str(tmp))
        session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        checks = []
        for batch, (height, width) in zip((1, 2, 1), sizes):
            x = random_images(batch, 3, height, width)
            with torch.inference_mode():
                reference = model.eval()(x).numpy()
            try:
                candidate = session.run(None, {"image": x.numpy()})[0]
            except Exception as error:  # noqa: BLE001 -- onnxruntime's errors share no useful type
                raise ParityError(f"onnxruntime cannot run the exported {type(model).__name__} at input "
                                  f"{tuple(x.shape)} ({str(error).strip().splitlines()[0][:300]}); export it with "
                                  "--check-sizes at the size it will run at") from None
            numbers = {"shape": [batch, 3, height, width], **compare_outputs(reference, candidate)}
            checks.append(numbers)
            if candidate.shape != reference.shape or not parity_ok(numbers):
                raise ParityError(
                    f"onnxruntime differs from PyTorch at input {tuple(x.shape)}: "
                    f"{numbers['values_off_fraction']:.3%} of logits off by more than {VALUE_TOLERANCE} "
                    f"(allowed {MAX_OFF_FRACTION:.1%}), labels agree on {numbers['label_agreement']:.3%} "
                    f"(required {MIN_LABEL_AGREEMENT:.1%}); the file was not written")
    return {"path": str(path), "checks": checks}
