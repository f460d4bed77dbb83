"""Winograd convolutions with bf16 matrix multiplies against oneDNN's bf16 convolution.

    python benchmarks/winograd_bf16.py [--repeats 5]   # with segnet installed (or PYTHONPATH=src)

On a CPU with AVX-512 bf16 but no AMX, the bf16 eager engine runs SegNet's convolutions at
the cores' dot-product peak (docs/performance.md), so only fewer multiplications can go
faster. Winograd's F(m x m, 3 x 3) computes an m x m output tile from an (m+2) x (m+2)
input tile with (m+2)^2 products per channel pair instead of 9 m^2: 2.25 times fewer
for F(2x2), 4 times fewer for F(4x4). For each of SegNet's 3x3 layer shapes at 360x480
(batch 1, channels_last) this prints the time of oneDNN's bf16 convolution and of
``segnet.engine.winograd.winograd_conv3x3`` with three sets of transforms (F(2x2); F(4x4)
with Lavin and Gray's points 0, 1, -1, 2, -2; F(4x4) with the points the ``winograd`` engine
uses, 0, 1, -1, 1/2, -2), each with its matrix multiply alone, and each one's error relative
to a float64 convolution (norm of the difference over norm of the reference). The
measurements behind the engine's transforms and its ``MAX_PIXELS``/``MIN_CHANNELS`` rule.
"""

from __future__ import annotations

import argparse
import platform

import torch
import torch.nn.functional as F

from segnet.engine import winograd
from segnet.engine.measure import median_seconds

# (B_T, G, A_T) per variant; every variant has infinity as its last point
TRANSFORMS = {
    "F(2x2), 0, 1, -1": (
        torch.tensor([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=torch.float64),
        torch.tensor([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=torch.float64),
        torch.tensor([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=torch.float64)),
    "F(4x4), 0, 1, -1, 2, -2": (
        torch.tensor([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                      [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], dtype=torch.float64),
        torch.tensor([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                      [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], dtype=torch.float64),
        torch.tensor([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
                     dtype=torch.float64)),
    "F(4x4), 0, 1, -1, 1/2, -2 (the engine's)": (winograd.B_T, winograd.G, winograd.A_T),
}
# SegNet's 3x3 layers at 360x480, one of each shape
LAYERS = [(64, 64, 360, 480), (128, 128, 180, 240), (256, 256, 90, 120), (512, 512, 45, 60), (512, 512, 23, 30)]


def median_ms(fn, repeats: int) -> float:
    return median_seconds(fn, repeats, warmup=1, device=torch.device("cpu")) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print("| layer | oneDNN bf16 ms (error) | " + " | ".join(f"{name} ms (error) | its multiply ms" for name in TRANSFORMS)
          + " |")
    print("|---" * (2 + 2 * len(TRANSFORMS)) + "|")
    with torch.inference_mode():
        for cin, cout, h, w in LAYERS:
            x = torch.randn(1, cin, h, w)
            weight = torch.randn(cout, cin, 3, 3) / (9 * cin) ** 0.5
            reference = F.conv2d(x.double(), weight.double(), padding=1)

            def error(y):
                return ((y.double() - reference).norm() / reference.norm()).item()
            xb = x.bfloat16().contiguous(memory_format=torch.channels_last)
            wb = weight.bfloat16().contiguous(memory_format=torch.channels_last)
            cells = [f"{median_ms(lambda: F.conv2d(xb, wb, padding=1), args.repeats):.1f} "
                     f"({error(F.conv2d(xb, wb, padding=1)):.1e})"]
            for b_t, g, a_t in TRANSFORMS.values():
                v = winograd.transform_weights(weight, g).bfloat16()
                bt2, at2 = torch.kron(b_t, b_t).bfloat16(), torch.kron(a_t, a_t).bfloat16()

                def conv():
                    return winograd.winograd_conv3x3(xb, v, bt2, at2)
                cells.append(f"{median_ms(conv, args.repeats):.1f} ({error(conv()):.1e})")
                m = a_t.shape[0]
                u = torch.randn(v.shape[0], -(-h // m) * -(-w // m), cin).bfloat16()  # the transformed tiles' shape
                cells.append(f"{median_ms(lambda: torch.bmm(u, v), args.repeats):.1f}")
            print(f"| {cin}->{cout}, {h}x{w} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
