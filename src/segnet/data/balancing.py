"""Class balancing: median frequency balancing (the paper's), its square root, or none ("natural")."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable

import torch
from tqdm import tqdm

from ..files import write_json
from ..progress import bar_disabled

# median_frequency: the paper's weights; median_frequency_sqrt: their square roots, a softer
# pull towards rare classes (for fine-tuning a model that MFB made over-predict thin classes);
# natural: every class weighs 1.
BALANCING_MODES = ("median_frequency", "median_frequency_sqrt", "natural")


def class_pixel_counts(labels: Iterable[torch.Tensor], num_classes: int, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class: pixels of that class, and total pixels of the images in which it appears.

    "Total pixels" counts every pixel of the image, void included, as the definition reads.
    """
    class_pixels = torch.zeros(num_classes, dtype=torch.float64)
    image_pixels = torch.zeros(num_classes, dtype=torch.float64)
    for label in labels:
        valid = label[label != ignore_index].flatten().long()
        counts = torch.bincount(valid, minlength=num_classes)[:num_classes].double()
        class_pixels += counts
        image_pixels += (counts > 0).double() * label.numel()
    return class_pixels, image_pixels


def median_frequency_weights(class_pixels: torch.Tensor, image_pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """freq(c) = class_pixels(c) / image_pixels(c); weight(c) = median(freq) / freq(c).

    The median is taken over the classes that occur in the data; a class that never occurs
    gets weight 0 (it has no pixels to weigh). Returns ``(freq, weights)``.
    """
    present = image_pixels > 0
    freq = torch.where(present, class_pixels / image_pixels.clamp(min=1), torch.zeros_like(class_pixels))
    if not present.any():
        raise ValueError("no labelled pixels: cannot compute class weights")
    median = freq[present].quantile(0.5)  # the mean of the middle two for an even count
    weights = torch.where(present, median / freq.clamp(min=1e-12), torch.zeros_like(freq))
    return freq, weights


def dataset_labels(dataset, progress: bool = True) -> Iterable[torch.Tensor]:
    """The untransformed label maps of a dataset, one by one."""
    for index in tqdm(range(len(dataset)), desc="counting classes", unit="img",
                      disable=bar_disabled(progress), leave=False):
        yield dataset.load(index)[1]


def _read_cache(path: Path, num_classes: int) -> dict:
    """A class-weight cache written by ``compute_class_weights``; ValueError naming the file
    when it is something else (it is then the user's, and is neither used nor replaced)."""
    remedy = "remove it, or give --cache a new file name"
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        reason = error.strerror if isinstance(error, OSError) else f"not JSON: {error}"
        raise ValueError(f"{path}: cannot be read as a class-weight cache ({reason}); {remedy}") from None
    fields = ("dataset", "samples", "mode", "class_names", "frequency", "weights")
    if not isinstance(cached, dict) or not all(key in cached for key in fields):
        raise ValueError(f"{path}: is not a class-weight cache written by segnet (it lacks "
                         f"{', '.join(key for key in fields if not isinstance(cached, dict) or key not in cached)}); "
                         f"{remedy}")
    weights = cached["weights"]
    if (not isinstance(weights, list) or len(weights) != num_classes
            or not all(isinstance(w, (int, float)) and math.isfinite(w) and w >= 0 for w in weights)):
        raise ValueError(f"{path}: its weights are not {num_classes} finite non-negative numbers; {remedy}")
    return cached


def compute_class_weights(
    dataset, mode: str = "median_frequency", cache: str | Path | None = None, progress: bool = True
) -> dict:
    """Class weights for the loss as ``{"mode", "class_names", "frequency", "weights"}``.

    ``mode`` is one of ``BALANCING_MODES``: ``"median_frequency"``, ``"median_frequency_sqrt"``
    (the square roots of the median-frequency weights) or ``"natural"`` (all ones). With ``cache``, a JSON
    file is reused when it was computed for the same dataset, split size and mode.
    """
    meta = dataset.meta
    if mode not in BALANCING_MODES:
        raise ValueError(f"unknown class balancing {mode!r}; use one of {', '.join(BALANCING_MODES)}")
    key = {"dataset": meta.name, "samples": len(dataset), "mode": mode, "class_names": list(meta.class_names)}
    cached = _read_cache(Path(cache), meta.num_classes) if cache is not None and Path(cache).exists() else None
    if cached is not None and all(cached.get(k) == v for k, v in key.items()):
        return cached
    if mode == "natural":
        freq = torch.zeros(meta.num_classes, dtype=torch.float64)
        weights = torch.ones(meta.num_classes, dtype=torch.float64)
    else:
        class_pixels, image_pixels = class_pixel_counts(dataset_labels(dataset, progress), meta.num_classes, meta.ignore_index)
        freq, weights = median_frequency_weights(class_pixels, image_pixels)
        if mode == "median_frequency_sqrt":
            weights = weights.sqrt()
    result = {**key, "frequency": freq.tolist(), "weights": weights.tolist()}
    if cache is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        write_json(cache, result)
    return result
