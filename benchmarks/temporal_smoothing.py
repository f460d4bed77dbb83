"""Does temporal smoothing of class probabilities help on CamVid's test sequences?

    python benchmarks/temporal_smoothing.py --root ../shared/data/CamVid [--checkpoint CKPT] \
        [--alphas 0 0.3 0.5 0.7] [--json FILE]

The test frames are run in order within each sequence (0001TP, Seq05VD), and the class
probabilities are smoothed with segnet's TemporalSmoothing (p = alpha * previous + (1 - alpha)
* current) for every alpha at once, from one forward pass per frame. CamVid's labelled
frames are 1 s apart (every 30th frame of 30 Hz video), so this measures smoothing over
1-second gaps, with the camera moving in between; what it would do between adjacent video
frames (33 ms apart) cannot be judged from these labels.
"""

from __future__ import annotations

import argparse
import json

import torch
from tqdm import tqdm

from segnet.data import build_dataset
from segnet.engine import load_model
from segnet.engine.evaluate import predict_logits
from segnet.engine.video import TemporalSmoothing

from camvid_sequences import sequence_of  # the sibling script (benchmarks/ is on sys.path when run)
from segnet.metrics import ConfusionMatrix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="../shared/data/CamVid")
    parser.add_argument("--checkpoint", help="default: the shipped camvid_segnet_basic")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.3, 0.5, 0.7])
    parser.add_argument("--json", help="also write the scores here")
    args = parser.parse_args()

    loaded = load_model(args.checkpoint or "camvid_segnet_basic")
    model, meta, normalization, input_size, source = (loaded.model, loaded.meta, loaded.normalization,
                                                      loaded.input_size, loaded.source)
    dataset = build_dataset("camvid", args.root, "test")
    order = sorted(range(len(dataset)), key=dataset.name_of)
    smoothers = {alpha: TemporalSmoothing(alpha) for alpha in args.alphas}
    confusions = {alpha: ConfusionMatrix(meta.num_classes, meta.ignore_index) for alpha in args.alphas}
    sequence = None
    model.eval()
    for index in tqdm(order, desc="frames", unit="frame"):
        name = dataset.name_of(index)
        if sequence_of(name) != sequence:  # a new sequence: nothing carries over
            sequence = sequence_of(name)
            for smoother in smoothers.values():
                smoother.reset()
        image, label = dataset.load(index)
        with torch.inference_mode():
            logits = predict_logits(model, image[None], normalization, input_size, "off")
        for alpha, smoother in smoothers.items():
            confusions[alpha].update(smoother(logits), label[None])
    rows = {}
    for alpha, confusion in confusions.items():
        scores = confusion.compute()
        rows[str(alpha)] = {k: scores[k] for k in ("global_accuracy", "mean_accuracy", "mean_iou")}
        print(f"alpha {alpha:.2f}: G {scores['global_accuracy'] * 100:.2f}  C {scores['mean_accuracy'] * 100:.2f}  "
              f"mIoU {scores['mean_iou'] * 100:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"checkpoint": str(source), "frames": len(order), "scores": rows}, f, indent=2)


if __name__ == "__main__":
    main()
