"""How does a model score on each CamVid sequence, and how much of each did it train on?

    python benchmarks/camvid_sequences.py --root ../shared/data/CamVid [--checkpoint CKPT] [--json FILE]

CamVid's frames come from four drives (0001TP at dusk, 0006R0, 0016E5, Seq05VD), named by
the prefix of each file. SegNet's release splits them unevenly: validation is all 0016E5,
the sequence with the most training frames, while Seq05VD, most of the test set, has no
training frames at all. This script counts each sequence's frames per split and scores the
model on every sequence of the validation and test splits (one confusion matrix per
sequence with `segnet evaluate`'s scoring: void ignored, whole frames, bf16 where the CPU
has it), so that a gap between
validation and test can be traced to where it comes from.
"""

from __future__ import annotations

import argparse
import copy
import json
from collections import Counter

from segnet.data import build_dataset
from segnet.engine import load_model


def sequence_of(name: str) -> str:
    """``0001TP_006690.png`` -> ``0001TP``."""
    return name.split("_")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="../shared/data/CamVid")
    parser.add_argument("--checkpoint", help="default: the shipped camvid_segnet_basic")
    parser.add_argument("--json", help="also write the scores here")
    args = parser.parse_args()

    loaded = load_model(args.checkpoint or "camvid_segnet_basic")
    datasets = {split: build_dataset("camvid", args.root, split) for split in ("train", "val", "test")}
    frames = {split: Counter(sequence_of(data.name_of(i)) for i in range(len(data))) for split, data in datasets.items()}
    for split, counts in frames.items():
        print(f"{split}: " + ", ".join(f"{seq} {n}" for seq, n in sorted(counts.items())))
    scores = {}
    for split in ("val", "test"):
        for sequence in sorted(frames[split]):
            frames_of_sequence = copy.copy(datasets[split])
            frames_of_sequence.pairs = [pair for i, pair in enumerate(datasets[split].pairs)
                                        if sequence_of(datasets[split].name_of(i)) == sequence]
            result = loaded.evaluate(frames_of_sequence, bf_mode=None, progress=False).metrics
            scores[f"{split}/{sequence}"] = {
                "frames": frames[split][sequence], "train_frames": frames["train"].get(sequence, 0),
                **{k: result[k] for k in ("global_accuracy", "mean_accuracy", "mean_iou")},
                "class_recall": {c["name"]: c["accuracy"] for c in result["classes"]},  # None: absent from the sequence
            }
            print(f"{split} {sequence} ({frames[split][sequence]} frames; {frames['train'].get(sequence, 0)} in train): "
                  f"G {result['global_accuracy'] * 100:.1f}  C {result['mean_accuracy'] * 100:.1f}  "
                  f"mIoU {result['mean_iou'] * 100:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"checkpoint": str(loaded.source), "scores": scores}, f, indent=2)


if __name__ == "__main__":
    main()
