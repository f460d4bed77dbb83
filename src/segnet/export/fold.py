"""Batch-norm folding: merge each BN into the convolution before it, for inference.

In eval mode BN is an affine map per channel, ``y = (x - mean) / sqrt(var + eps) * gamma + beta``,
so it can be absorbed into the preceding convolution's weights and bias (as the original
SegNet release did for its inference model): one layer fewer to run, same outputs up to
floating-point rounding.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new convolution equal to ``bn(conv(x))`` with ``bn`` in eval mode."""
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps) if bn.affine else \
        1 / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias.detach() if bn.affine else torch.zeros_like(bn.running_mean)
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                       conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode).to(conv.weight.device)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    with torch.no_grad():
        folded.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        folded.bias.copy_((bias - bn.running_mean) * scale + shift)
    return folded


def fold_transposed_conv_bn(conv: nn.ConvTranspose2d, bn: nn.BatchNorm2d) -> nn.ConvTranspose2d:
    """A new transposed convolution equal to ``bn(conv(x))`` with ``bn`` in eval mode
    (its weight is ``(in, out, kh, kw)``: the output channel is the second axis)."""
    if conv.groups != 1:
        raise ValueError("folding BN into a grouped transposed convolution is not supported")
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps) if bn.affine else \
        1 / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias.detach() if bn.affine else torch.zeros_like(bn.running_mean)
    folded = nn.ConvTranspose2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                                conv.output_padding, conv.groups, bias=True, dilation=conv.dilation
                                ).to(conv.weight.device)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    with torch.no_grad():
        folded.weight.copy_(conv.weight * scale.view(1, -1, 1, 1))
        folded.bias.copy_((bias - bn.running_mean) * scale + shift)
    return folded


def fold_batchnorm(model: nn.Module) -> tuple[nn.Module, int]:
    """An eval-mode copy of ``model`` with every (transposed) convolution -> BatchNorm2d pair
    (consecutive in an ``nn.Sequential``) folded; returns ``(copy, number of BN layers folded)``."""
    model = copy.deepcopy(model).eval()
    folded = 0
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = module._modules[first], module._modules[second]
            if not (isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats):
                continue
            if isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)):
                fold = fold_conv_bn if isinstance(conv, nn.Conv2d) else fold_transposed_conv_bn
                module._modules[first] = fold(conv, bn)
                module._modules[second] = nn.Identity()
                folded += 1
    return model, folded
