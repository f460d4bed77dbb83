"""bf16 autocast follows the hardware: what `amp` resolves to, and bf16 inference on a CPU
that has native bf16 agreeing with fp32."""

from __future__ import annotations

import pytest
import torch

from segnet import pretrained_path
from segnet.data import build_dataset
from segnet.engine import evaluate, load_model
from segnet.engine.evaluate import predict_logits
from segnet.engine.precision import cpu_description, cpu_has_native_bf16, resolve_amp
from segnet.engine.recipes import TrainConfig, resolve_config
from segnet.models import create_model

NATIVE = cpu_has_native_bf16()
needs_native_bf16 = pytest.mark.skipif(
    not NATIVE, reason=f"this CPU ({cpu_description()['model']}: {' '.join(cpu_description()['flags'])}) has no "
    "avx512_bf16/amx_bf16: bf16 would be emulated, and 'auto' rightly picks fp32 here")


def test_amp_resolves_by_device_and_cpu_flags(monkeypatch):
    import segnet.engine.precision as precision

    assert resolve_amp("off", "cpu") == "off" and resolve_amp("bf16", "cpu") == "bf16"
    assert resolve_amp("auto", "cuda") == "bf16"
    assert resolve_amp("auto", "cpu") == ("bf16" if NATIVE else "off")
    for flags, expected in ((["avx2"], "off"), (["avx2", "avx512_vnni"], "off"), (["avx2", "avx512_bf16"], "bf16"),
                            (["amx_bf16"], "bf16")):
        monkeypatch.setattr(precision, "cpu_description", lambda flags=flags: {"model": "x", "flags": flags})
        assert resolve_amp("auto", "cpu") == expected, flags
    assert resolve_amp(True, "cuda") == "bf16" and resolve_amp(False, "cuda") == "off"  # older configurations
    with pytest.raises(ValueError, match="amp must be one of auto, bf16, off"):
        resolve_amp("fp16", "cpu")
    assert TrainConfig(amp=False).amp == "off" and TrainConfig(amp=True).amp == "auto"
    with pytest.raises(ValueError, match="amp must be one of"):
        resolve_config("paper-basic", {"amp": "yes"})
    assert "flags" in cpu_description() and set(cpu_description()["flags"]) <= set(precision.CPU_FLAGS_OF_INTEREST)


@needs_native_bf16
def test_bf16_inference_agrees_with_fp32_on_a_native_bf16_cpu():
    _loaded = load_model(pretrained_path("camvid_segnet_basic"))
    model, normalization = _loaded.model, _loaded.normalization
    dataset = build_dataset("synthetic", None, "test")
    images = torch.stack([dataset.load(i)[0] for i in range(4)])
    with torch.inference_mode():
        fp32 = predict_logits(model, images, normalization, (120, 160), "off")
        bf16 = predict_logits(model, images, normalization, (120, 160), "bf16")
    assert bf16.dtype == torch.float32  # logits come back in fp32 either way
    agreement = (fp32.argmax(1) == bf16.argmax(1)).float().mean()
    assert agreement > 0.97, agreement
    assert not torch.equal(fp32, bf16)  # it really ran in bf16
    untrained = create_model("segnet_basic", dataset.meta.num_classes)  # evaluate records what ran
    result = evaluate(untrained, dataset, normalization, bf_mode=None, amp="auto", progress=False)
    assert result.metrics["runtime"]["precision"] == "bf16"
    assert "avx512_bf16" in result.metrics["runtime"]["cpu"]["flags"] or "amx_bf16" in result.metrics["runtime"]["cpu"]["flags"]


def test_device_auto_is_the_gpu_when_there_is_one_else_the_cpu(monkeypatch):
    from segnet.engine.precision import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert check_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert check_device("auto") == torch.device("cuda:0")


def test_shared_camvid_follows_one_rule(tmp_path, monkeypatch):
    from segnet.data.datasets import shared_camvid

    (tmp_path / "data" / "CamVid" / "test").mkdir(parents=True)
    monkeypatch.delenv("SEGNET_CAMVID", raising=False)
    monkeypatch.setenv("SEGNET_SHARED", str(tmp_path))
    assert shared_camvid() == tmp_path / "data" / "CamVid"
    monkeypatch.setenv("SEGNET_CAMVID", str(tmp_path / "nowhere"))
    assert shared_camvid() is None  # SEGNET_CAMVID wins, and it holds no test folder
