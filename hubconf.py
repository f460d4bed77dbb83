"""torch.hub entry points: ``torch.hub.load("OWNER/segnet", "segnet", pretrained="camvid_segnet_basic")``
(or ``source="local"`` with a checkout). Each returns a ``segnet.LoadedModel``: the network
(``.model``, an ``nn.Module``) with its classes, palette and normalisation, and
``.segment(image)``.
"""

import sys
from pathlib import Path

dependencies = ["torch", "torchvision", "numpy", "PIL", "safetensors"]

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))  # a checkout, as torch.hub fetches one

from segnet import PRETRAINED, from_pretrained, load_model  # noqa: E402


def segnet(pretrained: str | None = None, architecture: str = "segnet", num_classes: int = 11,
           device: str = "cpu"):
    """A shipped model by name (``pretrained``: one of segnet.PRETRAINED, a model folder or
    an ``hf-hub:OWNER/NAME`` id), or an untrained ``architecture`` for ``num_classes`` classes."""
    if pretrained:
        return from_pretrained(pretrained, device=device)
    return load_model(model=architecture, num_classes=num_classes, device=device)


def camvid_segnet_basic(device: str = "cpu"):
    """SegNet-Basic trained on CamVid's 367 training images (model card: docs/models/camvid_segnet_basic.md)."""
    return from_pretrained("camvid_segnet_basic", device=device)


def camvid_segnet(device: str = "cpu"):
    """SegNet (VGG16 encoder) trained on CamVid's 367 training images (model card: docs/models/camvid_segnet.md)."""
    return from_pretrained("camvid_segnet", device=device)


assert set(PRETRAINED) == {"camvid_segnet_basic", "camvid_segnet"}, "a shipped model needs its entry point here"
