"""The model registry: one builder function and one entry per model name."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from .basic import BAYESIAN_LEVELS as BASIC_BAYESIAN_LEVELS
from .basic import FCNBasic, SegNetBasic
from .comparison import deconvnet, deeplab_largefov, fcn8s, fcn_bilinear
from .segnet import bayesian_segnet, segnet

log = logging.getLogger("segnet")

# Input conventions, applied to images scaled to [0, 1] (see segnet.data).
IMAGENET_NORMALIZATION = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
# SegNet-Basic's LRN layer was designed for raw 0..255 pixels, as the original fed it.
PIXEL_NORMALIZATION = {"mean": (0.0, 0.0, 0.0), "std": (1 / 255, 1 / 255, 1 / 255)}


@dataclass(frozen=True)
class ModelInfo:
    """A registered model: how to build it and the facts the rest of the package needs."""

    name: str
    builder: Callable[..., nn.Module]
    description: str
    paper_params_m: float | None  # the paper's parameter count (millions) at 11 classes
    normalization: dict = field(default_factory=lambda: dict(IMAGENET_NORMALIZATION))
    vgg_encoder: bool = False  # accepts ImageNet VGG16 encoder weights
    bayesian: bool = False  # has Monte Carlo dropout


MODELS: dict[str, ModelInfo] = {}


def register(info: ModelInfo) -> None:
    if info.name in MODELS:
        raise ValueError(f"model {info.name!r} is already registered")
    MODELS[info.name] = info


def list_models() -> list[str]:
    """Names of all registered models, in registration order."""
    return list(MODELS)


def model_info(name: str) -> ModelInfo:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    return MODELS[name]


def create_model(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    encoder_weights: str | os.PathLike | None = None,
    **options,
) -> nn.Module:
    """Build a registered model that maps ``(N, in_channels, H, W)`` images to logits.

    Args:
        name: one of :func:`list_models`.
        num_classes: K, the number of output class scores per pixel.
        in_channels: image channels (3 for RGB).
        encoder_weights: ``"imagenet"`` or a path to a torchvision-layout VGG16 state dict;
            fills the 13 encoder convolutions of VGG-based models (others: He init only).
        options: model-specific keyword arguments (e.g. ``dropout`` for Bayesian models).
    """
    info = model_info(name)
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    try:
        model = info.builder(num_classes, in_channels, **options)
    except TypeError as error:
        raise ValueError(f"bad options for model {name!r}: {error}") from error
    if encoder_weights is not None:
        if not info.vgg_encoder:
            vgg_models = [m.name for m in MODELS.values() if m.vgg_encoder]
            raise ValueError(
                f"model {name!r} has no VGG16 encoder and trains from He init; "
                f"encoder_weights applies to: {', '.join(vgg_models)}"
            )
        loaded = model.load_encoder(encoder_weights)
        log.info("loaded %d VGG16 tensors (13 encoder convolutions) from %s", len(loaded), encoder_weights)
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _segnet_basic(num_classes: int, in_channels: int = 3) -> SegNetBasic:
    return SegNetBasic(num_classes, in_channels)


def _encoder_addition(num_classes: int, in_channels: int = 3) -> SegNetBasic:
    return SegNetBasic(num_classes, in_channels, encoder_addition=True)


def _single_channel_decoder(num_classes: int, in_channels: int = 3) -> SegNetBasic:
    return SegNetBasic(num_classes, in_channels, single_channel_decoder=True)


def _bilinear_interpolation(num_classes: int, in_channels: int = 3) -> SegNetBasic:
    # The paper's 0.625 M parameters equal the encoder plus single-channel decoder
    # convolutions; with full 64-channel decoders it would be 1.425 M.
    return SegNetBasic(num_classes, in_channels, upsampling="bilinear", single_channel_decoder=True)


def _bayesian_segnet_basic(num_classes: int, in_channels: int = 3, dropout: float = 0.5) -> SegNetBasic:
    return SegNetBasic(num_classes, in_channels, dropout=dropout, dropout_levels=BASIC_BAYESIAN_LEVELS)


def _fcn(addition: bool, dim_reduction: bool) -> Callable[..., FCNBasic]:
    def build(num_classes: int, in_channels: int = 3) -> FCNBasic:
        return FCNBasic(num_classes, in_channels, addition=addition, dim_reduction=dim_reduction)

    return build


_BASIC = dict(normalization=dict(PIXEL_NORMALIZATION))
for _info in (
    ModelInfo("segnet", segnet, "SegNet: VGG16 encoder, index-unpooling decoder", 29.45, vgg_encoder=True),
    ModelInfo(
        "bayesian_segnet", bayesian_segnet, "Bayesian SegNet: SegNet + MC dropout (p=0.5) on the central units",
        29.45, vgg_encoder=True, bayesian=True,
    ),
    ModelInfo("segnet_basic", _segnet_basic, "SegNet-Basic: 4 levels, 7x7, 64 channels, no decoder ReLU", 1.425, **_BASIC),
    ModelInfo(
        "bayesian_segnet_basic", _bayesian_segnet_basic, "Bayesian SegNet-Basic: SegNet-Basic + MC dropout",
        1.425, bayesian=True, **_BASIC,
    ),
    ModelInfo(
        "segnet_basic_encoder_addition", _encoder_addition,
        "SegNet-Basic, encoder maps added to the unpooled maps", 1.425, **_BASIC,
    ),
    ModelInfo(
        "segnet_basic_single_channel_decoder", _single_channel_decoder,
        "SegNet-Basic with single-channel (depthwise) decoder filters", 0.625, **_BASIC,
    ),
    ModelInfo(
        "bilinear_interpolation", _bilinear_interpolation,
        "fixed bilinear upsampling, no indices, single-channel decoder", 0.625, **_BASIC,
    ),
    ModelInfo("fcn_basic", _fcn(True, True), "FCN-Basic: learned 8x8 deconv, 1x1-reduced encoder maps added", 0.65, **_BASIC),
    ModelInfo("fcn_basic_no_addition", _fcn(False, True), "FCN-Basic without adding encoder maps", 0.65, **_BASIC),
    ModelInfo(
        "fcn_basic_no_dim_reduction", _fcn(True, False), "FCN-Basic adding 64-channel encoder maps (no 1x1 reduction)",
        1.625, **_BASIC,
    ),
    ModelInfo(
        "fcn_basic_no_addition_no_dim_reduction", _fcn(False, False),
        "FCN-Basic at 64 channels without encoder addition", 1.625, **_BASIC,
    ),
    # The paper's comparison networks (Tables 3 and 6); counts from Table 6's model sizes (MB / 4).
    ModelInfo("fcn8s", fcn8s, "FCN-8s: VGG16, fc6/fc7 as 4,096-channel convs, learnt 2x-2x-8x deconv, pool3/4 skips",
              134.75, vgg_encoder=True),
    ModelInfo("fcn_bilinear", fcn_bilinear, "FCN-8s with fixed bilinear upsampling (no learnt deconvolution)",
              None, vgg_encoder=True),
    ModelInfo("deeplab_largefov", deeplab_largefov,
              "DeepLab-LargeFOV (v1): dilated VGG16, fc6 3x3 dilation 12, 1,024 channels, scores at 1/8",
              20.75, vgg_encoder=True),
    ModelInfo("deconvnet", deconvnet, "DeconvNet: VGG16, 1,024-channel fc6/fc7, mirrored deconvolutions with unpooling",
              219.25, vgg_encoder=True),
):
    register(_info)
