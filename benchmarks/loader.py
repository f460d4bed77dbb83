"""Loader throughput: file-based (PNG decoding in DataLoader workers) vs device-resident.

    python benchmarks/loader.py --root ../shared/data/CamVid [--device cuda] [--batches 40]

Reports images/s for producing normalised float batches on the device, the work a
training step waits on. Numbers go to docs/performance.md with the device named.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from torch.utils.data import DataLoader

from segnet.data import ResidentLoader, build_dataset, normalize

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_batches(batches, count: int, device: str) -> float:
    it = iter(batches)
    next(it)  # warm-up (worker start, first decode)
    sync(device)
    start, seen = time.perf_counter(), 0
    for _ in range(count):
        try:
            images = next(it)[0]
        except StopIteration:
            it = iter(batches)
            images = next(it)[0]
        seen += images.shape[0]
    sync(device)
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="camvid")
    parser.add_argument("--root", default="../shared/data/CamVid")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args()

    dataset = build_dataset(args.dataset, args.root, "train")
    print(f"{args.dataset} train: {len(dataset)} images; device {args.device}; batch {args.batch_size}; "
          f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    for workers in args.workers:
        loader = DataLoader(dataset, args.batch_size, shuffle=True, num_workers=workers, drop_last=True,
                            persistent_workers=workers > 0, pin_memory=args.device.startswith("cuda"))
        def fresh(loader=loader):
            return ((normalize(x.to(args.device, non_blocking=True), MEAN, STD), y.to(args.device)) for x, y in loader)

        rate = time_batches(_Reiterable(fresh), args.batches, args.device)
        print(f"file-based DataLoader, {workers} workers: {rate:8.1f} images/s")

    start = time.perf_counter()
    images = torch.stack([dataset.load(i)[0] for i in range(len(dataset))]).to(args.device)
    labels = torch.stack([dataset.load(i)[1] for i in range(len(dataset))]).to(torch.uint8).to(args.device)
    print(f"resident: loaded {len(dataset)} images to {args.device} in {time.perf_counter() - start:.1f} s "
          f"({images.numel() / 1e6:.0f} MB uint8)")
    for name, kwargs in (("plain", {}), ("flip + scale", {"hflip": True, "scale": (0.75, 1.5)})):
        loader = ResidentLoader(images, labels, args.batch_size, MEAN, STD, 11, drop_last=True, **kwargs)
        print(f"resident loader, {name}: {time_batches(loader, args.batches, args.device):8.1f} images/s")


class _Reiterable:
    def __init__(self, make):
        self.make = make

    def __iter__(self):
        return iter(self.make())


if __name__ == "__main__":
    main()
