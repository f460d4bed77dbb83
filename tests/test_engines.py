"""Inference engines: the rule auto follows for a given CPU, that every engine labels like
eager, that a compile failure falls back with a notice, and that outputs say what ran."""

from pathlib import Path

import pytest
import torch

from segnet.engine import load_model
from segnet.engine.engines import (COMPILE_PAYS_AFTER, NnpackConv2d, build_engine, choose_engine, fft_pays,
                                   nnpack_available)
from segnet.engine.winograd import MAX_PIXELS, MIN_CHANNELS, WinogradConv2d
from segnet.models import MODELS, create_model

AMX = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"]
AVX512_BF16 = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16"]
AVX2 = ["avx2"]


@pytest.mark.parametrize("flags, images, expected", [
    (AMX, None, "compile"),  # serve, video: open-ended work repays compiling
    (AMX, COMPILE_PAYS_AFTER, "compile"),
    (AMX, COMPILE_PAYS_AFTER - 1, "eager"),  # too little work to repay it
    (AMX, 1, "eager"),
    (AVX512_BF16, None, "winograd"),  # bf16 Winograd; compile measured no faster there
    (AVX512_BF16, 1, "winograd"),
    (AVX2, None, "nnpack"),  # fp32 only: NNPACK's Winograd convolutions
    (AVX2, 1, "nnpack"),
    ([], 5, "eager"),  # unmeasured kinds (ARM, x86 without AVX2): fp32 eager
])
def test_auto_follows_the_rule_for_the_cpu_flags(flags, images, expected, monkeypatch):
    monkeypatch.setattr("segnet.engine.engines.nnpack_available", lambda: True)
    assert choose_engine("cpu", images, flags) == expected


# the networks with a 64->64 7x7 convolution at full resolution (NNPACK's FFTs pay there);
# SegNet-Basic's depthwise-decoder and FCN-Basic variants have none, the rest wide 3x3 layers
FFT_PAYS = ["segnet_basic", "bayesian_segnet_basic", "segnet_basic_encoder_addition"]


@pytest.mark.parametrize("name", list(MODELS))
def test_auto_on_avx512_bf16_without_amx_picks_by_the_network(name, monkeypatch):
    monkeypatch.setattr("segnet.engine.engines.nnpack_available", lambda: True)
    with torch.device("meta"):  # the layers' shapes are all the rule reads
        model = create_model(name, num_classes=11)
    assert choose_engine("cpu", 1, AVX512_BF16, model) == ("nnpack" if name in FFT_PAYS else "winograd")
    assert choose_engine("cpu", 1, AMX, model) == "eager"  # AMX's bf16 tiles: unchanged
    monkeypatch.setattr("segnet.engine.engines.nnpack_available", lambda: False)
    assert choose_engine("cpu", 1, AVX512_BF16, model) == "winograd"  # bf16 eager for SegNet-Basic


def test_fft_rule_leaves_the_model_as_it_was():
    model = load_model(model="bayesian_segnet_basic").model.train()  # dropout and BN statistics live
    model.encoder.stages[1][1].eval()  # one BN frozen: stays so
    modes = [m.training for m in model.modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert fft_pays(model)
    assert [m.training for m in model.modules()] == modes
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # BN statistics untouched
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_auto_without_nnpack_runs_fp32_eager(monkeypatch):
    monkeypatch.setattr("segnet.engine.engines.nnpack_available", lambda: False)
    assert choose_engine("cpu", None, AVX2) == "eager"
    with pytest.raises(ValueError, match="--engine nnpack: this torch build has no NNPACK.*use --engine eager"):
        build_engine(load_model(model="segnet_basic").model, "nnpack", "auto", "cpu")


@pytest.mark.parametrize("name, flags, amp, expected", [
    ("segnet", AVX512_BF16, "auto", {"engine": "winograd", "precision": "bf16"}),
    ("segnet", AVX512_BF16, "off", {"engine": "eager", "precision": "fp32"}),  # winograd is bf16 only
    ("segnet_basic", AVX512_BF16, "auto", {"engine": "nnpack", "precision": "fp32"}),
    ("segnet_basic", AVX512_BF16, "off", {"engine": "nnpack", "precision": "fp32"}),
    ("segnet_basic", AVX512_BF16, "bf16", {"engine": "eager", "precision": "bf16"}),  # nnpack is fp32 only
    ("segnet_basic", AVX2, "auto", {"engine": "nnpack", "precision": "fp32"}),
    ("segnet_basic", AVX2, "bf16", {"engine": "eager", "precision": "bf16"}),
])
def test_auto_runs_the_precision_asked_for(name, flags, amp, expected, monkeypatch):
    monkeypatch.setattr("segnet.engine.precision.cpu_description", lambda: {"model": "fake", "flags": flags})
    monkeypatch.setattr("segnet.engine.engines.nnpack_available", lambda: True)
    _, runtime = build_engine(load_model(model=name).model, "auto", amp, "cpu", flags=flags)
    assert runtime == expected


def test_auto_on_cuda_is_eager_whatever_the_cpu():
    assert choose_engine(torch.device("cuda"), None, AMX) == "eager"


@pytest.mark.parametrize("flags, precision", [(AVX512_BF16, "bf16"), (AMX, "bf16"), (AVX2, "fp32")])
def test_eager_runs_bf16_only_where_the_cpu_has_it(flags, precision, monkeypatch):
    monkeypatch.setattr("segnet.engine.precision.cpu_description", lambda: {"model": "fake", "flags": flags})
    model = load_model(model="segnet_basic").model
    network, runtime = build_engine(model, "eager", "auto", "cpu", images=1, flags=flags)
    assert runtime == {"engine": "eager", "precision": precision}
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in network.modules())  # folded
    convolutions = [m for m in network.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convolutions)


@pytest.fixture(scope="module")
def images():
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (2, 3, 48, 64), generator=generator, dtype=torch.uint8)


def _labels(loaded, images, engine, amp="off"):
    loaded.prepare(engine, amp=amp)
    return loaded.predict_logits(images, amp).argmax(1)


@pytest.fixture(scope="module")
def street():
    """Two synthetic street-like scenes, which the shipped CamVid model labels decisively."""
    from segnet.data import build_dataset

    dataset = build_dataset("synthetic", None, "val", count=2, size=(96, 128))
    return torch.stack([dataset.load(i)[0] for i in range(2)])


@pytest.fixture(scope="module")
def street_plain_labels(street):
    """The shipped SegNet-Basic's labels of ``street``, plain fp32 (BN unfolded, contiguous):
    what each engine is compared with (computed once: two 360x480 forwards)."""
    from segnet.engine.evaluate import predict_logits

    loaded = load_model("camvid_segnet_basic")
    with torch.inference_mode():
        return predict_logits(loaded.model.eval(), street, loaded.normalization, loaded.input_size).argmax(1)


@pytest.mark.slow
@pytest.mark.parametrize("engine, agreement", [("eager", 0.999), ("nnpack", 0.999), ("onnxruntime", 0.999),
                                               ("int8", 0.95)])
def test_each_engine_labels_like_plain_eager(engine, agreement, street, street_plain_labels):
    """The shipped model, plain fp32 (BN unfolded, contiguous) against each engine in fp32."""
    pytest.importorskip("onnxruntime")
    loaded = load_model("camvid_segnet_basic")
    labels = _labels(loaded, street, engine)
    assert loaded.runtime["engine"] == engine
    assert (labels == street_plain_labels).float().mean() >= agreement


@pytest.mark.slow
def test_the_bf16_engine_labels_like_plain_fp32_as_bf16_autocast_does(street, street_plain_labels):
    """Weights in bf16 without autocast (the default where the CPU has bf16) against plain
    fp32: bf16 rounding flips the labels of near-ties only. Measured on these scenes: 98.9%
    agree, as bf16 autocast over the unfolded model (98.8%)."""
    loaded = load_model("camvid_segnet_basic")
    labels = _labels(loaded, street, "eager", amp="bf16")
    assert loaded.runtime["precision"] == "bf16"
    assert (labels == street_plain_labels).float().mean() >= 0.98
    assert next(loaded.model.parameters()).dtype == torch.float32  # the loaded model itself stays fp32


# every model in the winograd engine is an end-to-end check (about 20 s in all): slow
@pytest.mark.parametrize("engine", ["eager", pytest.param("winograd", marks=pytest.mark.slow)])
@pytest.mark.parametrize("name", __import__("segnet.models", fromlist=["list_models"]).list_models())
def test_every_model_runs_in_the_bf16_engines(name, engine):
    """Every layer has a bf16 kernel or runs in fp32 inside the network (LocalResponseNorm),
    and the Winograd convolutions run on every model's maps down to 1x2 pixels."""
    torch.manual_seed(0)
    model = load_model(model=name).model
    network, runtime = build_engine(model, engine, "bf16", "cpu")
    with torch.inference_mode():
        logits = network(torch.rand(1, 3, 32, 48))
    assert runtime == {"engine": engine, "precision": "bf16"}
    assert logits.shape[-2:] == (32, 48) and torch.isfinite(logits).all()


@pytest.mark.parametrize("bias", [True, False])
def test_the_winograd_convolution_is_the_direct_one_in_float64(bias):
    """The transforms are exact: in float64 the Winograd F(4x4, 3x3) convolution gives the
    direct convolution's output to rounding, at sizes that are not multiples of the 4x4
    tile, for a batch split over several calls (3 images of 45x61 per call) and for a
    single pixel; a map over MAX_PIXELS, or an empty input, runs the original convolution."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(128, 130, 3, padding=1, bias=bias).double()
    layer = WinogradConv2d(conv)
    for shape in [(7, 128, 45, 61), (1, 128, 1, 1), (2, 128, 5, 6)]:
        x = torch.randn(shape, dtype=torch.float64)
        with torch.inference_mode():
            y, reference = layer(x), conv(x)
        assert y.shape == reference.shape and (y - reference).abs().max() <= 1e-10 * reference.abs().max()
        assert y.is_contiguous(memory_format=torch.channels_last)
    large = torch.randn(1, 128, 91, MAX_PIXELS // 91 + 1, dtype=torch.float64)
    with torch.inference_mode():
        assert torch.equal(layer(large), conv(large))
        assert layer(torch.randn(0, 128, 8, 8, dtype=torch.float64)).shape == (0, 130, 8, 8)
        with pytest.raises(RuntimeError, match="Kernel size can't be greater than actual input size"):
            layer(torch.randn(1, 128, 0, 8, dtype=torch.float64))  # as the convolution says, not 1/0


@pytest.mark.parametrize("name", ["segnet", "deeplab_largefov"])
def test_the_winograd_engine_replaces_the_wide_3x3_convolutions_only(name):
    """Only 3x3 convolutions with MIN_CHANNELS or more in and out go Winograd: SegNet's first
    and last blocks (64 channels) and DeepLab's dilated ones stay with oneDNN."""
    network, runtime = build_engine(load_model(model=name).model, "winograd", "bf16", "cpu")
    replaced = [m for m in network.modules() if isinstance(m, WinogradConv2d)]
    kept = [m for m in network.modules() if type(m) is torch.nn.Conv2d and m.kernel_size == (3, 3)
            and not any(m is r.conv for r in replaced)]
    assert runtime == {"engine": "winograd", "precision": "bf16"} and replaced and kept
    assert all(min(m.conv.in_channels, m.conv.out_channels) >= MIN_CHANNELS for m in replaced)
    assert all(min(m.in_channels, m.out_channels) < MIN_CHANNELS or m.dilation != (1, 1) for m in kept)
    with torch.inference_mode():
        logits = network(torch.rand(1, 3, 32, 48))
    assert logits.shape == (1, 11, 32, 48) and logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()


@pytest.mark.slow
def test_the_winograd_engine_labels_the_shipped_segnet_like_fp32(street):
    """The shipped SegNet on two street scenes at their own 96x128, against plain fp32: the
    Winograd engine's logits are off by at most twice the bf16 eager engine's error and the
    labels agree but for near-ties (measured: error 3.6% against bf16's 2.7%, labels 96.2%
    against 97.4%); one image at a time labels like the batch."""
    from segnet.engine.evaluate import predict_logits

    loaded = load_model("camvid_segnet")
    model = loaded.model.eval()
    winograd, _ = build_engine(model, "winograd", "bf16", "cpu")
    eager, _ = build_engine(model, "eager", "bf16", "cpu")
    with torch.inference_mode():
        reference = predict_logits(model, street, loaded.normalization)
        logits = predict_logits(winograd, street, loaded.normalization)
        bf16 = predict_logits(eager, street, loaded.normalization)
        single = torch.cat([predict_logits(winograd, image[None], loaded.normalization) for image in street])

    def error(x):
        return ((x - reference).norm() / reference.norm()).item()
    assert error(logits) <= 2 * error(bf16)
    assert (logits.argmax(1) == reference.argmax(1)).float().mean() >= 0.95
    assert (single.argmax(1) == logits.argmax(1)).float().mean() >= 0.99


@pytest.mark.parametrize("engine, amp, refusal", [
    ("nnpack", "bf16", "--engine nnpack runs in fp32 only; leave --amp at auto or off"),
    ("winograd", "off", "--engine winograd runs in bf16 only.*use --engine eager"),
])
def test_the_cpu_engines_refuse_another_precision_and_a_gpu(engine, amp, refusal):
    model = load_model(model="segnet_basic").model
    with pytest.raises(ValueError, match=refusal):
        build_engine(model, engine, amp, "cpu")
    with pytest.raises(ValueError, match=f"--engine {engine} runs on the CPU only"):
        build_engine(model, engine, "auto", torch.device("cuda"))


@pytest.mark.skipif(not nnpack_available(), reason="this torch build has no NNPACK")
@pytest.mark.parametrize("name", __import__("segnet.models", fromlist=["list_models"]).list_models())
def test_every_model_runs_in_the_nnpack_engine(name):
    """Every network runs with NNPACK's convolutions (FCN-8s's 100-pixel padding and
    DeconvNet's 7x7 layers on tiny maps included) and labels like fp32 eager but for
    near-ties: untrained DeconvNet, the most sensitive (Winograd's rounding flips a few
    max-pooling switches), agrees on 99.8% of these pixels."""
    torch.manual_seed(0)
    model = load_model(model=name).model
    network, runtime = build_engine(model, "nnpack", "auto", "cpu")
    eager, _ = build_engine(model, "eager", "off", "cpu")
    x = torch.rand(1, 3, 64, 96)
    with torch.inference_mode():
        logits, reference = network(x), eager(x)
    assert runtime["precision"] == "fp32" and logits.shape == reference.shape and torch.isfinite(logits).all()
    assert (logits.argmax(1) == reference.argmax(1)).float().mean() >= 0.99


@pytest.mark.slow
def test_compile_labels_like_eager(images):
    torch.manual_seed(0)
    loaded = load_model(model="segnet_basic")
    eager = _labels(loaded, images, "eager")
    assert torch.equal(_labels(loaded, images, "compile"), eager) or \
        (_labels(loaded, images, "compile") == eager).float().mean() >= 0.999
    assert loaded.runtime["engine"] == "compile"


def test_a_compile_failure_falls_back_to_eager_with_one_notice(images, monkeypatch, capsys):
    def broken_compile(network, **_):
        def run(x):
            raise RuntimeError("inductor exploded\nmore lines nobody needs")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    torch.manual_seed(0)
    loaded = load_model(model="segnet_basic")
    eager = _labels(loaded, images, "eager")
    first = _labels(loaded, images, "compile")
    second = loaded.predict_logits(images, "off").argmax(1)
    assert torch.equal(first, eager) and torch.equal(second, eager)
    notices = capsys.readouterr().err.strip().splitlines()
    assert notices == ["segnet: torch.compile failed (RuntimeError: inductor exploded); running eager instead"]


def test_an_onnx_engine_that_fails_its_parity_check_says_what_runs_and_leaves_no_files(tmp_path, monkeypatch):
    import tempfile

    import segnet.export
    from segnet.export.onnx import ParityError

    def differing_export(model, path, **_):  # what export_onnx does when onnxruntime disagrees
        Path(path).write_bytes(b"half an export")
        raise ParityError("onnxruntime differs from PyTorch at input (1, 3, 32, 32): 3.000% of logits off; "
                          "the file was not written")

    monkeypatch.setattr(segnet.export, "export_onnx", differing_export)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    network, _ = build_engine(load_model(model="segnet_basic").model, "int8", "auto", "cpu")
    with pytest.raises(ParityError, match=r"^--engine int8: onnxruntime differs .*3.000% of logits off; "
                                          r"--engine eager \(or auto, the default\) runs this model"):
        network(torch.rand(1, 3, 32, 32))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not nnpack_available(), reason="this torch build has no NNPACK")
@pytest.mark.parametrize("name", ["segnet_basic", "segnet", "deeplab_largefov"])
def test_nnpack_labels_like_fp32_eager_at_odd_sizes_and_batches(name):
    """NNPACK's Winograd/FFT convolutions round differently from a direct convolution, by
    about 1e-6 of the output's scale: the logits stay within 1e-3 of fp32 eager and the
    labels agree but for near-ties. DeepLab's dilated convolutions stay with oneDNN."""
    torch.manual_seed(0)
    model = load_model(model=name).model.eval()
    network, runtime = build_engine(model, "nnpack", "auto", "cpu")
    replaced = [m for m in network.modules() if isinstance(m, NnpackConv2d)]
    kept = [m for m in network.modules() if isinstance(m, torch.nn.Conv2d)]
    assert runtime == {"engine": "nnpack", "precision": "fp32"} and replaced
    assert all(m.dilation != (1, 1) for m in kept) and (bool(kept) == (name == "deeplab_largefov"))
    eager, _ = build_engine(model, "eager", "off", "cpu")
    x = torch.rand(2, 3, 45, 61)
    with torch.inference_mode():
        reference, logits = eager(x), network(x)
        single = torch.cat([network(x[:1]), network(x[1:])])
    assert logits.shape == reference.shape == (2, 11, 45, 61) and logits.dtype == torch.float32
    scale = reference.abs().max()
    assert (logits - reference).abs().max() <= 1e-3 * scale and (single - logits).abs().max() <= 1e-3 * scale
    assert (logits.argmax(1) == reference.argmax(1)).float().mean() >= 0.999


def test_the_onnx_engines_refuse_a_gpu_with_a_clear_error():
    model = load_model(model="segnet_basic").model
    with pytest.raises(ValueError, match="CPU only"):
        build_engine(model, "int8", "auto", torch.device("cuda"))


def test_an_unknown_engine_is_refused():
    with pytest.raises(ValueError, match="engine must be one of"):
        build_engine(load_model(model="segnet_basic").model, "tensorrt", "auto", "cpu")


def test_evaluate_records_the_engine_and_precision(images):
    from segnet.data import build_dataset

    dataset = build_dataset("synthetic", None, "val", count=2, size=(48, 64))
    loaded = load_model(model="segnet_basic", num_classes=dataset.meta.num_classes, meta=dataset.meta)
    loaded.prepare("eager", amp="off")
    result = loaded.evaluate(dataset, bf_mode=None, amp="off", progress=False)
    assert result.metrics["runtime"]["engine"] == "eager"
    assert result.metrics["runtime"]["precision"] == "fp32"


@pytest.mark.parametrize("engine, amp, precision", [
    ("eager", "off", "fp32"), ("winograd", "bf16", "bf16"),
    pytest.param("nnpack", "off", "fp32", marks=pytest.mark.skipif(not nnpack_available(),
                                                                   reason="this torch build has no NNPACK"))])
def test_cli_predict_says_which_engine_ran(engine, amp, precision, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from segnet.cli import main

    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "a.png")
    assert main(["predict", "--model", "segnet_basic", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"),
                 "--engine", engine, "--amp", amp]) == 0
    assert f"engine {engine}, {precision}" in capsys.readouterr().out
