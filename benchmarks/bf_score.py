"""BF score speed, the exact-vs-fast gap, and the effect of the void treatment, on the CamVid test labels.

    python benchmarks/bf_score.py --root ../shared/data/CamVid [--shift 2 3] [--prediction-dir DIR]
        [--modes exact fast] [--void mask drop raw] [--json FILE]

Without --prediction-dir, the "prediction" is the ground truth shifted by --shift pixels
(rows, cols): a stand-in with realistic boundaries until a trained model's predictions
are available. With it, DIR holds one label PNG per test image (same file names).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from PIL import Image

from segnet.data import build_dataset
from segnet.metrics import BoundaryF1


class _inline:
    """No pool: score in this process."""

    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="../shared/data/CamVid")
    parser.add_argument("--split", default="test")
    parser.add_argument("--shift", type=int, nargs=2, default=[2, 3])
    parser.add_argument("--prediction-dir")
    parser.add_argument("--modes", nargs="+", default=["exact", "fast"], choices=["exact", "fast"])
    parser.add_argument("--void", nargs="+", default=["mask"], choices=["mask", "drop", "raw"],
                        help="ground-truth void treatments to score (default: mask)")
    parser.add_argument("--json", help="also write the scores to this JSON file")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="processes scoring images (default: all cores)")
    args = parser.parse_args()

    dataset = build_dataset("camvid", args.root, args.split)
    targets = [dataset.load(i)[1].numpy() for i in range(len(dataset))]
    if args.prediction_dir:
        preds = [np.array(Image.open(f"{args.prediction_dir}/{dataset.name_of(i)}.png")) for i in range(len(dataset))]
        source = args.prediction_dir
    else:
        # void stays void in the target; the shifted map predicts a class everywhere
        preds = [np.roll(t, args.shift, axis=(0, 1)) for t in targets]
        preds = [np.where(p == dataset.meta.ignore_index, 0, p) for p in preds]
        source = f"ground truth shifted by {tuple(args.shift)} px"
    print(f"CamVid {args.split}: {len(targets)} images {targets[0].shape}, prediction = {source}; "
          f"{args.workers} worker process(es)")
    results = {}
    for mode in args.modes:
        for void in args.void:
            start = time.perf_counter()
            with ProcessPoolExecutor(args.workers) if args.workers > 1 else _inline() as pool:
                metric = BoundaryF1(dataset.meta.num_classes, dataset.meta.ignore_index, mode, executor=pool, void=void)
                for p, t in zip(preds, targets):
                    metric.update(p, t)
                scores = metric.compute()
            elapsed = time.perf_counter() - start
            results[f"{mode}/{void}"] = {"mean_bf_score": scores["mean_bf_score"], "bf_images": scores["bf_images"],
                                         "class_bf_score": scores["class_bf_score"], "seconds": round(elapsed, 2)}
            print(f"BF {mode:5s} void {void:4s}: {scores['mean_bf_score'] * 100:6.2f} over {scores['bf_images']} images "
                  f"in {elapsed:5.2f} s ({elapsed / len(targets) * 1000:.1f} ms/image)")
    if "exact/mask" in results and "fast/mask" in results:
        gap = results["fast/mask"]["mean_bf_score"] - results["exact/mask"]["mean_bf_score"]
        print(f"fast - exact = {gap * 100:+.2f} points")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"prediction": source, "split": args.split, "images": len(targets), "scores": results}, f,
                      indent=2)


if __name__ == "__main__":
    main()
