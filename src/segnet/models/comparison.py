"""The networks the SegNet paper compares against (Tables 3 and 6), on the same VGG16 encoder.

- ``FCN``: FCN-8s (Long et al., CVPR 2015). fc6/fc7 as convolutions (7x7 and 1x1, 4,096
  channels), class scores of pool3 and pool4 fused by addition on the way up; the upsampling
  is learnt (transposed convolutions initialised to bilinear) or fixed bilinear.
- ``DeepLabLargeFOV``: DeepLab v1 LargeFOV (Chen et al., ICLR 2015). pool4 and pool5 keep the
  resolution, conv5 is dilated by 2, fc6 is a 3x3 convolution with dilation 12 and 1,024
  channels; the scores come out at 1/8 of the input and are upsampled bilinearly.
- ``DeconvNet``: DeconvNet (Noh et al., ICCV 2015). fc6/fc7 as convolutions (the SegNet paper
  cut them to 1,024 channels), then a mirrored network of transposed convolutions that
  unpools with the encoder's max locations, as SegNet does.

The paper retrained all of them with BN after every convolution and dropout 0.5 at the end
of the deeper layers; both are options (``batch_norm``, ``dropout``), on by default as in
the paper. Where a model must be made to run at any input size, the choices are explained
in docs/architecture.md ("The comparison networks").
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .init import he_init, load_vgg16_encoder
from .pooling import check_input_size, max_pool_with_indices, max_unpool
from .segnet import VGG16_STAGES


def conv_block(in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1,
               batch_norm: bool = True, padding: int | None = None) -> nn.Sequential:
    """Convolution (+ BN) + ReLU; 'same' padding unless ``padding`` is given."""
    if padding is None:
        padding = dilation * (kernel_size // 2)
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def vgg16_stages(batch_norm: bool = True, dilations: tuple[int, ...] = (1, 1, 1, 1, 1)) -> nn.ModuleList:
    """VGG16's 13 convolutions in five stages (no pooling: each network pools its own way)."""
    stages, channels = nn.ModuleList(), 3
    for widths, dilation in zip(VGG16_STAGES, dilations):
        layers = []
        for width in widths:
            layers.append(conv_block(channels, width, dilation=dilation, batch_norm=batch_norm))
            channels = width
        stages.append(nn.Sequential(*layers))
    return stages


class _VGGEncoderMixin:
    """ImageNet VGG16 weights for the 13 encoder convolutions in ``self.stages``."""

    stages: nn.ModuleList

    def encoder_convs(self) -> list[nn.Conv2d]:
        return [m for m in self.stages.modules() if isinstance(m, nn.Conv2d)]

    def load_encoder(self, source: str | os.PathLike) -> list[str]:
        """Fill the encoder from ImageNet VGG16 (``"imagenet"`` or a state-dict path)."""
        return load_vgg16_encoder(self.encoder_convs(), source)


def bilinear_kernel(channels: int, kernel_size: int) -> Tensor:
    """Weights ``(C, C, k, k)`` that make a transposed convolution upsample each channel bilinearly."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    steps = torch.arange(kernel_size, dtype=torch.float32)
    filt = 1 - (steps - center).abs() / factor
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    weight[range(channels), range(channels)] = filt[:, None] * filt[None, :]
    return weight


class FCN(_VGGEncoderMixin, nn.Module):
    """FCN-8s on VGG16; returns logits ``(N, K, H, W)``.

    Args:
        learnt_upsampling: transposed convolutions (2x, 2x, 8x; initialised to bilinear and
            trained), or fixed bilinear interpolation (the paper's "FCN (fixed bilinear
            deconvolution)").
        batch_norm: BN after every convolution (the paper's retraining; not in the original).
        dropout: after fc6 and fc7 (as in FCN) and after the conv5 stage (the paper's deeper layers).
        fc_channels: fc6/fc7 width (4,096 in FCN).
    """

    pool_levels = 5
    min_size = 32  # its five poolings floor odd sizes (FCN's own), so 2 ** 5 pixels are needed

    def __init__(self, num_classes: int, in_channels: int = 3, learnt_upsampling: bool = True,
                 batch_norm: bool = True, dropout: float = 0.5, fc_channels: int = 4096) -> None:
        super().__init__()
        if in_channels != 3:
            raise ValueError("the VGG16 networks take RGB images (in_channels=3)")
        self.stages = vgg16_stages(batch_norm)
        self.fc = nn.Sequential(
            conv_block(512, fc_channels, 7, batch_norm=batch_norm), nn.Dropout(dropout),
            conv_block(fc_channels, fc_channels, 1, batch_norm=batch_norm), nn.Dropout(dropout),
        )
        self.deep_dropout = nn.Dropout(dropout)
        self.score_fr = nn.Conv2d(fc_channels, num_classes, 1)
        self.score_pool4 = nn.Conv2d(512, num_classes, 1)
        self.score_pool3 = nn.Conv2d(256, num_classes, 1)
        self.learnt_upsampling = learnt_upsampling
        if learnt_upsampling:
            self.up2 = nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, padding=1, bias=False)
            self.up4 = nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, padding=1, bias=False)
            self.up8 = nn.ConvTranspose2d(num_classes, num_classes, 16, stride=8, padding=4, bias=False)
        he_init(self)
        if learnt_upsampling:
            for layer in (self.up2, self.up4, self.up8):
                layer.weight.data.copy_(bilinear_kernel(num_classes, layer.kernel_size[0]))

    def _up(self, layer_name: str, x: Tensor, size: torch.Size) -> Tensor:
        if self.learnt_upsampling:
            return getattr(self, layer_name)(x, output_size=size)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def forward(self, x: Tensor) -> Tensor:
        check_input_size(x, self.pool_levels, type(self).__name__, self.min_size)
        size = x.shape[-2:]
        pooled = []
        for stage in self.stages:
            x = F.max_pool2d(stage(x), 2)
            pooled.append(x)
        pool3, pool4 = pooled[2], pooled[3]
        scores = self.score_fr(self.fc(self.deep_dropout(x)))
        scores = self._up("up2", scores, pool4.shape[-2:]) + self.score_pool4(pool4)
        scores = self._up("up4", scores, pool3.shape[-2:]) + self.score_pool3(pool3)
        return self._up("up8", scores, size)


class DeepLabLargeFOV(_VGGEncoderMixin, nn.Module):
    """DeepLab-LargeFOV (v1) on VGG16; returns logits ``(N, K, H, W)``.

    Pooling is 3x3 with padding 1 (stride 2 for pool1-3, 1 for pool4-5), so the scores come
    out at ceil(H/8) x ceil(W/8) (45x60 for 360x480) before the bilinear upsampling.
    """

    pool_levels = 3

    def __init__(self, num_classes: int, in_channels: int = 3, batch_norm: bool = True, dropout: float = 0.5,
                 fc_channels: int = 1024, fc6_dilation: int = 12) -> None:
        super().__init__()
        if in_channels != 3:
            raise ValueError("the VGG16 networks take RGB images (in_channels=3)")
        self.stages = vgg16_stages(batch_norm, dilations=(1, 1, 1, 1, 2))
        self.fc = nn.Sequential(
            conv_block(512, fc_channels, 3, dilation=fc6_dilation, batch_norm=batch_norm), nn.Dropout(dropout),
            conv_block(fc_channels, fc_channels, 1, batch_norm=batch_norm), nn.Dropout(dropout),
        )
        self.deep_dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(fc_channels, num_classes, 1)
        he_init(self)

    def forward(self, x: Tensor) -> Tensor:
        check_input_size(x, self.pool_levels, type(self).__name__)
        size = x.shape[-2:]
        for level, stage in enumerate(self.stages):
            x = F.max_pool2d(stage(x), 3, stride=2 if level < 3 else 1, padding=1)
        scores = self.classifier(self.fc(self.deep_dropout(x)))
        return F.interpolate(scores, size=size, mode="bilinear", align_corners=False)


def _deconv_block(in_channels: int, out_channels: int, kernel_size: int = 3, batch_norm: bool = True,
                  padding: int | None = None) -> nn.Sequential:
    padding = kernel_size // 2 if padding is None else padding
    layers: list[nn.Module] = [nn.ConvTranspose2d(in_channels, out_channels, kernel_size, padding=padding)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class DeconvNet(_VGGEncoderMixin, nn.Module):
    """DeconvNet on VGG16; returns logits ``(N, K, H, W)``.

    fc6 is a 7x7 convolution and its mirror a 7x7 transposed convolution, both with padding
    3 so that any input size works (the original has no padding and needs 224x224 crops);
    the decoder mirrors the encoder with 3x3 transposed convolutions, unpooling with the
    encoder's recorded max locations, and ends in a 1x1 classifier.
    """

    pool_levels = 5

    def __init__(self, num_classes: int, in_channels: int = 3, batch_norm: bool = True, dropout: float = 0.5,
                 fc_channels: int = 1024) -> None:
        super().__init__()
        if in_channels != 3:
            raise ValueError("the VGG16 networks take RGB images (in_channels=3)")
        self.stages = vgg16_stages(batch_norm)
        self.fc = nn.Sequential(
            conv_block(512, fc_channels, 7, batch_norm=batch_norm), nn.Dropout(dropout),
            conv_block(fc_channels, fc_channels, 1, batch_norm=batch_norm), nn.Dropout(dropout),
            _deconv_block(fc_channels, 512, 7, batch_norm=batch_norm),
        )
        self.deep_dropout = nn.Dropout(dropout)
        # decoder stage i mirrors encoder stage i: back to the width that stage started from
        self.decoders = nn.ModuleList()
        for level, widths in enumerate(VGG16_STAGES):
            target = VGG16_STAGES[level - 1][-1] if level > 0 else widths[0]
            layers = [_deconv_block(width, width, batch_norm=batch_norm) for width in widths[:-1]]
            layers.append(_deconv_block(widths[-1], target, batch_norm=batch_norm))
            self.decoders.append(nn.Sequential(*layers))
        self.classifier = nn.Conv2d(VGG16_STAGES[0][0], num_classes, 1)
        self.index_free = False  # see pooling.use_index_free_unpooling
        he_init(self)

    def forward(self, x: Tensor) -> Tensor:
        check_input_size(x, self.pool_levels, type(self).__name__)
        records = []
        for stage in self.stages:
            x, record = max_pool_with_indices(stage(x), self.index_free)
            records.append(record)
        x = self.fc(self.deep_dropout(x))
        for level in reversed(range(len(self.decoders))):
            x = self.decoders[level](max_unpool(x, records[level]))
        return self.classifier(x)


def fcn8s(num_classes: int, in_channels: int = 3, **options) -> FCN:
    """FCN-8s with learnt upsampling; 134.3 M parameters at 11 classes without BN."""
    return FCN(num_classes, in_channels, learnt_upsampling=True, **options)


def fcn_bilinear(num_classes: int, in_channels: int = 3, **options) -> FCN:
    """FCN-8s with fixed bilinear upsampling."""
    return FCN(num_classes, in_channels, learnt_upsampling=False, **options)


def deeplab_largefov(num_classes: int, in_channels: int = 3, **options) -> DeepLabLargeFOV:
    """DeepLab-LargeFOV (v1): dilated VGG16, fc6 3x3 dilation 12 with 1,024 channels, output at 1/8."""
    return DeepLabLargeFOV(num_classes, in_channels, **options)


def deconvnet(num_classes: int, in_channels: int = 3, **options) -> DeconvNet:
    """DeconvNet with the SegNet paper's 1,024-channel fc6/fc7."""
    return DeconvNet(num_classes, in_channels, **options)
