"""Segment images and write what people look at: palette label maps and colour overlays."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..data import DatasetMeta, load_image
from ..files import atomic_path
from .evaluate import predict_labels
from .precision import autocast, resolve_amp


def segment(model: nn.Module, image, normalization: dict, input_size: tuple[int, int] | None = None,
            amp: str = "auto") -> torch.Tensor:
    """Class ids ``(H, W)`` for one image: a ``(3, H, W)`` uint8 tensor, a PIL image or a file path.

    ``amp``: auto (bf16 on CUDA and on CPUs with native bf16), bf16 or off."""
    if isinstance(image, (str, os.PathLike)):
        image = load_image(image)
    elif isinstance(image, Image.Image):
        image = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) uint8 image, got {tuple(image.shape)} {image.dtype}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return predict_labels(model, image[None].to(device), normalization, input_size,
                                  resolve_amp(amp, device))[0].cpu()
    finally:
        model.train(was_training)


def palette_png(labels: np.ndarray, meta: DatasetMeta) -> Image.Image:
    """A palette ("P" mode) PNG whose pixel values are the class ids and whose colours are the dataset's."""
    picture = Image.fromarray(np.asarray(labels, dtype=np.uint8))  # mode L; putpalette makes it P
    table = [meta.ignore_color] * 256
    table[: meta.num_classes] = list(meta.palette)
    picture.putpalette([v for colour in table for v in colour])
    return picture


def overlay(image: np.ndarray, labels: np.ndarray, meta: DatasetMeta, alpha: float = 0.5) -> Image.Image:
    """The image with the class colours blended over it."""
    from ..report import colorize

    blend = (1 - alpha) * image.astype(np.float32) + alpha * colorize(labels, meta).astype(np.float32)
    return Image.fromarray(blend.round().clip(0, 255).astype(np.uint8))


def write_prediction(image: torch.Tensor, labels: torch.Tensor, meta: DatasetMeta, out_dir: str | os.PathLike,
                     stem: str) -> list[Path]:
    """Write ``stem.png`` (label map, values = class ids) and ``stem_overlay.png``; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels_np = labels.cpu().numpy()
    paths = [out / f"{stem}.png", out / f"{stem}_overlay.png"]
    pictures = [palette_png(labels_np, meta), overlay(image.permute(1, 2, 0).cpu().numpy(), labels_np, meta)]
    for path, picture in zip(paths, pictures):
        with atomic_path(path) as tmp:
            picture.save(tmp, format="PNG")
    return paths


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files, folders (their images, sorted) and glob patterns -> a list of paths (missing ones kept,
    so they are reported)."""
    import glob

    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        elif any(ch in item for ch in "*?["):
            paths.extend(sorted(Path(p) for p in glob.glob(item, recursive=True)))
        else:
            paths.append(path)
    return paths


def uncertainty_png(variance: np.ndarray) -> Image.Image:
    """A heat map of per-pixel uncertainty (scaled to its own maximum)."""
    from matplotlib import colormaps

    top = float(variance.max()) or 1.0
    return Image.fromarray((colormaps["inferno"](variance / top)[..., :3] * 255).astype(np.uint8))


def predict_files(model: nn.Module, meta: DatasetMeta, normalization: dict, inputs: list[str], out_dir,
                  input_size: tuple[int, int] | None = None, mc_samples: int = 0, batch_size: int = 4,
                  progress: bool = True, amp: str = "auto") -> tuple[list[Path], list[tuple[str, str]]]:
    """Segment every input image; returns (written files, [(input, why it failed)]).

    Unreadable inputs are reported and skipped; the rest are still processed. Images of
    equal size are batched. With ``mc_samples`` (Bayesian models) the label map is the
    argmax of the mean softmax and ``NAME_uncertainty.png`` shows the per-pixel variance.
    """
    from tqdm import tqdm

    from ..data import DataError
    from ..models import mc_dropout_predict
    from ..models.mc_dropout import has_dropout

    if mc_samples and not has_dropout(model):
        raise ValueError("--mc-samples needs a Bayesian model (with dropout), e.g. bayesian_segnet")
    out = Path(out_dir)
    written: list[Path] = []
    failures: list[tuple[str, str]] = []
    paths = expand_inputs(inputs)
    if not paths:
        raise ValueError(f"no images found in {' '.join(inputs)}")
    device = next(model.parameters()).device
    precision = resolve_amp(amp, device)
    model.eval()
    stems: dict[str, int] = {}
    with tqdm(total=len(paths), desc="segmenting", unit="img", disable=not progress) as bar:
        for first in range(0, len(paths), batch_size):
            loaded = []
            for path in paths[first : first + batch_size]:
                try:
                    loaded.append((path, load_image(path)))
                except (DataError, OSError) as error:
                    failures.append((str(path), str(error)))
                    bar.update(1)
            by_size: dict[tuple, list] = {}
            for path, image in loaded:
                by_size.setdefault(tuple(image.shape), []).append((path, image))
            for group in by_size.values():
                images = torch.stack([image for _, image in group]).to(device)
                variance = None
                with torch.inference_mode():
                    if mc_samples:
                        from .evaluate import normalize_and_resize

                        x, size = normalize_and_resize(images, normalization, input_size)
                        with autocast(precision, device):
                            mean, variance = mc_dropout_predict(model, x, mc_samples)
                        mean, variance = mean.float(), variance.float()
                        if size is not None:
                            mean = torch.nn.functional.interpolate(mean, size=size, mode="bilinear")
                            variance = torch.nn.functional.interpolate(variance[:, None], size=size, mode="bilinear")[:, 0]
                        labels = mean.argmax(1)
                    else:
                        labels = predict_labels(model, images, normalization, input_size, precision)
                for index, (path, image) in enumerate(group):
                    stem = path.stem
                    stems[stem] = stems.get(stem, 0) + 1
                    if stems[stem] > 1:  # two inputs with the same name: keep both
                        stem = f"{stem}_{stems[stem]}"
                    written += write_prediction(image, labels[index], meta, out, stem)
                    if variance is not None:
                        target = out / f"{stem}_uncertainty.png"
                        uncertainty_png(variance[index].cpu().numpy()).save(target)
                        written.append(target)
                    bar.update(1)
    return written, failures
