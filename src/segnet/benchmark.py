"""Inference cost per model: parameters, GFLOPs, latency, throughput, memory, and the
achieved FLOP/s against this machine's measured matrix-multiply peak (same run).

Variants: ``eager`` (the plain model, fp32, no_grad), ``folded`` (BN folded,
inference_mode), ``channels_last`` (folded + channels_last), ``bf16`` (folded +
channels_last + bf16 autocast; a default on CUDA and on CPUs with native bf16), ``compile`` (folded + torch.compile), ``onnxruntime`` (the exported
graph, CPU). Each timing: warm-up, then the median of several repeats.
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from .engine.engines import CPU_ONLY_ENGINES, ENGINES, build_engine, error_summary
from .engine.measure import device_name, measure_training, median_seconds, synchronize
from .engine.precision import autocast, check_device, resolve_amp
from .export.fold import fold_batchnorm
from .models import MODELS, count_parameters, create_model
from .progress import bar_disabled
from .report.tables import TABLE6_COLUMNS, markdown_table, table6_markdown, training_markdown

VARIANTS = ("default", "eager", "folded", "channels_last", "bf16", "compile", "winograd", "nnpack", "onnxruntime",
            "int8")


def run_training_benchmark(models=("segnet_basic", "segnet"), size=(360, 480), crop=(180, 240), device="cpu",
                           batch_size: int = 4, steps: int = 3, num_classes: int = 11, progress: bool = True) -> dict:
    """Training images/s of the real step (``engine.train.train_step``, SGD, channels_last) on
    whole frames and on crops, in fp32 and, where the hardware runs it natively, bf16."""
    device = check_device(device)
    precisions = ("off",) + (("bf16",) if resolve_amp("auto", device) == "bf16" else ())
    shapes = {"whole frames": tuple(size), **({"crops": tuple(crop)} if crop else {})}
    rows = []
    for name in models:
        for label, shape in shapes.items():
            row = {"model": name, "input": label, "size": list(shape)}
            for precision in precisions:
                row["fp32" if precision == "off" else precision] = measure_training(
                    name, num_classes, batch_size, shape, device, steps, precision)
            rows.append(row)
            if progress:
                print(f"  {name}, {label} ({shape[0]}x{shape[1]}): " + ", ".join(
                    f"{key} {row[key]:.2f} img/s" for key in ("fp32", "bf16") if key in row))
    return {"training": True, "device": device_name(device), "batch_size": batch_size, "steps": steps,
            "torch": torch.__version__, "rows": rows}


def matmul_peak_flops(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 2048) -> float:
    """Measured FLOP/s of a square matrix multiply (the practical peak of this device)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    seconds = median_seconds(lambda: a @ b, repeats=5, warmup=2, device=device)
    return 2 * n**3 / seconds


def count_flops(model: nn.Module, size: tuple[int, int]) -> float:
    """FLOPs (2 per multiply-add) of one forward pass on one image, by PyTorch's counter."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, *size))
    return float(counter.get_total_flops())


def _peak_rss_reset() -> None:
    try:  # Linux: "5" resets the peak resident set size of this process
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


_ISOLATED = """
import sys, torch
from pathlib import Path
from segnet.models import create_model
def rss():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
torch.set_num_threads({threads})
base = rss()
model = create_model({name!r}, {classes}).eval()
with torch.no_grad():
    model(torch.rand(1, 3, {height}, {width}))
Path("/proc/self/clear_refs").write_text("5")
with torch.no_grad():
    model(torch.rand(1, 3, {height}, {width}))
peak = [int(l.split()[1]) / 1024 for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM:")][0]
print(peak - base)
"""


def isolated_inference_memory_mb(name: str, size=(360, 480), num_classes: int = 11) -> float | None:
    """Batch-1 CPU inference memory of the plain model, the paper's Table 6 sense: the peak
    resident memory of a fresh process during a forward pass (after one warm-up pass),
    minus what the process held once torch was imported. Weights and activations, without
    the interpreter and torch's own libraries. None where /proc is missing."""
    import subprocess
    import sys

    if not Path("/proc/self/clear_refs").exists():
        return None
    code = _ISOLATED.format(threads=torch.get_num_threads(), name=name, classes=num_classes, height=size[0],
                            width=size[1])
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    return float(result.stdout.strip().splitlines()[-1]) if result.returncode == 0 else None


_ISOLATED_TRAINING = """
import torch
from pathlib import Path
from segnet.models import create_model
def rss():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
torch.set_num_threads({threads})
torch.manual_seed(0)
base = rss()
model = create_model({name!r}, {classes}).train()
optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
x = torch.rand({batch}, 3, {height}, {width})
y = torch.randint(0, {classes}, ({batch}, {height}, {width}))
for _ in range(2):  # the second step holds the momentum buffers too
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
peak = [int(l.split()[1]) / 1024 for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM:")][0]
print(peak - base)
"""

# Table 6 of the paper (360x480, Caffe, a 2015 NVIDIA Titan-class GPU): forward and backward
# ms at batch 1, training memory MB at batch 4, inference memory MB at batch 1, model MB.
PAPER_TABLE6 = {
    "segnet": {"forward_ms": 422.50, "backward_ms": 488.71, "train_memory_mb": 6803, "inference_memory_mb": 1052,
               "model_mb": 117},
    "deeplab_largefov": {"forward_ms": 110.06, "backward_ms": 160.73, "train_memory_mb": 5618,
                         "inference_memory_mb": 1993, "model_mb": 83},
    "fcn8s": {"forward_ms": 317.09, "backward_ms": 484.11, "train_memory_mb": 9735, "inference_memory_mb": 1806,
              "model_mb": 539},
    "deconvnet": {"forward_ms": 474.65, "backward_ms": 602.15, "train_memory_mb": 9731, "inference_memory_mb": 1872,
                  "model_mb": 877},
}


def isolated_training_memory_mb(name: str, size=(360, 480), batch: int = 4, num_classes: int = 11) -> float | None:
    """CPU training memory at ``batch``: a fresh process's peak RSS over two SGD steps
    (weights, gradients, momentum, activations kept for backward) minus its RSS after
    importing torch. None where /proc is missing or the step fails (e.g. out of memory)."""
    import subprocess
    import sys

    if not Path("/proc/self/clear_refs").exists():
        return None
    code = _ISOLATED_TRAINING.format(threads=torch.get_num_threads(), name=name, classes=num_classes, batch=batch,
                                     height=size[0], width=size[1])
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800)
    return float(result.stdout.strip().splitlines()[-1]) if result.returncode == 0 else None


def table6_row(name: str, size=(360, 480), device="cpu", repeats: int = 3, num_classes: int = 11) -> dict:
    """One network's Table 6 columns, measured as the paper did with ``caffe time``: forward
    and backward ms of a training-mode pass at batch 1 (fp32), training memory at batch 4,
    inference memory at batch 1 (both in a fresh process on CPU; CUDA: max allocated), and
    the fp32 model size."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    model = create_model(name, num_classes).to(device).train()
    x = torch.rand(1, 3, *size, device=device)
    y = torch.randint(0, num_classes, (1, *size), device=device)
    forward = median_seconds(lambda: model(x), repeats, 1, device)

    def backward_seconds() -> float:
        loss = nn.functional.cross_entropy(model(x), y)
        synchronize(device)
        start = time.perf_counter()
        loss.backward()
        synchronize(device)
        return time.perf_counter() - start

    backward_seconds()  # warm-up
    backward = statistics.median(backward_seconds() for _ in range(repeats))
    row = {"model": name, "params_m": count_parameters(model) / 1e6, "forward_ms": forward * 1000,
           "backward_ms": backward * 1000,
           "model_mb": sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6}
    if cuda:
        del model
        for batch, key, train in ((4, "train_memory_mb", True), (1, "inference_memory_mb", False)):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            net = create_model(name, num_classes).to(device).train(train)
            xb = torch.rand(batch, 3, *size, device=device)
            if train:
                optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
                for _ in range(2):
                    optimizer.zero_grad()
                    nn.functional.cross_entropy(net(xb), torch.randint(0, num_classes, (batch, *size),
                                                                        device=device)).backward()
                    optimizer.step()
            else:
                with torch.no_grad():
                    net(xb)
            row[key] = torch.cuda.max_memory_allocated(device) / 2**20
            del net
    else:
        row["train_memory_mb"] = isolated_training_memory_mb(name, size, 4, num_classes)
        row["inference_memory_mb"] = isolated_inference_memory_mb(name, size, num_classes)
    return row


def run_table6(models=("segnet", "deeplab_largefov", "fcn8s", "fcn_bilinear", "deconvnet"), size=(360, 480),
               device="cpu", repeats: int = 3, progress: bool = True) -> dict:
    """Table 6 for ``models``, measured in one run, with each column's ratio to SegNet here
    and in the paper."""
    from tqdm import tqdm

    device = check_device(device)
    rows = [table6_row(name, size, device, repeats)
            for name in tqdm(models, desc="table 6", unit="model", disable=bar_disabled(progress))]
    reference = next((row for row in rows if row["model"] == "segnet"), None)
    for row in rows:
        paper = PAPER_TABLE6.get(row["model"])
        row["paper"] = paper
        for column in TABLE6_COLUMNS:
            ours = row.get(column)
            base = reference.get(column) if reference else None
            row[f"{column}_ratio"] = ours / base if ours is not None and base else None
            row[f"{column}_paper_ratio"] = (paper[column] / PAPER_TABLE6["segnet"][column]) if paper else None
    return {"device": device_name(device), "size": list(size), "torch": torch.__version__, "table6": rows}


def _runner(model: nn.Module, variant: str, device: torch.device):
    """A function batch -> output for this variant, or None when it does not apply here.
    ``default`` is what every command runs (engine auto, for open-ended work); ``compile``,
    ``winograd``, ``nnpack``, ``onnxruntime`` and ``int8`` are those engines (``engine.engines``).
    ``model`` stays on the CPU: on a GPU a variant runs a copy, so that its peak memory holds
    its own weights only (before, every variant measured after ``eager`` also held the
    unfolded fp32 model, 118 MB for SegNet)."""
    cuda = device.type == "cuda"
    if device.type != "cpu":
        model = copy.deepcopy(model)
    if variant == "eager":
        model = model.to(device).eval()

        def run(x):
            with torch.no_grad():
                return model(x)
        return run
    if variant in CPU_ONLY_ENGINES and cuda:
        return None
    if variant == "default" or variant in ENGINES:  # the engines (eager, above, runs the model as it is)
        network, runtime = build_engine(model.to(device), "auto" if variant == "default" else variant, "auto", device)
        def run(x):  # the engine's network runs in its own precision
            with torch.inference_mode():
                return network(x)
        run.runtime = runtime
        return run
    folded = fold_batchnorm(model)[0].to(device)  # folded where the model is (the CPU), then moved
    layout = torch.channels_last if variant in ("channels_last", "bf16") else torch.contiguous_format
    folded = folded.to(memory_format=layout)
    precision = "bf16" if variant == "bf16" else "off"

    def run(x):
        with torch.inference_mode(), autocast(precision, device):
            return folded(x.contiguous(memory_format=layout))
    return run


def benchmark_model(name: str, size=(360, 480), device="cpu", variants=("eager", "folded", "channels_last"),
                    batch_sizes=(1, 2, 4), repeats: int = 3, warmup: int = 1, num_classes: int = 11) -> dict:
    """One model's row: params, GFLOPs and, per variant, latency, throughput and peak memory."""
    device = torch.device(device)
    model = create_model(name, num_classes).eval()
    flops = count_flops(model, size)
    row = {"model": name, "params_m": count_parameters(model) / 1e6, "gflops": flops / 1e9,
           "model_mb": sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6, "variants": {},
           "inference_memory_mb": isolated_inference_memory_mb(name, size, num_classes) if device.type == "cpu" else None}
    for variant in variants:
        run = _runner(model, variant, device)
        if run is None:
            continue
        x1 = torch.rand(1, 3, *size, device=device)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        _peak_rss_reset()
        slow_start = variant in ("compile", "default")  # compiling (or building a session) is not the latency
        try:
            latency = median_seconds(lambda: run(x1), repeats, warmup + (2 if slow_start else 0), device)
        except Exception as error:  # noqa: BLE001 -- an ONNX export that this torch cannot do (FCN-8s's
            if variant not in ("onnxruntime", "int8"):  # transposed convolutions with dynamic sizes)
                raise
            row.setdefault("unavailable", {})[variant] = f"{type(error).__name__}: {error_summary(error)}"
            print(f"segnet: {name} {variant}: not measured, the ONNX export failed ({type(error).__name__})",
                  file=sys.stderr)
            continue
        memory = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else _peak_rss_mb())
        throughput = {1: 1 / latency} if 1 in batch_sizes else {}
        for batch in batch_sizes:
            if batch != 1:
                xb = torch.rand(batch, 3, *size, device=device)
                throughput[batch] = batch / median_seconds(lambda: run(xb), repeats, warmup, device)
                # freed now, not when the next variant's batch-1 memory is measured (on a GPU that
                # measurement starts from what is still allocated: 132 MB for 64 frames)
                del xb
        best_batch = max(throughput, key=throughput.get)
        row["variants"][variant] = {
            "latency_ms": latency * 1000, "images_per_s": throughput[best_batch], "best_batch": best_batch,
            "throughput_by_batch": throughput, "peak_memory_mb": memory,
            "achieved_gflops_per_s": flops * throughput[best_batch] / 1e9,
            **({"runs": getattr(run, "runtime")} if hasattr(run, "runtime") else {}),
        }
    return row


def run_benchmark(models=None, size=(360, 480), device="cpu", variants=None, batch_sizes=None, repeats=3,
                  progress=True) -> dict:
    """Benchmark several models; the result holds the machine's matmul peak too."""
    from tqdm import tqdm

    device = check_device(device)
    cuda = device.type == "cuda"
    # bf16 by default where the hardware runs it natively (on an AVX2-only CPU it is emulated, slow)
    variants = variants or (("default", "eager", "folded", "channels_last")
                            + (("bf16",) if resolve_amp("auto", device) == "bf16" else ())
                            + (() if cuda else ("onnxruntime",)))
    batch_sizes = batch_sizes or ((1, 8, 32, 64) if cuda else (1, 2))
    peak = matmul_peak_flops(device, torch.bfloat16 if cuda else torch.float32, 8192 if cuda else 2048)
    rows = [benchmark_model(name, size, device, variants, batch_sizes, repeats)
            for name in tqdm(models or list(MODELS), desc="benchmark", unit="model",
                              disable=bar_disabled(progress))]
    for row in rows:
        for result in row["variants"].values():
            result["fraction_of_matmul_peak"] = result["achieved_gflops_per_s"] * 1e9 / peak
    return {"device": device_name(device), "size": list(size), "matmul_peak_gflops_per_s": peak / 1e9,
            "matmul_dtype": "bf16" if cuda else "fp32", "torch": torch.__version__, "rows": rows}


def write_benchmark(result: dict, path: str | os.PathLike) -> list[Path]:
    """``path`` as Markdown (``.md``) plus the JSON beside it (``.json``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    md, js = path.with_suffix(".md"), path.with_suffix(".json")
    text = (table6_markdown(result) if "table6" in result else training_markdown(result) if "training" in result
            else markdown_table(result))
    md.write_text(text + "\n")
    js.write_text(json.dumps(result, indent=2) + "\n")
    return [md, js]
