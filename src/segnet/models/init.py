"""Weight initialisation: He (MSRA) everywhere, ImageNet VGG16 for the encoder."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
from torch import nn

# torchvision's VGG16 checkpoint; its `features.*` keys are what the encoder takes.
VGG16_IMAGENET_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
# Positions of the 13 convolutions in torchvision's `vgg16().features`.
VGG16_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


def he_init(module: nn.Module) -> None:
    """He (MSRA) normal init for every (transposed) convolution, zero biases, unit BN."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def load_vgg16_state_dict(source: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a torchvision-layout VGG16 state dict from ``"imagenet"`` or a file path.

    ``"imagenet"`` uses torch's download cache (``$TORCH_HOME/hub/checkpoints``); when it
    is not cached and there is no internet, the error says how to pass a file instead.
    """
    if str(source) == "imagenet":
        try:
            return torch.hub.load_state_dict_from_url(VGG16_IMAGENET_URL, progress=True, map_location="cpu")
        except Exception as error:  # URLError, socket errors, HTTP errors: all mean "not reachable"
            raise FileNotFoundError(
                "could not get the ImageNet VGG16 weights: they are not in torch's cache "
                f"({torch.hub.get_dir()}/checkpoints) and the download failed ({error}). "
                "Pass a torchvision-layout VGG16 state dict instead: "
                "encoder_weights='path/to/vgg16.pth' (CLI: --encoder-weights PATH)."
            ) from error
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(
            f"encoder weights file {path} does not exist; pass 'imagenet' or the path of a "
            "torchvision-layout VGG16 state dict (keys features.0.weight ... features.28.bias)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, ValueError, OSError):
        # torch raises all of these for non-checkpoints (a text file gives KeyError: 105)
        raise ValueError(f"{path}: not a readable weights file (a torchvision-layout VGG16 state dict saved "
                         "with torch.save is expected); check --encoder-weights") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: holds no table of tensors, so it is not a VGG16 state dict; check --encoder-weights")
    return state


def load_vgg16_encoder(encoder_convs: list[nn.Conv2d], source: str | os.PathLike) -> list[str]:
    """Copy VGG16's 13 convolutions into ``encoder_convs`` (in order); return what was loaded.

    Only those convolutions change. Keys may carry torchvision's ``features.`` prefix or not.
    A missing key or a shape mismatch raises before anything is written.
    """
    if len(encoder_convs) != len(VGG16_CONV_INDICES):
        raise ValueError(f"expected 13 encoder convolutions, got {len(encoder_convs)}")
    state = load_vgg16_state_dict(source)
    updates: list[tuple[torch.Tensor, torch.Tensor, str]] = []
    for conv, index in zip(encoder_convs, VGG16_CONV_INDICES):
        for name in ("weight", "bias"):
            key = next((k for k in (f"features.{index}.{name}", f"{index}.{name}") if k in state), None)
            if key is None:
                raise ValueError(f"{source}: no VGG16 tensor features.{index}.{name}; is this a torchvision VGG16 state dict?")
            target = getattr(conv, name)
            if target.shape != state[key].shape:
                raise ValueError(
                    f"{source}: {key} has shape {tuple(state[key].shape)} but the encoder layer "
                    f"needs {tuple(target.shape)} (VGG16 weights need in_channels=3)"
                )
            updates.append((target, state[key], key))
    with torch.no_grad():
        for target, value, _ in updates:
            target.copy_(value)
    return [key for _, _, key in updates]
