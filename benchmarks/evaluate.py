"""Cost of the metrics in an evaluation pass (issue: evaluation, "under 5%").

    python benchmarks/evaluate.py --root ../shared/data/CamVid [--model segnet_basic] [--images 233]

Times the same images three ways on this machine's CPU: forward + argmax only; plus the
confusion matrix and per-image scores (what `evaluate` does besides BF); and the whole
`evaluate` call with exact BF in background processes. Untrained weights: the cost of a
metric does not depend on how good the predictions are, except BF's matcher (which the
trained-model figures in docs/performance.md cover).
"""

from __future__ import annotations

import argparse
import time

import torch

from segnet.data import build_dataset
from segnet.engine import evaluate
from segnet.engine.evaluate import predict_labels
from segnet.metrics import ConfusionMatrix, confusion_matrix, scores_from_confusion
from segnet.models import create_model, model_info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="../shared/data/CamVid")
    parser.add_argument("--model", default="segnet_basic")
    parser.add_argument("--images", type=int, default=233)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()

    dataset = build_dataset("camvid", args.root, "test")
    dataset.pairs = dataset.pairs[: args.images]
    samples = [dataset.load(i) for i in range(len(dataset))]
    model = create_model(args.model, dataset.meta.num_classes).eval()
    normalization = model_info(args.model).normalization
    meta = dataset.meta

    def run(with_metrics: bool) -> float:
        confusion = ConfusionMatrix(meta.num_classes, meta.ignore_index)
        start = time.perf_counter()
        with torch.inference_mode():
            for first in range(0, len(samples), args.batch_size):
                batch = samples[first : first + args.batch_size]
                images, labels = torch.stack([s[0] for s in batch]), torch.stack([s[1] for s in batch])
                preds = predict_labels(model, images, normalization)
                if with_metrics:
                    confusion.update(preds, labels)
                    for pred, label in zip(preds, labels):
                        scores_from_confusion(confusion_matrix(pred, label, meta.num_classes, meta.ignore_index))
        return time.perf_counter() - start

    run(False)  # warm-up
    forward = min(run(False) for _ in range(2))
    metrics = min(run(True) for _ in range(2))
    start = time.perf_counter()
    result = evaluate(model, dataset, normalization, batch_size=args.batch_size, bf_mode="exact", progress=False)
    full = time.perf_counter() - start
    print(f"{args.model}, CamVid test, {len(samples)} images 360x480, batch {args.batch_size}, "
          f"{torch.get_num_threads()} torch threads")
    print(f"forward + argmax:                       {forward:7.2f} s")
    print(f"+ confusion matrix and per-image scores: {metrics:7.2f} s  ({(metrics / forward - 1) * 100:+.1f}%)")
    print(f"evaluate() with exact BF (background):   {full:7.2f} s  ({(full / forward - 1) * 100:+.1f}%; "
          f"BF {result.metrics['mean_bf_score'] * 100:.2f})")


if __name__ == "__main__":
    main()
