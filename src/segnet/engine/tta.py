"""Test-time augmentation: average a network's class probabilities over several views of
each image (mirrored left-right, resized), then label the average.

It costs one forward pass per view, and buys accuracy that the weights alone do not have;
docs/results.md measures both on CamVid's test set. Off by default everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .precision import autocast


@dataclass(frozen=True)
class TestTimeAugmentation:
    """The views: each of ``scales`` (1.0: the image as it is), and with ``flip`` each of
    them mirrored left-right too."""

    __test__ = False  # not a pytest class, whatever its name says

    scales: tuple[float, ...] = (1.0,)
    flip: bool = False

    @property
    def views(self) -> int:
        return len(self.scales) * (2 if self.flip else 1)

    def describe(self) -> str:
        """As ``parse_tta`` reads it back, e.g. ``flip,0.75,1,1.25``."""
        scales = [] if self.scales == (1.0,) else [f"{scale:g}" for scale in self.scales]
        return ",".join((["flip"] if self.flip else []) + scales) or "off"


TTA_HELP = ("test-time augmentation: average class probabilities over views of each image. 'flip' (the image "
            "and its mirror), scales such as 0.75,1,1.25 (the image resized by each), or both: "
            "flip,0.75,1,1.25 (6 views). Costs one forward pass per view; default: off")
MAX_TTA_SCALE = 4.0


def parse_tta(text: str | None) -> TestTimeAugmentation | None:
    """``--tta`` as given: None or ``off`` -> None (no augmentation); ``flip``, a comma list
    of scales, or ``flip`` and scales -> the views. ValueError names what is wrong."""
    if text is None or text.strip().lower() in ("", "off", "none"):
        return None
    flip, scales = False, []
    for part in (item.strip().lower() for item in text.split(",")):
        if part == "flip":
            flip = True
            continue
        try:
            scale = float(part)
        except ValueError:
            raise ValueError(f"--tta {text}: {part!r} is neither 'flip' nor a scale; "
                             "give e.g. flip, 0.75,1,1.25 or flip,0.75,1,1.25") from None
        if not 0.25 <= scale <= MAX_TTA_SCALE:  # NaN fails this too
            raise ValueError(f"--tta {text}: scale {part} is outside 0.25 to {MAX_TTA_SCALE:g}")
        scales.append(scale)
    if len(set(scales)) != len(scales):
        raise ValueError(f"--tta {text}: a scale is given twice")
    return TestTimeAugmentation(tuple(scales) or (1.0,), flip)


def augmented_logits(network: nn.Module, x: torch.Tensor, tta: TestTimeAugmentation,
                     precision: str = "off") -> torch.Tensor:
    """fp32 log class probabilities ``(N, K, H, W)`` of the normalised images ``x``, averaged
    over ``tta``'s views (each view's output is mapped back to ``x``'s size and orientation)."""
    size = tuple(x.shape[-2:])
    total = None
    for scale in tta.scales:
        view = x if scale == 1.0 else F.interpolate(
            x, size=(max(1, round(size[0] * scale)), max(1, round(size[1] * scale))), mode="bilinear",
            align_corners=False)
        for mirrored in (False, True) if tta.flip else (False,):
            with autocast(precision, x.device):
                logits = network(view.flip(-1) if mirrored else view).float()
            if mirrored:
                logits = logits.flip(-1)
            if scale != 1.0:
                logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            probabilities = logits.softmax(1)
            total = probabilities if total is None else total + probabilities
    return (total / tta.views).log()
