"""The CamVid models shipped inside the package (SegNet-Basic and SegNet): they load offline,
`segnet predict` uses the default one, and they still score on real CamVid test images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from segnet import PRETRAINED, pretrained_path
from segnet.cli import main
from segnet.data import build_dataset
from segnet.data.datasets import CAMVID_META
from segnet.data.synthetic import render_scene
from segnet.engine import evaluate, load_checkpoint, load_model, save_checkpoint, slim_checkpoint
from segnet.engine.engines import choose_engine
from segnet.models import create_model

# (G, mIoU) floors on the 5 test images below (every 48th of the 233), about 5 points under
# what each model scored there when its weights were made (its model card in docs/models/),
# so that library upgrades with slightly different numerics pass and a broken model does not
# (an untrained network scores mIoU under 5 here).
FLOORS = {
    "camvid_segnet_basic": (0.77, 0.40),  # measured G 82.8, mIoU 45.0
    "camvid_segnet": (0.83, 0.52),  # measured G 88.4, mIoU 57.2
}


def test_shipped_checkpoint_is_slim_and_complete():
    path = pretrained_path("camvid_segnet_basic")
    assert path.stat().st_size < 8e6  # fp32 SegNet-Basic, no optimizer state
    checkpoint = load_checkpoint(path)
    assert "optimizer" not in checkpoint and "rng" not in checkpoint
    assert checkpoint["model"]["name"] == "segnet_basic" and checkpoint["model"]["num_classes"] == 11
    assert checkpoint["input_size"] == [360, 480]  # CamVid's own size: other images are resized to it
    assert checkpoint["dataset"]["name"] == "camvid" and len(checkpoint["dataset"]["class_names"]) == 11
    test = checkpoint["test_metrics"]  # what the model card reports, computed on all 233 test images
    assert test["images"] == 233 and test["bf_mode"] == "exact" and 0 < test["mean_iou"] < 1
    model = load_model(path).model
    with torch.inference_mode():
        assert model(torch.zeros(1, 3, 120, 160)).shape == (1, 11, 120, 160)
    with pytest.raises(ValueError, match="shipped: camvid_segnet_basic, camvid_segnet"):
        pretrained_path("nonexistent")
    assert set(PRETRAINED) == set(FLOORS) == {"camvid_segnet_basic", "camvid_segnet"}


def test_shipped_segnet_is_bf16_complete_and_runs():
    path = pretrained_path("camvid_segnet")
    assert (path / "model.safetensors").stat().st_size < 60e6  # bf16 kernels: half of SegNet's 118 MB
    config = json.loads((path / "config.json").read_text())
    assert config["stored_weights"] == "bf16" and config["architecture"] == "segnet"
    test = config["test_metrics"]  # what the model card reports, computed on all 233 test images
    assert test["images"] == 233 and test["bf_mode"] == "exact" and test["mean_iou"] > 0.531  # above the best before
    shipped = load_model("camvid_segnet")
    assert shipped.name == "segnet" and shipped.input_size == (360, 480)
    assert tuple(shipped.meta.class_names) == CAMVID_META.class_names
    assert tuple(map(tuple, shipped.meta.palette)) == CAMVID_META.palette
    with torch.inference_mode():
        assert shipped.model(torch.zeros(1, 3, 64, 96)).shape == (1, 11, 64, 96)
    image, _ = render_scene(5, 72, 100)
    labels = shipped.segment(torch.from_numpy(image).permute(2, 0, 1))  # resized to 360x480 and back, default engine
    assert labels.shape == (72, 100) and int(labels.max()) < 11
    assert shipped.runtime["engine"] == choose_engine("cpu", 1, model=shipped.model)  # auto's pick here


def test_predict_uses_the_shipped_model_by_default(tmp_path, capsys):
    image, _ = render_scene(3, 90, 120)
    Image.fromarray(image).save(tmp_path / "street.png")
    assert main(["predict", str(tmp_path / "street.png"), "--out", str(tmp_path / "out")]) == 0
    labels = np.array(Image.open(tmp_path / "out" / "street.png"))
    assert labels.shape == (90, 120) and labels.max() < 11
    assert (tmp_path / "out" / "street_overlay.png").is_file()
    assert "1 image(s) segmented, 0 failed" in capsys.readouterr().out


def test_slim_checkpoint_keeps_inference_entries_only(tmp_path):
    meta = build_dataset("synthetic", None, "test").meta
    full = save_checkpoint(tmp_path / "full.pt", create_model("segnet_basic", meta.num_classes), "segnet_basic", meta,
                           {"mean": [0.5] * 3, "std": [0.25] * 3}, optimizer={"state": {}}, config={"lr": 0.1},
                           input_size=[32, 48])
    slim = slim_checkpoint(full, tmp_path / "slim.pt", keep=("config",), card="docs/x.md")
    checkpoint = load_checkpoint(slim)
    load_model(slim)
    assert "optimizer" not in checkpoint
    assert checkpoint["config"] == {"lr": 0.1} and checkpoint["card"] == "docs/x.md"
    assert checkpoint["input_size"] == [32, 48]
    with pytest.raises(ValueError, match="no metrics entry"):
        slim_checkpoint(full, tmp_path / "other.pt", keep=("metrics",))
    assert not (tmp_path / "other.pt").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FLOORS))
def test_shipped_model_scores_on_real_camvid(camvid_root, name):
    _loaded = load_model(pretrained_path(name))
    model, normalization = _loaded.model, _loaded.normalization
    test = build_dataset("camvid", camvid_root, "test")
    test.pairs = test.pairs[::48]  # 5 images spread over the test sequences
    result = evaluate(model, test, normalization, bf_mode=None, input_size=_loaded.input_size, progress=False)
    floor_global_accuracy, floor_mean_iou = FLOORS[name]
    assert result.metrics["images"] == 5
    assert result.metrics["global_accuracy"] > floor_global_accuracy
    assert result.metrics["mean_iou"] > floor_mean_iou


@pytest.mark.slow
def test_shipped_model_exports_to_onnx(tmp_path, capsys):
    # A trained model is checked on inputs in its own normalisation (0-255 here): on [0, 1]
    # inputs this one is ill-conditioned and the parity check would fail for a correct export.
    pytest.importorskip("onnxruntime")
    assert main(["export", "--pretrained", "camvid_segnet_basic", "--out", str(tmp_path / "basic.onnx")]) == 0
    assert (tmp_path / "basic.onnx").is_file()
    assert "onnxruntime vs PyTorch at (1, 3, 360, 480): labels agree" in capsys.readouterr().out
