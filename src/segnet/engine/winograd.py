"""Winograd F(4x4, 3x3) convolutions with bf16 matrix multiplies: the ``winograd`` engine.

On a CPU with AVX-512 bf16 but no AMX, oneDNN's bf16 convolutions already run at the cores'
dot-product peak, so only fewer multiplications go faster. Winograd's F(4x4, 3x3) computes a
4x4 output tile from a 6x6 input tile with 36 products per channel pair instead of 144: the
input tiles and the weights are transformed (``B_T d B``, ``G g G_T``), multiplied position
by position (one batched bf16 matrix multiply over channels), and transformed back
(``A_T m A``). The transforms are memory passes that torch runs one by one, so they pay only
where the multiplications dominate: feature maps of at most ``MAX_PIXELS`` pixels with at
least ``MIN_CHANNELS`` channels in and out (SegNet's layers at 90x120 and below, 18 of its 26
3x3 convolutions at 360x480). Measured in docs/performance.md; the rounding of the
transformed tiles and products in bf16 makes each layer's error about 7 times a direct bf16
convolution's, and the transformed weights take four times the room of the weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Toom-Cook transforms for F(4x4, 3x3) with the points 0, 1, -1, 1/2, -2 and infinity: in bf16
# their error was 2.0e-2 of the output against 3.1e-2 for the usual 0, 1, -1, 2, -2
# (benchmarks/winograd_bf16.py). Every entry of B_T and A_T (and of their Kronecker
# products) is exact in bf16.
B_T = torch.tensor([[1, -3 / 2, -2, 3 / 2, 1, 0],
                    [0, -1, 1 / 2, 5 / 2, 1, 0],
                    [0, 1, -5 / 2, 1 / 2, 1, 0],
                    [0, -2, -1, 2, 1, 0],
                    [0, 1 / 2, -1, -1 / 2, 1, 0],
                    [0, 1, -3 / 2, -2, 3 / 2, 1]], dtype=torch.float64)
G = torch.tensor([[1, 0, 0],
                  [1 / 3, 1 / 3, 1 / 3],
                  [-1 / 3, 1 / 3, -1 / 3],
                  [-16 / 15, -8 / 15, -4 / 15],
                  [1 / 15, -2 / 15, 4 / 15],
                  [0, 0, 1]], dtype=torch.float64)
A_T = torch.tensor([[1, 1, 1, 1, 1, 0],
                    [0, 1, -1, 1 / 2, -2, 0],
                    [0, 1, 1, 1 / 4, 4, 0],
                    [0, 1, -1, 1 / 8, -8, 1]], dtype=torch.float64)
# where the Winograd convolution beat oneDNN's bf16 one on a 2-core Zen 4 EPYC (one image,
# channels_last): 256->256 at 90x120 17.5 against 30.3 ms, 128->128 at 90x120 5.3 against 7.0;
# 128->128 at 180x240 26.2 against 27.7 (too close to pay for the error) and 64 channels at
# any size no faster
MAX_PIXELS = 90 * 120
MIN_CHANNELS = 128


def winograd_fits(layer: nn.Module) -> bool:
    """Whether ``layer`` is a convolution ``WinogradConv2d`` replaces: 3x3, stride 1, padding
    1, undilated, ungrouped, at least ``MIN_CHANNELS`` channels in and out (dilated, strided,
    grouped and narrow convolutions stay with oneDNN)."""
    return (type(layer) is nn.Conv2d and layer.kernel_size == (3, 3) and layer.stride == (1, 1)
            and layer.padding == (1, 1) and layer.dilation == (1, 1) and layer.groups == 1
            and layer.padding_mode == "zeros" and min(layer.in_channels, layer.out_channels) >= MIN_CHANNELS)


def transform_weights(weight: torch.Tensor, g: torch.Tensor = G) -> torch.Tensor:
    """``g w g^T`` for every (out, in) pair of a 3x3 ``weight``, laid out (tile position, in,
    out) for the batched multiply of ``winograd_conv3x3``; in fp32 for fp32 weights (the
    engine rounds it to bf16, so fp32's 1e-7 is lost there) and in float64 for float64 ones."""
    dtype = torch.promote_types(weight.dtype, torch.float32)
    g = g.to(weight.device, dtype)
    # (a, 3) x (out, in, 3, 3) x (3, a) as two large products, not a million tiny ones
    tiles = torch.tensordot(torch.tensordot(g, weight.to(dtype), dims=([1], [2])), g, dims=([3], [1]))
    return tiles.permute(0, 3, 2, 1).reshape(g.shape[0] ** 2, weight.shape[1], weight.shape[0]).contiguous()


def winograd_conv3x3(x: torch.Tensor, weight_tiles: torch.Tensor, input_transform: torch.Tensor,
                     output_transform: torch.Tensor) -> torch.Tensor:
    """The 3x3 convolution (stride 1, padding 1, no bias) of ``x`` (n, in, h, w) by Winograd
    F(m x m, 3x3): ``weight_tiles`` from ``transform_weights``, ``input_transform`` the
    Kronecker square of B_T ((m+2)^2 square), ``output_transform`` that of A_T (m^2 by
    (m+2)^2), all in ``x``'s dtype. Returns (n, out, h, w) in channels_last memory, cropped
    to h x w but not copied dense."""
    n, c, h, w = x.shape
    m = round(output_transform.shape[0] ** 0.5)
    a = m + 2
    rows, cols = -(-h // m), -(-w // m)
    # zero padding: 1 pixel of the convolution's own, plus enough to fill the last tiles
    padded = F.pad(x, (1, m * cols + 1 - w, 1, m * rows + 1 - h)).permute(0, 2, 3, 1).contiguous()
    s = padded.stride()
    # every a x a input tile (overlapping by 2), as (tile position) x (image, tiles, channel)
    tiles = padded.as_strided((a, a, n, rows, cols, c), (s[1], s[2], s[0], m * s[1], m * s[2], s[3]))
    transformed = (input_transform @ tiles.reshape(a * a, -1)).view(a * a, n * rows * cols, c)
    products = torch.bmm(transformed, weight_tiles)  # (tile position, tiles, out channels)
    cout = products.shape[2]
    y = (output_transform @ products.view(a * a, -1)).view(m, m, n, rows, cols, cout)
    y = y.permute(2, 3, 0, 4, 1, 5).reshape(n, m * rows, m * cols, cout)[:, :h, :w]
    return y.permute(0, 3, 1, 2)


class WinogradConv2d(nn.Module):
    """A 3x3 convolution (stride 1, padding 1) for inference: Winograd F(4x4, 3x3) on feature
    maps of at most ``MAX_PIXELS`` pixels, the original convolution on larger ones. Runs in
    the dtype it is cast to (bf16 in the ``winograd`` engine; float64 gives the direct
    convolution's result to rounding, which is how the transforms are tested)."""

    def __init__(self, conv: nn.Conv2d, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.conv = conv
        # the transformed weights (four times the convolution's) go straight to the dtype they
        # run in: built in fp32 for a whole network first, they more than doubled the peak
        # memory of a SegNet prediction (1.5 GB against 0.9 for eager)
        dtype = dtype or conv.weight.dtype
        weight = conv.weight.detach()
        tiles = torch.empty(36, conv.in_channels, conv.out_channels, dtype=dtype, device=weight.device)
        for start in range(0, conv.out_channels, 64):  # 64 outputs at a time: small transients
            tiles[:, :, start:start + 64] = transform_weights(weight[start:start + 64])
        self.register_buffer("weight_tiles", tiles)
        self.register_buffer("input_transform", torch.kron(B_T, B_T).to(weight.device, dtype))
        self.register_buffer("output_transform", torch.kron(A_T, A_T).to(weight.device, dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        if h * w > MAX_PIXELS or x.numel() == 0:  # empty inputs: whatever the convolution does
            return self.conv(x)
        # as many images at once as fit in MAX_PIXELS: larger multiplies run in fewer calls,
        # and each call's tiles stay within the size measured to pay
        per_call = max(1, MAX_PIXELS // (h * w))
        parts = [winograd_conv3x3(part, self.weight_tiles, self.input_transform, self.output_transform)
                 for part in x.split(per_call)]
        y = parts[0] if len(parts) == 1 else torch.cat(parts)
        if self.conv.bias is not None:  # also makes a cropped output one dense block
            return y + self.conv.bias.view(1, -1, 1, 1)
        return y.contiguous(memory_format=torch.channels_last)
