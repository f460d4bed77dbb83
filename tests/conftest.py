"""Shared fixtures: where the shared data lives, and a fixed seed for every test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# The shared inputs (CamVid, VGG16 weights) live beside the checkout; SEGNET_SHARED overrides.
SHARED = Path(os.environ.get("SEGNET_SHARED", REPO.parent / "shared"))
CAMVID_ROOT = Path(os.environ.get("SEGNET_CAMVID", SHARED / "data" / "CamVid"))
VGG16_WEIGHTS = Path(os.environ.get("SEGNET_VGG16_WEIGHTS", SHARED / "weights" / "vgg16_imagenet_features.pth"))


if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist runs one worker per core (make test): one torch thread each, so that the
    # workers share the cores instead of fighting over them
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# The synthetic dataset at 16 training, 4 validation and 4 test scenes (instead of 96/24/24),
# for tests that train or evaluate end to end in process and check what is written, not
# what is learnt.
FEW_SCENES = {"train": 16, "val": 4, "test": 4}
# ... and at 48/8/8 for the trainings that run in subprocesses (kill and resume, torchrun,
# a killed reproduction), set by the script each one runs: 6 steps an epoch at batch 8,
# enough for a kill to land mid-epoch
SUBPROCESS_SCENES = {"train": 48, "val": 8, "test": 8}


@pytest.fixture
def few_scenes(monkeypatch) -> None:
    monkeypatch.setattr("segnet.data.synthetic.DEFAULT_SIZES", FEW_SCENES)


@pytest.fixture
def camvid_root() -> Path:
    if not (CAMVID_ROOT / "train.txt").is_file():
        pytest.skip(f"CamVid not found at {CAMVID_ROOT} (set SEGNET_CAMVID or SEGNET_SHARED)")
    return CAMVID_ROOT


@pytest.fixture
def vgg16_weights() -> Path:
    if not VGG16_WEIGHTS.is_file():
        pytest.skip(f"VGG16 weights not found at {VGG16_WEIGHTS} (set SEGNET_VGG16_WEIGHTS or SEGNET_SHARED)")
    return VGG16_WEIGHTS


def torchvision_vgg16_features() -> torch.nn.Sequential:
    """torchvision's VGG16 ``features`` (the layout of its state dict), built without the
    classifier that ``torchvision.models.vgg16()`` also initialises (120 M parameters, 1.5 s)."""
    from torchvision.models.vgg import cfgs, make_layers  # imported here: torchvision takes seconds

    return make_layers(cfgs["D"])


# The comparison networks cost 4 to 9 times SegNet-Basic's compute: a per-model check of
# theirs (a test parametrized over models) runs in `make test`, and `make test-fast` keeps
# that check for the SegNet models only.
HEAVY_MODELS = {"fcn8s", "fcn_bilinear", "deconvnet", "deeplab_largefov"}


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if HEAVY_MODELS & {value for value in params.values() if isinstance(value, str)}:
            item.add_marker(pytest.mark.slow)
