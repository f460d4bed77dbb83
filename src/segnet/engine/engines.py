"""Inference engines: the ways a network can run for inference, and the measured rule that
picks one for the machine.

- ``eager``: batch norm folded into the convolutions, weights in channels_last, and where
  the hardware has native bf16 (``resolve_amp``) weights and activations in bf16 (what
  bf16 autocast computes, without its per-call weight casts: 15% faster on AMX), fp32
  elsewhere.
- ``compile``: eager's network under ``torch.compile`` (inductor, frozen weights). Its
  first call compiles (seconds; inductor's on-disk cache makes later processes faster),
  and a compile failure falls back to eager with a one-line notice.
- ``winograd``: eager's bf16 network with its 3x3 convolutions on small feature maps (90x120
  pixels or fewer, 128 channels or more) computed by Winograd F(4x4, 3x3) with bf16 matrix
  multiplies (``engine.winograd``): a quarter of the multiplications, for CPUs whose bf16
  convolutions are already at their dot-product peak (bf16 only; it costs some accuracy,
  measured in docs/performance.md).
- ``nnpack``: eager's folded network in fp32 with its stride-1 convolutions run by NNPACK
  (Winograd and FFT convolutions, built into torch's CPU wheels): fewer multiplications than
  a direct convolution, so faster where fp32 is all the CPU has, and for 7x7 kernels even
  than bf16 on CPUs without AMX (CPU only, fp32 only).
- ``onnxruntime``: the folded network exported to ONNX and run by onnxruntime in fp32
  (CPU only; needs the ``export`` extra).
- ``int8``: that ONNX model quantised statically to int8 (QDQ, per-channel weights),
  calibrated on the first batch it segments (CPU only; it costs accuracy: measure first).

``auto`` (the default everywhere) follows ``choose_engine``; docs/performance.md has the
measurements behind each branch of the rule.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..models.pooling import smallest_input
from . import precision
from .precision import resolve_amp
from .winograd import WinogradConv2d, winograd_fits

ENGINES = ("auto", "eager", "compile", "winograd", "nnpack", "onnxruntime", "int8")
CPU_ONLY_ENGINES = ("winograd", "nnpack", "onnxruntime", "int8")
# engines that run a batch one image after another (NnpackConv2d), so batching gains nothing
ONE_IMAGE_AT_A_TIME = ("nnpack",)
# torch.compile pays only when the images to segment outweigh its start-up: on a 2-core AMX
# Xeon it took 7 to 9 s to compile cold, 4 s with inductor's cache warm, and saved 7 to 33 ms
# per SegNet image over eager in two runs (docs/performance.md)
COMPILE_PAYS_AFTER = 200


def choose_engine(device: str | torch.device, images: int | None = None, flags: list[str] | None = None,
                  model: nn.Module | None = None) -> str:
    """The engine ``auto`` means on ``device`` for ``images`` images (None: open-ended work,
    such as serve or a video). ``flags``: the CPU's flags (default: this machine's).
    ``model``: the network to run (None: one with 3x3 convolutions, such as SegNet).

    CUDA runs eager (folded, channels_last, bf16); an AMX CPU eager too, compiled when the
    work is long enough to repay compiling; AVX-512 bf16 CPUs without AMX run the bf16
    Winograd convolutions (SegNet 1.4-1.5x eager bf16 on a Zen 4 EPYC, at 0.08 mIoU), or,
    where ``fft_pays`` (SegNet-Basic), NNPACK's fp32 FFT convolutions (1.1-1.2x eager bf16
    there, exact to fp32 rounding); AVX2 CPUs without bf16 run NNPACK's fp32 convolutions
    where torch has them (SegNet 1.64x plain fp32 with AVX2 kernels, eager 1.18x); other
    CPUs (unmeasured: ARM, x86 without AVX2) eager in fp32."""
    if torch.device(device).type == "cuda":
        return "eager"
    flags = precision.cpu_description()["flags"] if flags is None else flags
    if "amx_bf16" in flags:
        return "compile" if images is None or images >= COMPILE_PAYS_AFTER else "eager"
    if "avx512_bf16" in flags:
        if model is not None and nnpack_available() and fft_pays(model):
            return "nnpack"
        return "winograd"
    if "avx2" in flags and nnpack_available():
        return "nnpack"
    return "eager"


def fft_pays(model: nn.Module) -> bool:
    """Whether NNPACK's fp32 FFT convolutions beat oneDNN's bf16 ones for ``model`` on an
    AVX-512 bf16 CPU without AMX: it has a wide large-kernel convolution (one ``nnpack_fits``,
    kernel over 3, 64 channels or more in) on the full-resolution map, and nothing ``WinogradConv2d``
    replaces. There the FFT runs SegNet-Basic's 7x7 64->64 layer at 360x480 in 77 ms against
    151 and the network 1.1-1.2x eager bf16 (also its Bayesian and encoder-addition
    variants); in the variants without that layer (depthwise decoders, FCN-Basic) the rest,
    slower in fp32, made it 1.5-2.4x slower (2-core Zen 4 EPYC, docs/performance.md). Read
    from one forward pass of a small blank image (in eval mode; the model is left as it was)."""
    convolutions = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convolutions or any(winograd_fits(c) for c in convolutions):
        return False
    size = max(64, smallest_input(model))
    full_resolution = []

    def record(layer: nn.Module, inputs: tuple) -> None:
        if (inputs[0].shape[-2:] == (size, size) and nnpack_fits(layer) and max(layer.kernel_size) > 3
                and layer.in_channels >= 64):
            full_resolution.append(layer)

    hooks = [c.register_forward_pre_hook(record) for c in convolutions]
    modes = {module: module.training for module in model.modules()}
    try:
        with torch.inference_mode():
            model.eval()(torch.zeros(1, convolutions[0].in_channels, size, size, device=convolutions[0].weight.device))
    finally:
        for module, training in modes.items():
            module.training = training
        for hook in hooks:
            hook.remove()
    return bool(full_resolution)


def nnpack_available() -> bool:
    """Whether torch was built with NNPACK and it runs on this CPU (the call also initialises
    it: NNPACK's convolutions fail until it has been made once)."""
    return hasattr(torch, "_nnpack_spatial_convolution") and torch._nnpack_available()


def build_engine(model: nn.Module, engine: str, amp: str, device: str | torch.device,
                 images: int | None = None, flags: list[str] | None = None,
                 normalization: dict | None = None) -> tuple[nn.Module, dict]:
    """``(network, runtime)``: an eval-mode network that runs ``model`` the way ``engine``
    says, and ``{"engine", "precision"}`` naming what it runs (the engine ``auto`` chose).
    The network takes fp32 images and runs in its own precision (no autocast around it); its
    logits are fp32 or bf16.
    ``normalization``: the model's input normalisation (the ONNX engines check their export
    on images normalised like the real ones)."""
    from ..export.fold import fold_batchnorm

    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    device = torch.device(device)
    precision = resolve_amp(amp, device)
    if engine == "auto":
        engine = choose_engine(device, images, flags, model)
        # auto's pick runs in one precision: another precision asked for (--amp) runs eager
        if (engine == "winograd" and precision != "bf16") or (engine == "nnpack" and amp == "bf16"):
            engine = "eager"
    if engine in CPU_ONLY_ENGINES and device.type != "cpu":
        raise ValueError(f"--engine {engine} runs on the CPU only; use --device cpu, or --engine eager on {device}")
    if engine == "winograd" and precision != "bf16":
        raise ValueError("--engine winograd runs in bf16 only, and this CPU has no native bf16 (or --amp off was "
                         "asked for); use --engine eager, or nnpack for fast fp32 on AVX2 CPUs")
    if engine == "nnpack" and amp == "bf16":
        raise ValueError("--engine nnpack runs in fp32 only; leave --amp at auto or off, or use --engine eager "
                         "for bf16")
    if engine == "nnpack" and not nnpack_available():
        raise ValueError("--engine nnpack: this torch build has no NNPACK (or it cannot run on this CPU); use "
                         "--engine eager")
    folded = fold_batchnorm(model)[0].eval()
    if engine == "nnpack":
        return nnpack_network(folded), {"engine": "nnpack", "precision": "fp32"}
    if engine in ("onnxruntime", "int8"):
        network = OnnxRuntimeNetwork(folded, quantize=engine == "int8", normalization=normalization)
        return network, {"engine": engine, "precision": "int8" if engine == "int8" else "fp32"}
    folded = folded.to(memory_format=torch.channels_last)
    if engine == "winograd":
        folded = replace_layers(folded, lambda layer: WinogradConv2d(layer, torch.bfloat16)
                                if winograd_fits(layer) else None)
    if precision == "bf16":
        folded = Bf16Network(folded)
    if engine == "compile":
        folded = CompiledNetwork(folded)
    return folded, {"engine": engine, "precision": "bf16" if precision == "bf16" else "fp32"}


def error_summary(error: BaseException) -> str:
    """The first line of an error's message (compilers and exporters print pages), or its type."""
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


class Bf16Network(nn.Module):
    """A network with its weights in bf16, run on its input cast to bf16: the arithmetic of
    bf16 autocast for a folded network (convolutions, ReLU, pooling and unpooling in bf16)
    without autocast casting every weight on every call (SegNet on a 2-core AMX Xeon: 143 ms
    against 178 under autocast, the same labels; docs/performance.md)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        replace_layers(network, lambda layer: _InFloat32(layer) if isinstance(layer, FP32_ONLY) else None)
        self.network = network.to(torch.bfloat16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x.to(torch.bfloat16))


# layers with no bf16 kernel on the CPU (LocalResponseNorm's avg_pool3d); bf16 autocast
# leaves them in fp32 too
FP32_ONLY = (nn.LocalResponseNorm,)


class _InFloat32(nn.Module):
    """Runs a layer in fp32 inside a bf16 network, and hands its output back in bf16."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.float()).to(x.dtype)


def replace_layers(network: nn.Module, replacement) -> nn.Module:
    """``network`` with every layer for which ``replacement(layer)`` returns a module swapped
    for that module (in place; a replacement that wraps its layer is not visited again)."""
    for module in list(network.modules()):
        for name, child in module.named_children():
            new = replacement(child)
            if new is not None:
                setattr(module, name, new)
    return network


def nnpack_fits(layer: nn.Module) -> bool:
    """Whether ``layer`` is a convolution NNPACK can run: stride 1, no dilation, no groups,
    zero padding given in pixels (DeepLab's dilated and FCN's strided ones are not)."""
    return (type(layer) is nn.Conv2d and layer.stride == (1, 1) and layer.dilation == (1, 1)
            and layer.groups == 1 and layer.padding_mode == "zeros" and not isinstance(layer.padding, str))


def nnpack_network(network: nn.Module) -> nn.Module:
    """``network`` (eval mode, contiguous) with every convolution ``nnpack_fits`` replaced by
    an ``NnpackConv2d``; the others stay with oneDNN."""
    return replace_layers(network, lambda layer: NnpackConv2d(layer) if nnpack_fits(layer) else None)


class NnpackConv2d(nn.Module):
    """A convolution computed by NNPACK (``torch._nnpack_spatial_convolution``: Winograd for
    3x3 kernels, FFT for larger ones), for inference: on SegNet's layers 2 to 3 times
    oneDNN's fp32 direct convolution, 4.7 times for SegNet-Basic's 7x7 (docs/performance.md),
    with fp32 rounding differences of about 1e-6 of the output's scale."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.weight = nn.Parameter(conv.weight.detach().contiguous(), requires_grad=False)
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(conv.out_channels)
        self.bias = nn.Parameter(bias, requires_grad=False)
        self.padding = list(conv.padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # image by image: NNPACK's batched algorithm took 1.2 to 3 times as long per image as its
        # one-image one on SegNet's layers (2 images, 2-core EPYC), and a batch of two served
        # slower than two single images
        x = x.float().contiguous()
        if len(x) == 1:  # no torch.cat: for one image it would only copy the output
            return torch._nnpack_spatial_convolution(x, self.weight, self.bias, self.padding)
        return torch.cat([torch._nnpack_spatial_convolution(image, self.weight, self.bias, self.padding)
                          for image in x.split(1)])


class CompiledNetwork(nn.Module):
    """``torch.compile`` of a network, or the network itself once compiling has failed."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.compiled = torch.compile(network)
        self.failed = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.failed:
            try:
                with torch._inductor.config.patch(freezing=True):
                    return self.compiled(x)
            except Exception as error:  # any compiler failure: the eager network gives the same answer
                self.failed = True
                reason = error_summary(error)
                print(f"segnet: torch.compile failed ({type(error).__name__}: {reason}); running eager instead",
                      file=sys.stderr)
        return self.network(x)


class OnnxRuntimeNetwork(nn.Module):
    """A folded network exported to ONNX and run by onnxruntime on the CPU (``quantize``:
    int8, calibrated on the first batch it is given). Built on the first call."""

    def __init__(self, network: nn.Module, quantize: bool = False, normalization: dict | None = None) -> None:
        super().__init__()
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise ValueError("--engine onnxruntime/int8 needs onnxruntime: pip install 'segnet[export]'") from None
        self.network = network
        self.quantize = quantize
        self.normalization = normalization
        self.session = None

    def _build(self, x: torch.Tensor) -> None:
        import onnxruntime

        from ..export import export_onnx
        from ..export.onnx import ParityError

        size = tuple(x.shape[-2:])
        # the session holds the model once built: nothing is left on disk, built or failed
        with tempfile.TemporaryDirectory(prefix="segnet-ort-") as folder:
            path = Path(folder) / "fp32.onnx"
            try:
                export_onnx(self.network.float().cpu(), path, sizes=[size], normalization=self.normalization)
            except ParityError as error:  # onnxruntime would not give PyTorch's answers: say what still runs
                engine = "int8" if self.quantize else "onnxruntime"
                raise ParityError(f"--engine {engine}: {str(error).removesuffix('; the file was not written')}; "
                                  "--engine eager (or auto, the default) runs this model in PyTorch") from None
            if self.quantize:
                from ..export.quantize import quantize_onnx

                path = quantize_onnx(path, Path(folder) / "int8.onnx", x.float().cpu().numpy())
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.session is None:
            self._build(x)
        image = np.ascontiguousarray(x.float().cpu().numpy())
        return torch.from_numpy(self.session.run(None, {"image": image})[0])
