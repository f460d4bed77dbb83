"""Trained weights shipped inside the package, so that segmenting works offline.

Each entry is a model folder (``engine.hub``: ``model.safetensors``, ``config.json`` with the
classes, palette, normalisation, the input size it was trained at and its provenance:
recipe, configuration, test metrics; and its model card as ``README.md``). Load one by name
wherever a checkpoint path is taken::

    from segnet import load_model
    shipped = load_model("camvid_segnet")     # or "camvid_segnet_basic": faster, less accurate
    labels = shipped.segment("street.png")

Model cards (data, recipe, metrics, limits): docs/models/.
"""

from __future__ import annotations

from pathlib import Path

# What predict, serve and the demo use when no model is named: SegNet, for its accuracy (CamVid
# test mIoU 54.9 against SegNet-Basic's 49.1, G 86.9 against 82.7); it costs 2.3 times
# SegNet-Basic's time per image (142 against 63 ms on a 2-core AMX Xeon), measured in
# docs/performance.md ("Which shipped model is the default"), where --pretrained
# camvid_segnet_basic is the faster choice.
DEFAULT_PRETRAINED = "camvid_segnet"

PRETRAINED: dict[str, str] = {
    # name: what it is (the folder NAME/ beside this module)
    "camvid_segnet_basic": "SegNet-Basic trained on CamVid's 367 training images (11 classes) at full "
                           "resolution, runs at 360x480; model card: docs/models/camvid_segnet_basic.md",
    "camvid_segnet": "SegNet (VGG16 encoder) trained on CamVid's 367 training images (11 classes) on whole "
                     "360x480 frames, runs at 360x480, convolution kernels stored in bf16 (59 MB); model card: "
                     "docs/models/camvid_segnet.md",
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
