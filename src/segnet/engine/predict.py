"""Segment images and write what people look at: palette label maps and colour overlays."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..data import DatasetMeta, load_image
from ..data.datasets import IMAGE_SUFFIXES
from ..files import atomic_path
from ..progress import bar_disabled
from .evaluate import predict_labels
from .precision import autocast, resolve_amp
from .video import VIDEO_SUFFIXES, is_video, segment_video

if TYPE_CHECKING:  # a type only: inference imports this module
    from .inference import LoadedModel


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




def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files, folders (their images, sorted) and glob patterns -> a list of paths (missing ones kept,
    so they are reported)."""
    import glob

    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in set(IMAGE_SUFFIXES) | VIDEO_SUFFIXES))
        elif any(ch in item for ch in "*?["):
            paths.extend(sorted(Path(p) for p in glob.glob(item, recursive=True)))
        else:
            paths.append(path)
    return paths


OUTPUT_SUFFIXES = ("", "_overlay", "_uncertainty")  # NAME.png, NAME_overlay.png, NAME_uncertainty.png


def output_stems(paths: list[Path]) -> list[str]:
    """A unique output name per input, in input order, whatever the input names are.

    An input keeps its file's stem when no other input has it; inputs that share a stem
    are named ``FOLDER__STEM`` after their folder; a counter settles what is still
    taken. No two inputs' files (NAME.png, NAME_overlay.png, NAME_uncertainty.png) coincide.
    """
    import re
    from collections import Counter

    shared = Counter(p.stem for p in paths)
    files: set[str] = set()
    stems = []
    for path in paths:
        base = path.stem if shared[path.stem] == 1 else "__".join(
            re.sub(r"[^\w.-]+", "_", part) for part in (path.resolve().parent.name or "root", path.stem))
        stem, count = base, 1
        while any(f"{stem}{suffix}" in files for suffix in OUTPUT_SUFFIXES):
            count += 1
            stem = f"{base}__{count}"
        files.update(f"{stem}{suffix}" for suffix in OUTPUT_SUFFIXES)
        stems.append(stem)
    return stems


def uncertainty_png(variance: np.ndarray) -> Image.Image:
    """A heat map of per-pixel uncertainty (scaled to its own maximum)."""
    from matplotlib import colormaps

    top = float(variance.max()) or 1.0
    return Image.fromarray((colormaps["inferno"](variance / top)[..., :3] * 255).astype(np.uint8))


def predict_files(loaded: LoadedModel, inputs: list[str], out_dir, mc_samples: int = 0, batch_size: int = 4,
                  progress: bool = True, amp: str = "auto", video_labels: bool = False,
                  smooth: float = 0.0) -> tuple[list[Path], list[tuple[str, str]]]:
    """Segment every input image and video with ``loaded`` (``engine.inference.load_model``);
    returns (written files, [(input, why it failed)]).

    Videos (``is_video``) go through ``segment_video``: ``NAME_overlay.mp4``, with
    ``video_labels`` a ``NAME_labels/`` folder of per-frame label maps, and ``smooth`` the
    temporal smoothing of class probabilities (0: off).

    Every per-image failure (unreadable, too small for the network, ...) is reported with
    its file and skipped; the rest are still processed. Images of equal size are batched.
    Output names are unique (``output_stems``). With ``mc_samples`` (Bayesian models) the
    label map is the argmax of the mean softmax and ``NAME_uncertainty.png`` shows the
    per-pixel variance.
    """
    from tqdm import tqdm

    from ..data import DataError
    from ..models.mc_dropout import has_dropout

    model, meta, normalization, input_size = loaded.model, loaded.meta, loaded.normalization, loaded.input_size
    if mc_samples and not has_dropout(model):
        raise ValueError("--mc-samples needs a Bayesian model (with dropout), e.g. bayesian_segnet")
    out = Path(out_dir)
    written: list[Path] = []
    failures: list[tuple[str, str]] = []
    paths = expand_inputs(inputs)
    if not paths:
        raise ValueError(f"no images found in {' '.join(inputs)}")
    stems = output_stems(paths)  # by position: the same file may be given twice
    device = next(model.parameters()).device
    precision = resolve_amp(amp, device)
    model.eval()
    videos = [index for index, path in enumerate(paths) if is_video(path)]
    if videos and mc_samples:
        raise ValueError("--mc-samples applies to images, not videos; leave it out for "
                         f"{paths[videos[0]]}")
    for index in videos:
        try:
            result = segment_video(model, meta, normalization, paths[index], out, stems[index], input_size,
                                   batch_size, amp, write_labels=video_labels, smooth=smooth, progress=progress)
        except (DataError, ValueError, OSError) as error:
            failures.append((str(paths[index]), str(error)))
            continue
        written.append(result["overlay"])
        if result["labels"] is not None:
            written += sorted(result["labels"].iterdir())
        if progress:
            logging.getLogger("segnet").info(f"{paths[index]}: {result['frames']} frames at {result['fps']:g} fps segmented in "
                  f"{result['seconds']:.1f} s ({result['frames_per_s']:.1f} frames/s); audio {result['audio']}; "
                  f"-> {result['overlay']}")
    image_indices = [index for index in range(len(paths)) if index not in set(videos)]
    with tqdm(total=len(image_indices), desc="segmenting", unit="img",
              disable=not image_indices or bar_disabled(progress)) as bar:
        for first in range(0, len(image_indices), batch_size):
            by_size: dict[tuple, list] = {}
            for index in image_indices[first:first + batch_size]:
                try:
                    image = load_image(paths[index])
                except (DataError, OSError) as error:
                    failures.append((str(paths[index]), str(error)))
                    bar.update(1)
                    continue
                by_size.setdefault(tuple(image.shape), []).append((index, image))
            for group in by_size.values():
                try:
                    results = _segment_batch(model, [image for _, image in group], normalization, input_size,
                                             mc_samples, precision)
                except ValueError as error:  # e.g. below the network's minimum size: say which file
                    for index, _ in group:
                        failures.append((str(paths[index]), str(error)))
                    bar.update(len(group))
                    continue
                for (index, image), (labels, variance) in zip(group, results):
                    stem = stems[index]
                    written += write_prediction(image, labels, meta, out, stem)
                    if variance is not None:
                        target = out / f"{stem}_uncertainty.png"
                        with atomic_path(target) as tmp:
                            uncertainty_png(variance.cpu().numpy()).save(tmp, format="PNG")
                        written.append(target)
                    bar.update(1)
    return written, failures


def _segment_batch(model, images: list[torch.Tensor], normalization: dict, input_size, mc_samples: int,
                   precision: str) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """``[(labels, variance or None)]`` for equally sized uint8 images."""
    from ..models import mc_dropout_predict
    from .evaluate import normalize_and_resize

    device = next(model.parameters()).device
    batch = torch.stack(images).to(device)
    with torch.inference_mode():
        if not mc_samples:
            return [(labels, None) for labels in predict_labels(model, batch, normalization, input_size, precision)]
        x, size = normalize_and_resize(batch, normalization, input_size)
        with autocast(precision, device):
            mean, variance = mc_dropout_predict(model, x, mc_samples)
        mean, variance = mean.float(), variance.float()
        if size is not None:
            mean = torch.nn.functional.interpolate(mean, size=size, mode="bilinear")
            variance = torch.nn.functional.interpolate(variance[:, None], size=size, mode="bilinear")[:, 0]
        return list(zip(mean.argmax(1), variance))
