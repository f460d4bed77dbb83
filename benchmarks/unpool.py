"""Max unpooling: the scatter segnet used until 2026-12-05 against ``F.max_unpool2d``,
eager and compiled, on SegNet's five unpoolings at 360x480, batch 1.

    python benchmarks/unpool.py [--device cuda] [--repeats 5] [--compile]

Each row is the sum over the five unpoolings (64x360x480 down to 512x23x30) of the median
time of ``--repeats`` calls after one warm-up, for fp32 and bf16 in contiguous and
channels_last layout, with the pooling indices recorded from a ReLU map of that layout.
Every candidate's output (and, in fp32, its gradient) is checked bit for bit against the
scatter before it is timed. Prints Markdown with the device named.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from segnet.engine.measure import device_name, synchronize

SHAPES = [(64, 360, 480), (128, 180, 240), (256, 90, 120), (512, 45, 60), (512, 23, 30)]


def scatter_unpool(x, indices, size):
    n, c = x.shape[:2]
    out = x.new_zeros(n, c, size[0] * size[1])
    return out.scatter(2, indices.flatten(2), x.flatten(2)).view(n, c, *size)


def native_unpool(x, indices, size):
    return F.max_unpool2d(x, indices, 2, 2, output_size=size)


def median_ms(run, repeats: int, device) -> float:
    run()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def exact(candidate, x, indices, size) -> bool:
    """Same output and (fp32) same gradient as the scatter, bit for bit."""
    a, b = x.detach().clone().requires_grad_(), x.detach().clone().requires_grad_()
    reference, result = scatter_unpool(a, indices, size), candidate(b, indices, size)
    if not torch.equal(reference, result):
        return False
    if x.dtype != torch.float32:
        return True
    grad = torch.randn_like(reference)
    reference.backward(grad)
    result.backward(grad)
    return torch.equal(a.grad, b.grad)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also time both under torch.compile")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    candidates = {"scatter": scatter_unpool, "F.max_unpool2d": native_unpool}
    if args.compile:
        torch._dynamo.config.cache_size_limit = 64  # 5 shapes x 2 dtypes x 2 layouts x grad modes
        candidates.update({f"{name}, compiled": torch.compile(fn, dynamic=False) for name, fn in list(candidates.items())})
    print(f"Device: {device_name(device)}; torch {torch.__version__}; SegNet's five unpoolings at 360x480, batch 1, "
          f"median of {args.repeats} after one warm-up, summed (ms).\n")
    print("| dtype | layout | " + " | ".join(candidates) + " |")
    print("|---|---|" + "---|" * len(candidates))
    for dtype in (torch.float32, torch.bfloat16):
        for layout in (torch.contiguous_format, torch.channels_last):
            totals = dict.fromkeys(candidates, 0.0)
            for channels, height, width in SHAPES:
                before = torch.randn(1, channels, height, width, device=device).relu()
                before = before.to(dtype).contiguous(memory_format=layout)
                pooled, indices = F.max_pool2d(before, 2, 2, ceil_mode=True, return_indices=True)
                x = torch.randn_like(pooled)
                for name, candidate in candidates.items():
                    if not exact(candidate, x, indices, (height, width)):
                        raise SystemExit(f"{name} differs from the scatter ({dtype}, {layout}, {channels}x{height}x{width})")
                    with torch.inference_mode():
                        totals[name] += median_ms(lambda: candidate(x, indices, (height, width)), args.repeats, device)
            label = "channels_last" if layout == torch.channels_last else "contiguous"
            print(f"| {str(dtype).split('.')[-1]} | {label} | " + " | ".join(f"{v:.1f}" for v in totals.values()) + " |")


if __name__ == "__main__":
    main()
