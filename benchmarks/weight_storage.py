"""How small can a trained model's weights be stored, and what does it cost in accuracy?

    python benchmarks/weight_storage.py --checkpoint RUN/best.pt [--root runs/camvid.pack]

Three ways to store the state dict, sizes as torch.save writes them:
- fp32: as trained;
- bf16: convolution kernels in bf16, everything else fp32 (`segnet slim --weights bf16`).
  Under bf16 autocast the convolutions cast their kernels to bf16 anyway, so this loses
  nothing for bf16 inference; the script checks that the logits are bit-identical on a few
  images;
- int8: convolution kernels int8, symmetric per output channel with one fp32 scale each,
  everything else fp32 (`segnet slim --weights int8`).
Both are segnet.engine.kernel_storage.store_kernels, read back to fp32 by restore_kernels
as every loader does. Then CamVid test G and mIoU (whole frames, --amp, no BF) with the
weights as stored and after the int8 round trip.
"""

from __future__ import annotations

import argparse
import io

import torch

from segnet.data import build_dataset, normalize
from segnet.engine import evaluate, load_model
from segnet.engine.kernel_storage import restore_kernels, store_kernels
from segnet.engine.precision import autocast, resolve_amp


def size_mb(state: dict) -> float:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.tell() / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--root", default="../shared/data/CamVid")
    parser.add_argument("--split", default="test")
    parser.add_argument("--amp", default="auto", choices=("auto", "bf16", "off"))
    parser.add_argument("--check-images", type=int, default=2, help="images for the bf16 identity check")
    args = parser.parse_args()

    loaded = load_model(args.checkpoint)
    model, normalization = loaded.model, loaded.normalization
    model.eval()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    (bf16, _), (int8, scales) = store_kernels(state, "bf16"), store_kernels(state, "int8")
    print(f"{args.checkpoint}: state dict fp32 {size_mb(state):.1f} MB, bf16 convolutions {size_mb(bf16):.1f} MB, "
          f"int8 convolutions {size_mb({**int8, 'scales': scales}):.1f} MB")

    dataset = build_dataset("camvid", args.root, args.split)
    precision = resolve_amp(args.amp, torch.device("cpu"))
    images = torch.stack([dataset.load(i)[0] for i in range(args.check_images)])
    x = normalize(images, normalization["mean"], normalization["std"])
    with torch.no_grad(), autocast(precision, torch.device("cpu")):
        reference = model(x)
        model.load_state_dict(restore_kernels(bf16, None)[0])
        identical = torch.equal(reference, model(x))
    model.load_state_dict(state)
    print(f"bf16-stored convolutions, {args.check_images} images under {precision}: logits "
          f"{'bit-identical' if identical else 'DIFFERENT'}")

    for label, weights in (("as stored", state), ("int8 round trip", restore_kernels(int8, scales)[0])):
        model.load_state_dict(weights)
        metrics = evaluate(model, dataset, normalization, bf_mode=None, amp=args.amp, input_size=loaded.input_size,
                           progress=False).metrics
        print(f"{label}: {args.split} G {metrics['global_accuracy'] * 100:.2f}, C {metrics['mean_accuracy'] * 100:.2f}, "
              f"mIoU {metrics['mean_iou'] * 100:.2f} ({precision})")


if __name__ == "__main__":
    main()
