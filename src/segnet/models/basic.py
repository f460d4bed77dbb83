"""SegNet-Basic and the decoder variants of the paper's Table 1.

All share one small encoder: a local response normalisation of the input, then four
stages of 7x7 convolution (64 channels), BN, ReLU and max pooling with indices.
They differ only in how the decoder upsamples and what it adds back:

- ``SegNetBasic`` decoders upsample (pooling indices, or fixed bilinear), optionally add
  the encoder map of that level, then convolve 7x7 and batch-normalise, with no ReLU.
- ``FCNBasic`` decoders upsample with learned 8x8 deconvolutions and add (FCN-style)
  the encoder maps, reduced to K channels by 1x1 convolutions or at full width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .init import he_init
from .pooling import PoolRecord, check_input_size, max_pool_with_indices, max_unpool

LEVELS = 4
WIDTH = 64
KERNEL = 7
# Bayesian SegNet-Basic: dropout after pool3 and pool4, and after the BN of decoders 4 and 3.
BAYESIAN_LEVELS = (2, 3)


class BasicEncoder(nn.Module):
    """LRN, then four (conv 7x7 -> BN -> ReLU -> pool with indices) stages."""

    def __init__(self, in_channels: int, dropout: float = 0.0, dropout_levels: tuple[int, ...] = ()) -> None:
        super().__init__()
        # The original release normalises the input with this LRN layer (the paper says
        # "local contrast normalisation"); it expects raw 0..255 pixel values.
        self.normalize = nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=1.0)
        self.stages = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(in_channels if level == 0 else WIDTH, WIDTH, KERNEL, padding=KERNEL // 2),
                nn.BatchNorm2d(WIDTH),
                nn.ReLU(inplace=True),
            )
            for level in range(LEVELS)
        )
        self.dropout_levels = tuple(dropout_levels) if dropout > 0 else ()
        self.dropout = nn.Dropout(dropout) if self.dropout_levels else nn.Identity()
        self.index_free = False  # see pooling.use_index_free_unpooling

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor], list[PoolRecord]]:
        """Return the bottleneck, the pre-pool map of every level, and the pool records."""
        x = self.normalize(x)
        features, records = [], []
        for level, stage in enumerate(self.stages):
            x = stage(x)
            features.append(x)
            x, record = max_pool_with_indices(x, self.index_free)
            records.append(record)
            if level in self.dropout_levels:
                x = self.dropout(x)
        return x, features, records


class SegNetBasic(nn.Module):
    """SegNet-Basic and its decoder variants; returns logits ``(N, K, H, W)``.

    Args:
        upsampling: ``"indices"`` (max unpooling) or ``"bilinear"`` (fixed interpolation).
        encoder_addition: add the whole encoder map of each level to the upsampled map.
        single_channel_decoder: depthwise (one filter per channel) decoder convolutions.
        dropout, dropout_levels: Bayesian SegNet-Basic's Monte Carlo dropout.
    """

    pool_levels = LEVELS  # inputs need at least min_input_size(pool_levels) pixels a side

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        upsampling: str = "indices",
        encoder_addition: bool = False,
        single_channel_decoder: bool = False,
        dropout: float = 0.0,
        dropout_levels: tuple[int, ...] = (),
    ) -> None:
        super().__init__()
        if upsampling not in ("indices", "bilinear"):
            raise ValueError(f"upsampling must be 'indices' or 'bilinear', not {upsampling!r}")
        self.upsampling = upsampling
        self.encoder_addition = encoder_addition
        self.encoder = BasicEncoder(in_channels, dropout, dropout_levels)
        groups = WIDTH if single_channel_decoder else 1
        self.decoders = nn.ModuleList(
            nn.Sequential(nn.Conv2d(WIDTH, WIDTH, KERNEL, padding=KERNEL // 2, groups=groups), nn.BatchNorm2d(WIDTH))
            for _ in range(LEVELS)
        )
        self.classifier = nn.Conv2d(WIDTH, num_classes, 1)
        self.dropout_levels = tuple(dropout_levels) if dropout > 0 else ()
        self.dropout = nn.Dropout(dropout) if self.dropout_levels else nn.Identity()
        he_init(self)

    def _upsample(self, x: Tensor, record: PoolRecord) -> Tensor:
        if self.upsampling == "indices":
            return max_unpool(x, record)
        return F.interpolate(x, size=record.size, mode="bilinear", align_corners=False)

    def forward(self, x: Tensor) -> Tensor:
        check_input_size(x, LEVELS, type(self).__name__)
        x, features, records = self.encoder(x)
        for level in reversed(range(LEVELS)):
            x = self._upsample(x, records[level])
            if self.encoder_addition:
                x = x + features[level]
            x = self.decoders[level](x)
            if level in self.dropout_levels:
                x = self.dropout(x)
        return self.classifier(x)


def bilinear_kernel(channels: int, size: int) -> Tensor:
    """Per-channel bilinear-shaped deconvolution weights, scaled to keep constant maps
    constant at stride 2 (FCN's "bilinear init")."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    taps = 1 - (torch.arange(size, dtype=torch.float32) - center).abs() / factor
    kernel = torch.outer(taps, taps)
    kernel = kernel / kernel.sum() * 4  # stride 2: each output sums four kernel taps
    weight = torch.zeros(channels, channels, size, size)
    weight[range(channels), range(channels)] = kernel
    return weight


class FCNBasic(nn.Module):
    """FCN-Basic and its ablations (the paper's Table 1); returns logits ``(N, K, H, W)``.

    Args:
        addition: add the encoder map of each level to the upsampled map (FCN skip fusion).
        dim_reduction: reduce encoder maps to K channels with 1x1 convolutions before the
            decoder (else the decoder runs at the encoder's 64 channels and a final 1x1
            classifier produces the scores).
    """

    pool_levels = LEVELS  # inputs need at least min_input_size(pool_levels) pixels a side

    def __init__(
        self, num_classes: int, in_channels: int = 3, addition: bool = True, dim_reduction: bool = True
    ) -> None:
        super().__init__()
        self.addition = addition
        self.encoder = BasicEncoder(in_channels)
        width = num_classes if dim_reduction else WIDTH

        def reduce() -> nn.Module:
            return nn.Conv2d(WIDTH, num_classes, 1) if dim_reduction else nn.Identity()

        self.bottleneck = reduce()
        self.skips = nn.ModuleList(reduce() for _ in range(LEVELS)) if addition else None
        # kernel 8, stride 2, padding 3 doubles the size exactly; the result is then cropped
        # to the recorded pre-pool size (odd sizes lose their last row/column).
        self.upsamplers = nn.ModuleList(nn.ConvTranspose2d(width, width, 8, stride=2, padding=3) for _ in range(LEVELS))
        self.classifier = nn.Identity() if dim_reduction else nn.Conv2d(WIDTH, num_classes, 1)
        he_init(self)
        with torch.no_grad():
            for upsampler in self.upsamplers:
                upsampler.weight.copy_(bilinear_kernel(width, 8))

    def forward(self, x: Tensor) -> Tensor:
        check_input_size(x, LEVELS, type(self).__name__)
        x, features, records = self.encoder(x)
        x = self.bottleneck(x)
        for level in reversed(range(LEVELS)):
            height, width = records[level].size
            x = self.upsamplers[level](x)[..., :height, :width]
            if self.skips is not None:
                x = x + self.skips[level](features[level])
        return self.classifier(x)
