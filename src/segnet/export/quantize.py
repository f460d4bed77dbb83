"""int8 inference through onnxruntime's static quantization, calibrated on real images.

Weights int8 per output channel, activations uint8 per tensor, QDQ format, ranges from the
calibration images' activations (MinMax). The pooling/unpooling graph (MaxPool,
ScatterElements) stays exact: max pooling commutes with the monotone quantization.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..files import atomic_path


class _Images:
    """onnxruntime's calibration reader protocol over a float32 array (N, 3, H, W)."""

    def __init__(self, images: np.ndarray, input_name: str = "image") -> None:
        self.batches = iter([{input_name: images[i : i + 1]} for i in range(len(images))])

    def get_next(self):
        return next(self.batches, None)


def quantize_onnx(fp32_path: str | os.PathLike, int8_path: str | os.PathLike, calibration: np.ndarray) -> Path:
    """Write an int8 copy of an exported fp32 model, calibrated on ``calibration`` (normalised
    float32 images ``(N, 3, H, W)``, e.g. a few dozen training images)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if calibration.ndim != 4 or len(calibration) == 0:
        raise ValueError("calibration must be a non-empty (N, 3, H, W) float32 array of normalised images")
    int8_path = Path(int8_path)
    prepared = int8_path.with_name(f".{int8_path.name}.pre.onnx")
    try:
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        with atomic_path(int8_path) as tmp:
            quantize_static(str(prepared), str(tmp), _Images(calibration.astype(np.float32)),
                            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
    finally:
        prepared.unlink(missing_ok=True)
    return int8_path
