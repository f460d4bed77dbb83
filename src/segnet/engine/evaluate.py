"""Run a model over a split and compute the paper's metrics: G, C, mIoU, weighted IoU, BF."""

from __future__ import annotations

import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data import DatasetMeta, normalize
from ..metrics import BoundaryF1, ConfusionMatrix, confusion_matrix, scores_from_confusion
from ..progress import bar_disabled
from .precision import autocast, precision_record, resolve_amp
from .tta import TestTimeAugmentation, augmented_logits


@dataclass
class Evaluation:
    """What an evaluation produced: ``metrics`` (the metrics.json content), the confusion
    matrix, one row per image, and a few ``(image, target, prediction)`` samples to show."""

    metrics: dict
    confusion: torch.Tensor
    images: list[dict]
    meta: DatasetMeta
    samples: list[tuple[np.ndarray, np.ndarray, np.ndarray, str]] = field(default_factory=list)


def cpu_workers() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def normalize_and_resize(images: torch.Tensor, normalization: dict, input_size: tuple[int, int] | None = None):
    """uint8 images -> (network input, original size to resize outputs back to, or None)."""
    x = normalize(images, normalization["mean"], normalization["std"])
    size = tuple(images.shape[-2:])
    if input_size is None or tuple(input_size) == size:
        return x, None
    x = torch.nn.functional.interpolate(x, size=tuple(input_size), mode="bilinear", antialias=True, align_corners=False)
    return x, size


def predict_logits(model: nn.Module, images: torch.Tensor, normalization: dict,
                   input_size: tuple[int, int] | None = None, precision: str = "off",
                   tta: TestTimeAugmentation | None = None) -> torch.Tensor:
    """uint8 ``(N, 3, H, W)`` on the model's device -> fp32 logits ``(N, K, H, W)``.

    With ``input_size`` the images are resized to it for the network (a model trained at
    reduced size) and the logits resized back, so scores are always at full resolution.
    ``precision``: ``"bf16"`` runs the network under bf16 autocast (see ``resolve_amp``).
    ``tta``: average over these views (``engine.tta``; the logits are then log probabilities).
    """
    x, size = normalize_and_resize(images, normalization, input_size)
    if tta is not None:
        logits = augmented_logits(model, x, tta, precision)
    else:
        with autocast(precision, x.device):
            logits = model(x).float()
    if size is None:
        return logits
    return torch.nn.functional.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def predict_labels(model: nn.Module, images: torch.Tensor, normalization: dict,
                   input_size: tuple[int, int] | None = None, precision: str = "off",
                   tta: TestTimeAugmentation | None = None) -> torch.Tensor:
    """uint8 ``(N, 3, H, W)`` on the model's device -> ``(N, H, W)`` class ids."""
    return predict_logits(model, images, normalization, input_size, precision, tta).argmax(1)


def _batches(dataset, batch_size: int, num_workers: int):
    """Batches of ``(indices, images, labels)``; images of different sizes go in separate batches."""
    loader = DataLoader(range(len(dataset)), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=lambda indices: [(i, *dataset.load(i)) for i in indices])
    for items in loader:
        groups: dict[tuple, list] = {}
        for index, image, label in items:
            groups.setdefault(tuple(image.shape), []).append((index, image, label))
        for group in groups.values():
            indices, images, labels = zip(*group)
            yield list(indices), torch.stack(images), torch.stack(labels)


def evaluate(
    model: nn.Module,
    dataset,
    normalization: dict,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 4,
    bf_mode: str | None = "exact",
    bf_void: str = "raw",
    bf_workers: int | None = None,
    num_samples: int = 6,
    loader_workers: int = 0,
    input_size: tuple[int, int] | None = None,
    amp: str = "auto",
    tta: TestTimeAugmentation | None = None,
    progress: bool = True,
) -> Evaluation:
    """Evaluate ``model`` on every image of ``dataset`` (untransformed, full size).

    The confusion matrix is accumulated on ``device``; BF (``bf_mode`` ``exact`` or
    ``fast``, ``None`` to skip) is scored in ``bf_workers`` background processes (default:
    one per core; 0 scores in this process) while the model runs on the next batch.
    ``bf_void``: how BF treats ground-truth void (``mask``, ``drop`` or ``raw``; see
    ``segnet.metrics.boundary``).
    ``input_size``: run the network at this size (see ``predict_logits``). ``amp``: auto
    (bf16 on CUDA and on CPUs with native bf16), bf16 or off; metrics.json records what ran.
    ``tta``: test-time augmentation (``engine.tta``; None: off), recorded in metrics.json.
    """
    meta = dataset.meta
    if len(dataset) == 0:
        raise ValueError(f"the {meta.name} split to evaluate has no images")
    device = torch.device(device)
    precision = resolve_amp(amp, device)
    was_training = model.training
    model.eval().to(device)
    confusion = ConfusionMatrix(meta.num_classes, meta.ignore_index)
    pool = _bf_pool(cpu_workers() if bf_workers is None else bf_workers) if bf_mode and len(dataset) > 1 else None
    boundary = BoundaryF1(meta.num_classes, meta.ignore_index, bf_mode, executor=pool,
                          void=bf_void) if bf_mode else None
    show = set(np.linspace(0, len(dataset) - 1, min(num_samples, len(dataset))).round().astype(int).tolist())
    rows, samples = [], []
    start = time.perf_counter()
    try:
        with torch.inference_mode(), tqdm(total=len(dataset), desc="evaluating", unit="img",
                                               disable=bar_disabled(progress)) as bar:
            for indices, images, labels in _batches(dataset, batch_size, loader_workers):
                images, labels = images.to(device), labels.to(device)
                preds = predict_labels(model, images, normalization, input_size, precision, tta)
                confusion.update(preds, labels)
                if boundary is not None:
                    boundary.update(preds, labels)
                for index, pred, label, image in zip(indices, preds, labels, images):
                    scores = scores_from_confusion(confusion_matrix(pred, label, meta.num_classes, meta.ignore_index))
                    rows.append({"index": index, "name": dataset.name_of(index),
                                 "global_accuracy": scores["global_accuracy"], "mean_accuracy": scores["mean_accuracy"],
                                 "mean_iou": scores["mean_iou"], "pixels": scores["pixels"]})
                    if index in show:
                        samples.append((image.permute(1, 2, 0).cpu().numpy(), label.cpu().numpy(), pred.cpu().numpy(),
                                        dataset.name_of(index)))
                bar.update(len(indices))
            bf = boundary.compute() if boundary is not None else None
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        model.train(was_training)
    seconds = time.perf_counter() - start
    if boundary is not None:
        for row, score in zip(rows, boundary.image_scores):
            row["bf_score"] = score
    metrics = _summary(confusion, bf, meta, len(rows), bf_mode, bf_void, seconds, input_size,
                       {**precision_record(precision, device), "tta": tta.describe() if tta else "off"})
    return Evaluation(_finite_or_none(metrics), confusion.matrix.cpu(), _finite_or_none(rows), meta, samples)


def _bf_pool(workers: int) -> ProcessPoolExecutor | None:
    """Background processes that score BF while the model runs (None: score in this process)."""
    if workers <= 0:
        return None
    methods = multiprocessing.get_all_start_methods()
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork" if "fork" in methods else None))


def _summary(confusion: ConfusionMatrix, bf: dict | None, meta: DatasetMeta, images: int, bf_mode, bf_void: str,
             seconds: float, input_size, runtime: dict) -> dict:
    """metrics.json's content: the split's scores, per class, and how they were measured."""
    scores = confusion.compute()
    return {
        "dataset": meta.name,
        "images": images,
        "pixels": scores["pixels"],
        "global_accuracy": scores["global_accuracy"],
        "mean_accuracy": scores["mean_accuracy"],
        "mean_iou": scores["mean_iou"],
        "weighted_iou": scores["weighted_iou"],
        "mean_bf_score": bf["mean_bf_score"] if bf else None,
        "bf_mode": bf_mode,
        "bf_void": bf_void if bf_mode else None,
        "bf_images": bf["bf_images"] if bf else 0,
        "seconds": round(seconds, 2),
        "input_size": list(input_size) if input_size else None,
        "runtime": runtime,
        "classes": [
            {"name": name, "accuracy": scores["class_accuracy"][c], "iou": scores["class_iou"][c],
             "bf_score": bf["class_bf_score"][c] if bf else None,
             "pixels": int(confusion.matrix[c].sum()), "predicted_pixels": int(confusion.matrix[:, c].sum())}
            for c, name in enumerate(meta.class_names)
        ],
    }


def _finite_or_none(value):
    """NaN (an undefined score) becomes None, which JSON and CSV can hold."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value
