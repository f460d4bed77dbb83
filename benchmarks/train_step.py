"""Training throughput: images/s of the training step, and how much of it waits on data.

    python benchmarks/train_step.py --root ../shared/data/CamVid [--models segnet_basic segnet] [--device cuda]

For each model: the real training step (resident CamVid batches at 360x480, class-weighted
loss normalised by valid pixels, SGD), timed over --steps steps after warm-up, once with
the loader in the loop and once on a batch already on the device. The gap is what the step
spends waiting on data and Python; images/s also gives the time per CamVid epoch (367
images). channels_last and `--amp auto` (bf16 on CUDA and on CPUs with native bf16), as
`segnet train` uses them; `--crop HxW` times training on random windows as `--crop` does.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from segnet.data import ResidentLoader
from segnet.engine.precision import autocast, cpu_description, resolve_amp
from segnet.engine.recipes import TrainConfig
from segnet.engine.train import load_split, train_step
from segnet.models import create_model, model_info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="../shared/data/CamVid")
    parser.add_argument("--models", nargs="+", default=["segnet_basic", "segnet"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--images", type=int, default=32, help="training images kept resident (default: 32)")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--amp", choices=["auto", "bf16", "off"], default="auto",
                        help="as segnet train: auto is bf16 on CUDA and on CPUs with native bf16")
    parser.add_argument("--crop", help="HxW random training windows, as segnet train --crop (default: whole frames)")
    parser.add_argument("--out", help="write the results as JSON")
    args = parser.parse_args()

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    config = TrainConfig(dataset="camvid", root=args.root)
    images, labels, meta = load_split(config, "train", progress=False)
    images, labels = images[: args.images].to(device), labels[: args.images].to(device)
    weights = torch.ones(meta.num_classes, device=device)
    precision = resolve_amp(args.amp, device)
    crop = [int(v) for v in args.crop.split("x")] if args.crop else None
    size = f"{crop[0]}x{crop[1]} crops" if crop else "360x480"
    results = []
    for name in args.models:
        normalization = model_info(name).normalization
        model = create_model(name, meta.num_classes).to(device).train()
        model = model.to(memory_format=torch.channels_last)  # as segnet train (channels_last: true)
        step_model = torch.compile(model) if args.compile else model
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        loader = ResidentLoader(images, labels, args.batch_size, normalization["mean"], normalization["std"],
                                meta.ignore_index, drop_last=True, crop=crop)

        def step(x, y):  # segnet train's own step, then the optimiser
            train_step(step_model, x, y, weights, meta.ignore_index, "valid_pixels",
                       autocast=lambda: autocast(precision, device))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        def timed(with_loader: bool) -> float:
            fixed = next(iter(loader))
            batches = iter(())
            for i in range(args.steps + 2):  # two warm-up steps
                if i == 2:
                    if cuda:
                        torch.cuda.synchronize()
                    start = time.perf_counter()
                if with_loader:
                    batch = next(batches, None)
                    if batch is None:
                        batches = iter(loader)
                        batch = next(batches)
                else:
                    batch = fixed
                step(*batch)
            if cuda:
                torch.cuda.synchronize()
            return (time.perf_counter() - start) / args.steps

        with_data, compute_only = timed(True), timed(False)
        if cuda:
            device_name = torch.cuda.get_device_name(device)
        else:
            cpu = cpu_description()
            device_name = f"{cpu['model']} ({' '.join(cpu['flags'])}), {torch.get_num_threads()} threads"
        row = {"model": name, "device": device_name, "precision": precision, "input": size,
               "batch_size": args.batch_size, "step_s": with_data, "step_s_fixed_batch": compute_only,
               "images_per_s": args.batch_size / with_data, "camvid_epoch_s": 367 / (args.batch_size / with_data),
               "data_wait_fraction": max(with_data - compute_only, 0) / with_data,
               "peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None}
        results.append(row)
        print(f"{name}: {row['images_per_s']:.2f} img/s (batch {args.batch_size}, {size}, {precision}), "
              f"{row['camvid_epoch_s']:.0f} s per CamVid epoch; waiting on data {row['data_wait_fraction']:.1%} "
              f"of the step" + (f"; peak {row['peak_memory_mb']:.0f} MB" if cuda else ""))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
