"""Would a Winograd convolution with a bf16 matrix multiply beat oneDNN's bf16 convolution?

    python benchmarks/winograd_bf16.py [--repeats 5]   # with segnet installed (or PYTHONPATH=src)

On a CPU with AVX-512 bf16 but no AMX, the bf16 default runs SegNet's convolutions at
the cores' dot-product peak (docs/performance.md), so only fewer multiplications can go
faster. Winograd's F(m x m, 3 x 3) computes an m x m output tile from an (m+2) x (m+2)
input tile with (m+2)^2 products per channel pair instead of 9 m^2: 2.25 times fewer
for F(2x2), 4 times fewer for F(4x4). This script builds that convolution from torch
operations (input transform as one matrix product over gathered tiles, a batched bf16
matrix multiply per tile position, output transform) for SegNet's 3x3 layer shapes at
360x480, batch 1, channels_last, and prints, per layer, the time of oneDNN's bf16
convolution, of the Winograd one and of its matrix multiply alone, and each one's error
relative to a float64 convolution (norm of the difference over norm of the reference).
A measurement, not an engine: segnet does not use it (see docs/performance.md).
"""

from __future__ import annotations

import argparse
import platform

import torch
import torch.nn.functional as F

from segnet.engine.measure import median_seconds

# Lavin and Gray's transforms: F(2x2, 3x3) with points 0, 1, -1, inf and F(4x4, 3x3) with
# points 0, 1, -1, 2, -2, inf
TRANSFORMS = {
    2: (torch.tensor([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]),
        torch.tensor([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]]),
        torch.tensor([[1, 1, 1, 0], [0, 1, -1, -1]])),
    4: (torch.tensor([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                      [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]),
        torch.tensor([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                      [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]),
        torch.tensor([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]])),
}
# SegNet's 3x3 layers at 360x480, one of each shape
LAYERS = [(64, 64, 360, 480), (128, 128, 180, 240), (256, 256, 90, 120), (512, 512, 45, 60), (512, 512, 23, 30)]


def transformed_weights(weight: torch.Tensor, m: int) -> torch.Tensor:
    """G w G^T for every (out, in) pair, as (tile positions, in, out) bf16 matrices."""
    g = TRANSFORMS[m][1].double()
    cout, cin = weight.shape[:2]
    u = g @ weight.double() @ g.T
    return u.reshape(cout, cin, -1).permute(2, 1, 0).contiguous().bfloat16()


def winograd_conv(x: torch.Tensor, v: torch.Tensor, m: int) -> torch.Tensor:
    """3x3 convolution, padding 1, of a (1, C, H, W) bf16 image with weights from
    ``transformed_weights``; the transforms in bf16 too (fp32 ones were slower)."""
    bt, _, at = (t.bfloat16() for t in TRANSFORMS[m])
    a = m + 2
    _, c, h, w = x.shape
    th, tw = -(-h // m), -(-w // m)
    padded = F.pad(x, (1, m * tw + 1 - w, 1, m * th + 1 - h)).permute(0, 2, 3, 1).contiguous()[0]
    s = padded.stride()
    tiles = padded.as_strided((a, a, th, tw, c), (s[0], s[1], m * s[0], m * s[1], s[2]))
    d = tiles.reshape(a * a, th * tw * c)  # the gather: (tile position, tiles x channels)
    u = (torch.kron(bt, bt) @ d).view(a * a, th * tw, c)
    product = torch.bmm(u, v)  # (tile position, tiles, out channels)
    cout = v.shape[2]
    y = (torch.kron(at, at) @ product.view(a * a, -1)).view(m, m, th, tw, cout)
    y = y.permute(2, 0, 3, 1, 4).reshape(m * th, m * tw, cout)[:h, :w]
    return y.unsqueeze(0).permute(0, 3, 1, 2)


def median_ms(fn, repeats: int) -> float:
    return median_seconds(fn, repeats, warmup=1, device=torch.device("cpu")) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print("| layer | oneDNN bf16 ms (error) | F(2x2) ms (error) | its GEMM ms | F(4x4) ms (error) | its GEMM ms |")
    print("|---|---|---|---|---|---|")
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
            for m in (2, 4):
                v = transformed_weights(weight, m)
                cells.append(f"{median_ms(lambda: winograd_conv(xb, v, m), args.repeats):.1f} "
                             f"({error(winograd_conv(xb, v, m)):.1e})")
                u = torch.randn(v.shape[0], -(-h // m) * -(-w // m), cin).bfloat16()  # the transformed tiles' shape
                cells.append(f"{median_ms(lambda: torch.bmm(u, v), args.repeats):.1f}")
            print(f"| {cin}->{cout}, {h}x{w} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
