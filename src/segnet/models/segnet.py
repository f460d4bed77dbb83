"""SegNet with the VGG16 encoder, and Bayesian SegNet (Monte Carlo dropout).

Encoder: VGG16's 13 convolutions (3x3, BN, ReLU) in five stages, each ending in a
max pooling that records its indices. Decoder: the mirror image, each stage starting
with max unpooling, and a last 3x3 convolution to K class scores (no BN, no ReLU).
"""

from __future__ import annotations

import os

from torch import Tensor, nn

from .init import he_init, load_vgg16_encoder
from .pooling import check_input_size, max_pool_with_indices, max_unpool

VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
# Bayesian SegNet drops out the "central" units: after pool3-5 and after decoders 5-3.
BAYESIAN_LEVELS = (2, 3, 4)


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SegNet(nn.Module):
    """SegNet (VGG16). Returns logits ``(N, num_classes, H, W)`` at the input size.

    ``dropout`` > 0 with ``dropout_levels`` gives Bayesian SegNet: dropout after the
    pooling of those encoder stages and at the end of the matching decoder stages.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        dropout: float = 0.0,
        dropout_levels: tuple[int, ...] = (),
    ) -> None:
        super().__init__()
        self.encoders = nn.ModuleList()
        channels = in_channels
        for widths in VGG16_STAGES:
            layers = []
            for width in widths:
                layers.append(conv_bn_relu(channels, width))
                channels = width
            self.encoders.append(nn.Sequential(*layers))

        # Decoder stage i mirrors encoder stage i: its last convolution returns to the
        # width the encoder stage started from; decoder 1 ends in the classifier instead.
        self.decoders = nn.ModuleList()
        for level, widths in enumerate(VGG16_STAGES):
            target = VGG16_STAGES[level - 1][-1] if level > 0 else None
            layers = [conv_bn_relu(width, width) for width in widths[:-1]]
            if target is not None:
                layers.append(conv_bn_relu(widths[-1], target))
            self.decoders.append(nn.Sequential(*layers))
        self.classifier = nn.Conv2d(VGG16_STAGES[0][-1], num_classes, 3, padding=1)

        self.dropout_levels = tuple(dropout_levels) if dropout > 0 else ()
        self.dropout = nn.Dropout(dropout) if self.dropout_levels else nn.Identity()
        self.index_free = False  # see pooling.use_index_free_unpooling
        he_init(self)

    def encoder_convs(self) -> list[nn.Conv2d]:
        """The 13 encoder convolutions in VGG16 order."""
        return [m for m in self.encoders.modules() if isinstance(m, nn.Conv2d)]

    def load_encoder(self, source: str | os.PathLike) -> list[str]:
        """Fill the encoder from ImageNet VGG16 (``"imagenet"`` or a state-dict path)."""
        return load_vgg16_encoder(self.encoder_convs(), source)

    @property
    def pool_levels(self) -> int:
        """Pooling levels; inputs need at least ``min_input_size(pool_levels)`` pixels a side."""
        return len(self.encoders)

    def forward(self, x: Tensor) -> Tensor:
        check_input_size(x, len(self.encoders), type(self).__name__)
        records = []
        for level, encoder in enumerate(self.encoders):
            x, record = max_pool_with_indices(encoder(x), self.index_free)
            records.append(record)
            if level in self.dropout_levels:
                x = self.dropout(x)
        for level in reversed(range(len(self.decoders))):
            x = self.decoders[level](max_unpool(x, records[level]))
            if level in self.dropout_levels:
                x = self.dropout(x)
        return self.classifier(x)


def segnet(num_classes: int, in_channels: int = 3) -> SegNet:
    """SegNet (VGG16 encoder-decoder), 29.45 M parameters at 11 classes."""
    return SegNet(num_classes, in_channels)


def bayesian_segnet(num_classes: int, in_channels: int = 3, dropout: float = 0.5) -> SegNet:
    """Bayesian SegNet: SegNet with dropout on the six central encoder/decoder units."""
    return SegNet(num_classes, in_channels, dropout=dropout, dropout_levels=BAYESIAN_LEVELS)
