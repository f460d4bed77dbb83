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



def test_cpu_flags_override_reaches_the_rules(monkeypatch):
    """SEGNET_CPU_FLAGS replaces the CPU's flags for every rule (how AVX2 is emulated)."""
    from segnet.engine.engines import choose_engine, nnpack_available

    monkeypatch.delenv("SEGNET_CPU_FLAGS", raising=False)  # the suite may itself run under an emulation
    cpu_description.cache_clear()
    real = cpu_description()
    try:
        monkeypatch.setenv("SEGNET_CPU_FLAGS", "avx2")
        cpu_description.cache_clear()
        assert cpu_description() == {"model": real["model"] + " (flags from SEGNET_CPU_FLAGS)", "flags": ["avx2"]}
        assert resolve_amp("auto", "cpu") == "off"
        # open-ended work compiles on AMX, not here: fp32, with NNPACK where torch has it
        assert choose_engine("cpu") == ("nnpack" if nnpack_available() else "eager")
        monkeypatch.setenv("SEGNET_CPU_FLAGS", "amx_bf16, avx2")
        cpu_description.cache_clear()
        assert cpu_description()["flags"] == ["avx2", "amx_bf16"] and resolve_amp("auto", "cpu") == "bf16"
        assert choose_engine("cpu") == "compile"
        monkeypatch.setenv("SEGNET_CPU_FLAGS", "avx2,sse9")
        cpu_description.cache_clear()
        with pytest.raises(ValueError, match="SEGNET_CPU_FLAGS='avx2,sse9': unknown flag.s. sse9"):
            cpu_description()
    finally:
        monkeypatch.delenv("SEGNET_CPU_FLAGS")
        cpu_description.cache_clear()
        after = cpu_description()
        monkeypatch.undo()  # back to the environment the suite runs in, and its flags for later tests
        cpu_description.cache_clear()
    assert after == real


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


AMX = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"]


@pytest.mark.parametrize("flags, precision, device, changed", [
    (AMX, "bf16", "cpu", ["score_fr", "score_pool4", "score_pool3"]),  # the 11-channel score layers
    (AMX, "off", "cpu", []),  # fp32 never reached the broken kernel
    (["avx2", "avx512f", "avx512_vnni", "avx512_bf16"], "bf16", "cpu", []),  # no AMX: nothing to avoid
    (AMX, "bf16", "cuda", []),
])
def test_the_amx_bias_workaround_is_keyed_on_the_cpu_flags(flags, precision, device, changed):
    from segnet.engine.precision import avoid_amx_bias_crash

    model = create_model("fcn8s", 11, fc_channels=64).eval()  # narrow fc layers: the same layer names, quicker
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        before, keys = model(x), list(model.state_dict())
    assert avoid_amx_bias_crash(model, precision, device, flags=flags) == changed
    with torch.no_grad():
        after = model(x)
    assert list(model.state_dict()) == keys  # checkpoints do not change
    assert torch.allclose(before, after, atol=1e-5)  # the same sum, added in another place


@pytest.mark.slow  # a training run end to end (the rule itself is checked above, in test-fast too)
def test_training_records_the_amx_workaround(tmp_path, monkeypatch, few_scenes):
    import json

    from segnet.engine.train import train

    monkeypatch.setattr("segnet.engine.precision.cpu_description", lambda: {"model": "fake AMX Xeon", "flags": AMX})
    # few scenes, small: without native bf16 (AVX2) the bf16 backward is emulated and slow
    config = resolve_config("paper-basic", {"dataset": "synthetic", "model": "segnet_basic", "size": [16, 32],
                                            "epochs": 1, "batch_size": 8, "amp": "bf16", "device": "cpu",
                                            "bn_recompute": False})
    train(config, tmp_path, progress=False)
    runtime = json.loads((tmp_path / "config.json").read_text())["runtime"]
    assert runtime["amx_bias_after_convolution"] == ["classifier"]
    assert load_model(tmp_path / "best.pt").model.classifier.__class__ is torch.nn.Conv2d  # a plain model again
