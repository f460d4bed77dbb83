"""Measuring time on any device: the helpers the benchmark and the budget planner share.

Timings wait for a GPU's queued work before they stop (``synchronize``); a training step is
measured by running the real one (``engine.train.train_step``) on random data.
"""

from __future__ import annotations

import statistics
import time

import torch

from ..models import create_model
from . import precision
from .precision import autocast, avoid_amx_bias_crash, resolve_amp
from .train import train_step


def synchronize(device: torch.device) -> None:
    """Wait for the GPU's queued work (timings must not stop before it is done)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(run, repeats: int, warmup: int, device) -> float:
    """Median wall seconds of ``run()`` over ``repeats`` calls, after ``warmup`` calls."""
    for _ in range(warmup):
        run()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def training_step(model_name: str, num_classes: int, batch: int, shape: tuple[int, int], device: torch.device,
                   amp: str = "auto", channels_last: bool = True):
    """A function running one real training step (``engine.train.train_step`` and SGD) of a
    fresh model on a random batch."""
    torch.manual_seed(0)
    model = create_model(model_name, num_classes).to(device).train()
    precision = resolve_amp(amp, device)
    avoid_amx_bias_crash(model, precision, device)  # as training does
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    images = torch.randn(batch, 3, *shape, device=device)
    labels = torch.randint(0, num_classes, (batch, *shape), device=device)
    weights = torch.ones(num_classes, device=device)

    def step() -> None:
        train_step(model, images, labels, weights, -1, "valid_pixels", 1, 1, lambda: autocast(precision, device),
                   channels_last)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def measure_training(model_name: str, num_classes: int, batch: int, shape: tuple[int, int], device: torch.device,
                     steps: int, amp: str = "auto", channels_last: bool = True) -> float:
    """Images/s of the real training step on random data, after one warm-up step."""
    step = training_step(model_name, num_classes, batch, shape, device, amp, channels_last)
    step()  # warm-up: allocator, oneDNN/cuDNN plans
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return steps * batch / (time.perf_counter() - start)


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model with its vector flags and torch's thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = precision.cpu_description()
    return f"{cpu['model']} ({' '.join(cpu['flags'])}), {torch.get_num_threads()} threads"
