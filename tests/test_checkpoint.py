"""Slim checkpoints with int8 or bf16 convolution kernels: written by `segnet slim --weights`,
read back as fp32 by every loader, refused with the tensor named when damaged."""

from __future__ import annotations

import json

import pytest
import torch

from segnet import pretrained_path
from segnet.cli import main
from segnet.data import build_dataset, normalize
from segnet.data.synthetic import render_scene
from segnet.engine import evaluate, load_checkpoint, load_model, save_checkpoint, slim_checkpoint
from segnet.engine.kernel_storage import dequantize_kernels, quantize_kernels
from segnet.models import create_model


@pytest.fixture
def trained_like(tmp_path):
    """A SegNet-Basic checkpoint with training state, weights drawn with per-channel spread."""
    meta = build_dataset("synthetic", None, "test").meta
    model = create_model("segnet_basic", meta.num_classes)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):  # non-trivial statistics, so BN's fp32 copy matters
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    path = save_checkpoint(tmp_path / "best.pt", model, "segnet_basic", meta, {"mean": [0.5] * 3, "std": [0.25] * 3},
                           optimizer={"state": {"x": torch.ones(1000)}}, config={"lr": 0.1})
    return path, model


def test_quantize_kernels_is_per_channel_and_within_half_a_step():
    kernel = torch.randn(8, 4, 3, 3) * torch.logspace(-3, 1, 8).view(8, 1, 1, 1)  # channels of very different size
    bias, running_var = torch.randn(8), torch.rand(8)
    quantized, scales = quantize_kernels({"conv.weight": kernel, "conv.bias": bias, "bn.running_var": running_var})
    assert quantized["conv.weight"].dtype == torch.int8 and set(scales) == {"conv.weight"}
    assert quantized["conv.bias"] is bias and quantized["bn.running_var"] is running_var  # only kernels change
    assert scales["conv.weight"].shape == (8, 1, 1, 1)
    assert quantized["conv.weight"].abs().amax(dim=(1, 2, 3)).eq(127).all()  # each channel uses its full range
    restored = dequantize_kernels(quantized, scales)["conv.weight"]
    assert restored.dtype == torch.float32
    error = (restored - kernel).abs().amax(dim=(1, 2, 3))
    assert (error <= scales["conv.weight"].flatten() / 2 + 1e-9).all()
    # per channel, not per tensor: the smallest channel keeps its relative precision
    assert error[0] / kernel[0].abs().max() < 0.005


def test_int8_slim_checkpoint_round_trip(trained_like, tmp_path):
    path, model = trained_like
    fp32 = slim_checkpoint(path, tmp_path / "fp32.pt")
    int8 = slim_checkpoint(path, tmp_path / "int8.pt", keep=("config",), weights="int8")
    assert int8.stat().st_size < 0.3 * fp32.stat().st_size

    raw = torch.load(int8, weights_only=True)
    assert raw["version"] == 2 and "optimizer" not in raw
    assert raw["state_dict"]["encoder.stages.0.0.weight"].dtype == torch.int8

    checkpoint = load_checkpoint(int8)
    assert checkpoint["stored_weights"] == "int8" and "weight_scales" not in checkpoint
    assert checkpoint["config"] == {"lr": 0.1}
    original = model.state_dict()
    for key, value in checkpoint["state_dict"].items():
        assert value.dtype == original[key].dtype, key
        if value.dim() == 4:
            assert torch.allclose(value, original[key], atol=original[key].abs().max().item() / 254 + 1e-9), key
        else:
            assert torch.equal(value, original[key]), key  # biases and BN statistics stay exact

    load_model(int8)  # loads into the architecture it records

    # slimmed again to fp32, the file is a version-1 checkpoint older segnet reads
    again = load_checkpoint(slim_checkpoint(int8, tmp_path / "again.pt"))
    assert again["version"] == 1 and "stored_weights" not in again
    assert torch.equal(again["state_dict"]["encoder.stages.0.0.weight"], checkpoint["state_dict"]["encoder.stages.0.0.weight"])
    with pytest.raises(ValueError, match="weights must be one of fp32, bf16, int8"):
        slim_checkpoint(path, tmp_path / "x.pt", weights="int4")


def test_bf16_slim_checkpoint_and_folder_round_trip(tmp_path):
    """bf16 kernels: half the bytes on disk, read back as fp32 equal to the bf16-rounded
    weights; everything else exact; the file says what it held."""
    meta = build_dataset("synthetic", None, "test").meta
    model = create_model("segnet_basic", meta.num_classes)
    path = save_checkpoint(tmp_path / "best.pt", model, "segnet_basic", meta, {"mean": [0.5] * 3, "std": [0.25] * 3})
    raw = torch.load(slim_checkpoint(path, tmp_path / "bf16.pt", weights="bf16"), weights_only=True)
    assert raw["version"] == 2 and "weight_scales" not in raw
    assert raw["state_dict"]["encoder.stages.0.0.weight"].dtype == torch.bfloat16
    checkpoint = load_checkpoint(tmp_path / "bf16.pt")
    folder = load_model(path).save_pretrained(tmp_path / "folder", weights="bf16")
    assert json.loads((folder / "config.json").read_text())["stored_weights"] == "bf16"
    from_folder = load_model(folder).model.state_dict()
    assert checkpoint["stored_weights"] == "bf16"
    for key, value in model.state_dict().items():
        for restored in (checkpoint["state_dict"][key], from_folder[key]):
            assert restored.dtype == value.dtype, key
            expected = value.to(torch.bfloat16).float() if value.dim() == 4 else value
            assert torch.equal(restored, expected), key


def test_int8_shipped_model_labels_almost_every_pixel_as_before(tmp_path):
    """The shipped SegNet-Basic through an int8 file, on a generated street scene (offline).
    Its logits move by about 2.5% (measured); an untrained model's would tell nothing, as
    its classes are near ties."""
    image, _ = render_scene(3, 180, 240)
    scores = []
    for weights in ("fp32", "int8"):
        shipped = pretrained_path("camvid_segnet_basic")
        _loaded = load_model(slim_checkpoint(shipped, tmp_path / f"{weights}.pt", weights=weights))
        model, normalization = _loaded.model, _loaded.normalization
        x = normalize(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255, normalization["mean"],
                      normalization["std"])
        with torch.inference_mode():
            scores.append(model(x))
    reference, approximate = scores
    assert ((approximate - reference).norm() / reference.norm()).item() < 0.05
    assert (approximate.argmax(1) == reference.argmax(1)).float().mean().item() > 0.97


def test_damaged_int8_checkpoints_are_refused_with_the_tensor_named(trained_like, tmp_path):
    path, _ = trained_like
    int8 = slim_checkpoint(path, tmp_path / "int8.pt", weights="int8")
    raw = torch.load(int8, weights_only=True)

    no_scale = dict(raw, weight_scales={k: v for k, v in raw["weight_scales"].items() if k != "encoder.stages.0.0.weight"})
    torch.save(no_scale, tmp_path / "no_scale.pt")
    with pytest.raises(ValueError, match=r"no_scale.pt: its int8 weights cannot be read: encoder.stages.0.0.weight is int8 "
                                         "without a scale"):
        load_checkpoint(tmp_path / "no_scale.pt")

    scales = dict(raw["weight_scales"])
    scales["encoder.stages.0.0.weight"] = torch.ones(3)
    torch.save(dict(raw, weight_scales=scales), tmp_path / "bad_shape.pt")
    with pytest.raises(ValueError, match="encoder.stages.0.0.weight's scale is not one value per output channel"):
        load_checkpoint(tmp_path / "bad_shape.pt")

    torch.save(dict(raw, version=3), tmp_path / "future.pt")
    with pytest.raises(ValueError, match="version 3 is newer than this segnet understands"):
        load_checkpoint(tmp_path / "future.pt")


def test_cli_slim_writes_a_small_copy_and_never_overwrites_its_source(trained_like, tmp_path, capsys):
    path, _ = trained_like
    before = path.read_bytes()
    assert main(["slim", str(path), "--out", str(tmp_path / "small.pt"), "--weights", "int8", "--keep", "config"]) == 0
    out = capsys.readouterr().out
    assert "convolution kernels in int8" in out and f"--checkpoint {tmp_path / 'small.pt'}" in out
    assert load_checkpoint(tmp_path / "small.pt")["stored_weights"] == "int8"

    assert main(["slim", str(path), "--out", str(path)]) == 2
    assert "is one of the inputs" in capsys.readouterr().err
    assert main(["slim", str(path), "--out", str(path), "--overwrite"]) == 2  # not even when asked
    assert "would lose its training state" in capsys.readouterr().err
    assert main(["slim", str(path), "--out", str(tmp_path / "y.pt"), "--keep", "metrics"]) == 2
    err = capsys.readouterr().err
    assert "has no metrics entry to keep (it has" in err and "optimizer" in err
    assert path.read_bytes() == before and not (tmp_path / "y.pt").exists()


@pytest.mark.slow
def test_int8_shipped_model_costs_nothing_measurable_on_real_camvid(camvid_root, tmp_path):
    """The shipped SegNet-Basic on 5 CamVid test images, as shipped and through an int8 file."""
    test = build_dataset("camvid", camvid_root, "test")
    test.pairs = test.pairs[::48]
    scores = {}
    for weights in ("fp32", "int8"):
        shipped = pretrained_path("camvid_segnet_basic")
        _loaded = load_model(slim_checkpoint(shipped, tmp_path / f"{weights}.pt", weights=weights))
        model, normalization = _loaded.model, _loaded.normalization
        scores[weights] = evaluate(model, test, normalization, bf_mode=None, amp="off", progress=False).metrics
    assert abs(scores["int8"]["mean_iou"] - scores["fp32"]["mean_iou"]) < 0.005
    assert abs(scores["int8"]["global_accuracy"] - scores["fp32"]["global_accuracy"]) < 0.005
