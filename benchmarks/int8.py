"""int8 inference through onnxruntime: speed against plain eager PyTorch, and accuracy cost.

    python benchmarks/int8.py --root ../shared/data/CamVid [--checkpoint RUN/best.pt] [--model segnet]

Speed: --model (default segnet) at 360x480, batch 1, untrained weights (speed does not
depend on them): plain eager fp32, onnxruntime fp32 (BN folded), onnxruntime int8 (static
quantization, calibrated on --calibration CamVid training images). Median of --repeats.
Accuracy: with --checkpoint, the trained model's CamVid test mIoU through onnxruntime fp32
and int8 (the int8 model calibrated on training images, never on test images).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from segnet.data import build_dataset, normalize
from segnet.engine import evaluate, load_model
from segnet.export import export_onnx
from segnet.export.quantize import quantize_onnx
from segnet.models import create_model, model_info


class OnnxModel(nn.Module):
    """An onnxruntime session behind the nn.Module call that `evaluate` expects."""

    def __init__(self, path: str) -> None:
        super().__init__()
        import onnxruntime

        self.session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {"image": x.contiguous().numpy()})[0])


def calibration_images(root: str, count: int, normalization: dict, size=None) -> np.ndarray:
    train = build_dataset("camvid", root, "train")
    picks = np.linspace(0, len(train) - 1, count).round().astype(int)
    images = torch.stack([train.load(int(i))[0] for i in picks])
    x = normalize(images, normalization["mean"], normalization["std"])
    if size is not None:
        x = torch.nn.functional.interpolate(x, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
    return x.numpy()


def median_ms(run, repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="../shared/data/CamVid")
    parser.add_argument("--model", default="segnet")
    parser.add_argument("--checkpoint")
    parser.add_argument("--calibration", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="segnet-int8-"))

    normalization = model_info(args.model).normalization
    model = create_model(args.model, 11).eval()
    export_onnx(model, folder / "fp32.onnx", sizes=[(360, 480)])
    quantize_onnx(folder / "fp32.onnx", folder / "int8.onnx", calibration_images(args.root, args.calibration, normalization))
    x = torch.rand(1, 3, 360, 480)
    fp32, int8 = OnnxModel(str(folder / "fp32.onnx")), OnnxModel(str(folder / "int8.onnx"))
    with torch.no_grad():
        eager = median_ms(lambda: model(x), args.repeats)
    ort32, ort8 = median_ms(lambda: fp32(x), args.repeats), median_ms(lambda: int8(x), args.repeats)
    print(f"{args.model} 360x480 batch 1, {torch.get_num_threads()} threads: eager fp32 {eager:.0f} ms, "
          f"onnxruntime fp32 {ort32:.0f} ms ({eager / ort32:.2f}x), onnxruntime int8 {ort8:.0f} ms ({eager / ort8:.2f}x)")

    if args.checkpoint:
        loaded = load_model(args.checkpoint)
        trained, normalization, size = loaded.model, loaded.normalization, loaded.input_size
        export_onnx(trained, folder / "trained.onnx", sizes=[tuple(size or (360, 480))])
        quantize_onnx(folder / "trained.onnx", folder / "trained_int8.onnx",
                      calibration_images(args.root, args.calibration, normalization, size))
        test = build_dataset("camvid", args.root, "test")
        scores = {}
        for label, path in (("fp32", "trained.onnx"), ("int8", "trained_int8.onnx")):
            result = evaluate(OnnxModel(str(folder / path)), test, normalization, bf_mode=None, input_size=size,
                              progress=False)
            scores[label] = result.metrics
            print(f"{args.checkpoint} via onnxruntime {label}: G {result.metrics['global_accuracy'] * 100:.2f}, "
                  f"mIoU {result.metrics['mean_iou'] * 100:.2f}")
        loss = (scores["fp32"]["mean_iou"] - scores["int8"]["mean_iou"]) * 100
        print(f"int8 mIoU loss: {loss:+.2f} points")


if __name__ == "__main__":
    main()
