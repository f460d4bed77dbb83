"""Trained weights shipped inside the package, so that segmenting works offline.

Each entry is a model folder (``engine.hub``: ``model.safetensors``, ``config.json`` with the
classes, palette, normalisation, the input size it was trained at and its provenance:
recipe, configuration, test metrics; and its model card as ``README.md``). Load one by name
wherever a checkpoint path is taken::

    from segnet import load_model
    shipped = load_model("camvid_segnet_basic")
    labels = shipped.segment("street.png")

Model cards (data, recipe, metrics, limits): docs/models/.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_PRETRAINED = "camvid_segnet_basic"

PRETRAINED: dict[str, str] = {
    # name: what it is (the folder NAME/ beside this module)
    "camvid_segnet_basic": "SegNet-Basic trained on CamVid's 367 training images (11 classes) at full "
                           "resolution, runs at 360x480; model card: docs/models/camvid_segnet_basic.md",
}


def pretrained_path(name: str = DEFAULT_PRETRAINED) -> Path:
    """The model folder of a shipped model."""
    if name not in PRETRAINED:
        raise ValueError(f"no shipped model named {name!r}; shipped: {', '.join(PRETRAINED)}")
    path = Path(__file__).resolve().parent / name
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"{path}: the shipped weights are missing from this installation "
                                "(reinstall segnet; a source checkout has them under src/segnet/pretrained/)")
    return path
