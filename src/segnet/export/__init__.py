"""Deployment: batch-norm folding and ONNX export with an onnxruntime parity check."""

from .fold import fold_batchnorm, fold_conv_bn
from .onnx import ParityError, compare_outputs, export_onnx, prepare_for_inference
from .quantize import quantize_onnx

__all__ = ["ParityError", "compare_outputs", "export_onnx", "fold_batchnorm", "fold_conv_bn", "prepare_for_inference",
           "quantize_onnx"]
