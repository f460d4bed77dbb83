"""Where and in which arithmetic to run: a checked device, and bf16 autocast where the
hardware does it natively, fp32 elsewhere.

``amp`` is one of ``auto`` (bf16 on CUDA and on CPUs with native bf16 instructions,
fp32 elsewhere), ``bf16`` (always) or ``off`` (fp32). On a CPU with only AVX2, bf16 is
emulated and slower than fp32, so ``auto`` must follow the hardware.
"""

from __future__ import annotations

import os
import platform
from contextlib import nullcontext
from functools import lru_cache

import torch
from torch import nn

AMP_CHOICES = ("auto", "bf16", "off")
# CPU instruction-set extensions that decide bf16/int8 speed; recorded with every measurement
CPU_FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


# SEGNET_CPU_FLAGS=avx2 (comma-separated, among CPU_FLAGS_OF_INTEREST; empty for none) makes every
# rule that follows the CPU (amp auto, the inference engine auto) act as on a CPU with only those
# flags: how benchmarks/engines.py --emulate-avx2 reaches the rules, child processes included.
CPU_FLAGS_OVERRIDE = "SEGNET_CPU_FLAGS"


@lru_cache(maxsize=1)
def cpu_description() -> dict:
    """``{"model": ..., "flags": [...]}``: the CPU's name and its flags among ``CPU_FLAGS_OF_INTEREST``
    (those in ``$SEGNET_CPU_FLAGS`` instead when it is set; the name then says so)."""
    model, flags = None, set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model is None:
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:  # not Linux: fall back to what PyTorch detected
        capability = torch.backends.cpu.get_cpu_capability().lower()
        flags = {"avx2"} | ({"avx512f"} if "avx512" in capability else set())
    model = model or platform.processor() or platform.machine()
    override = os.environ.get(CPU_FLAGS_OVERRIDE)
    if override is not None:
        flags = {flag.strip() for flag in override.split(",") if flag.strip()}
        unknown = sorted(flags - set(CPU_FLAGS_OF_INTEREST))
        if unknown:
            raise ValueError(f"{CPU_FLAGS_OVERRIDE}={override!r}: unknown flag(s) {', '.join(unknown)}; "
                             f"use a comma-separated list of {', '.join(CPU_FLAGS_OF_INTEREST)}, or unset it")
        model += f" (flags from {CPU_FLAGS_OVERRIDE})"
    return {"model": model, "flags": [f for f in CPU_FLAGS_OF_INTEREST if f in flags]}


def cpu_has_native_bf16() -> bool:
    """True when the CPU executes bf16 arithmetic natively (AVX512-BF16 or AMX)."""
    return any(flag in cpu_description()["flags"] for flag in NATIVE_BF16_FLAGS)


def check_device(name: str | torch.device) -> torch.device:
    """``name`` as a device this machine has; ValueError naming the real problem otherwise
    (an unknown name, no CUDA, a GPU index beyond the GPUs present). ``auto``: the first
    GPU when there is one, else the CPU (the default rule of every command)."""
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device {name!r} is not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: this machine has no usable CUDA GPU (torch {torch.__version__}, "
                             f"CUDA build {torch.version.cuda or 'none'}); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: there are only {torch.cuda.device_count()} GPU(s) "
                             f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    elif device.type != "cpu":
        raise ValueError(f"--device {name}: segnet runs on cpu or cuda, not {device.type}")
    return device


def resolve_amp(amp: str | bool | None, device: str | torch.device) -> str:
    """``"bf16"`` or ``"off"``: what ``amp`` means on ``device``. ``True``/``False`` (older
    configurations) read as ``auto``/``off``."""
    if amp is True or amp is None:
        amp = "auto"
    elif amp is False:
        amp = "off"
    if amp not in AMP_CHOICES:
        raise ValueError(f"amp must be one of {', '.join(AMP_CHOICES)}, not {amp!r}")
    if amp != "auto":
        return amp
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "off"


def autocast(precision: str, device: str | torch.device):
    """A fresh context manager: bf16 autocast for ``precision == "bf16"``, else nothing."""
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return nullcontext()


def precision_record(precision: str, device: str | torch.device) -> dict:
    """What a run or a measurement used, for config.json / metrics.json."""
    device = torch.device(device)
    record = {"precision": precision, "device": str(device)}
    if device.type == "cuda":
        record["gpu"] = torch.cuda.get_device_name(device)
    else:
        record["cpu"] = cpu_description()
        record["threads"] = torch.get_num_threads()
    return record


class _BiasAfterConv2d(nn.Conv2d):
    """A Conv2d that adds its bias after the convolution instead of inside it: the same
    parameters and state dict, the same sum up to rounding."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        out = super()._conv_forward(input, weight, None)
        return out if bias is None else out + bias.to(out.dtype).view(1, -1, 1, 1)


def avoid_amx_bias_crash(model: nn.Module, precision: str, device: str | torch.device,
                         flags: list[str] | None = None) -> list[str]:
    """Work around a heap corruption in bf16 training on AMX CPUs; returns the layers changed.

    oneDNN's bf16 backward of a convolution with a bias, many input channels and an output
    channel count that is not a multiple of 16 corrupts memory on AMX (torch 2.14.1; FCN's
    4096 -> 11 score layer kills the process in 2 runs of 3; docs/amx-bf16-conv-bias-crash.md).
    On such a CPU (``flags``: its flags, default this machine's), in bf16, every such
    convolution adds its bias itself, which never reaches that kernel."""
    if precision != "bf16" or torch.device(device).type != "cpu":
        return []
    if "amx_bf16" not in (cpu_description()["flags"] if flags is None else flags):
        return []
    changed = []
    for name, module in model.named_modules():
        if type(module) is nn.Conv2d and module.bias is not None and module.out_channels % 16:
            module.__class__ = _BiasAfterConv2d
            changed.append(name)
    return changed
