"""Segment image files, folders and videos with a ``LoadedModel`` and write what people look
at: palette label maps, colour overlays, uncertainty maps."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from ..data import DatasetMeta, load_image
from ..data.datasets import IMAGE_SUFFIXES
from ..files import atomic_path, check_overwrites, record_outputs, remove_stale_temporaries
from ..progress import bar_disabled
from ..report import overlay, palette_png, uncertainty_png
from .inference import LoadedModel
from .video import VIDEO_SUFFIXES, is_video, segment_video


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


def _planned_outputs(paths: list[Path], stems: list[str], videos: set[int], out: Path, mc_samples: int) -> list[Path]:
    """The files predict_files will write, known before it starts."""
    planned = []
    for index, stem in enumerate(stems):
        if index in videos:
            planned.append(out / f"{stem}_overlay.mp4")
        else:
            planned += [out / f"{stem}.png", out / f"{stem}_overlay.png"]
            planned += [out / f"{stem}_uncertainty.png"] if mc_samples else []
    return planned


def _check_label_folders(folders: list[Path]) -> None:
    """ValueError when a video's NAME_labels folder (replaced whole on success) holds anything
    but segnet's numbered label maps."""
    import re

    for folder in folders:
        if folder.exists() and (not folder.is_dir() or any(
                not re.fullmatch(r"\d{6}\.png", item.name) for item in folder.iterdir())):
            raise ValueError(f"{folder}: exists and holds files segnet did not write, and segnet would replace it "
                             "with the video's label maps; choose another --out, move it away, or --overwrite")


def _segment_videos(loaded, paths, videos, stems, out, batch_size, amp, video_labels, smooth, progress):
    """predict_files' videos: ``(written, failures)``."""
    from ..data import DataError

    written: list[Path] = []
    failures: list[tuple[str, str]] = []
    for index in videos:
        try:
            result = segment_video(loaded, paths[index], out, stems[index], batch_size, amp,
                                   write_labels=video_labels, smooth=smooth, progress=progress)
        except (DataError, ValueError, OSError) as error:
            failures.append((str(paths[index]), str(error)))
            continue
        record_outputs([result["overlay"]])
        written.append(result["overlay"])
        if result["labels"] is not None:
            written += sorted(result["labels"].iterdir())
        if progress:
            logging.getLogger("segnet").info(f"{paths[index]}: {result['frames']} frames at {result['fps']:g} fps segmented in "
                  f"{result['seconds']:.1f} s ({result['frames_per_s']:.1f} frames/s); audio {result['audio']}; "
                  f"-> {result['overlay']}")
    return written, failures


def predict_files(loaded: LoadedModel, inputs: list[str], out_dir, mc_samples: int = 0, batch_size: int = 4,
                  progress: bool = True, amp: str = "auto", video_labels: bool = False,
                  smooth: float = 0.0, overwrite: bool = False) -> tuple[list[Path], list[tuple[str, str]]]:
    """Segment every input image and video with ``loaded`` (``engine.inference.load_model``);
    returns (written files, [(input, why it failed)]).

    Videos (``is_video``) go through ``segment_video``: ``NAME_overlay.mp4``, with
    ``video_labels`` a ``NAME_labels/`` folder of per-frame label maps, and ``smooth`` the
    temporal smoothing of class probabilities (0: off).

    No input and no file segnet did not write is written over (``files.check_overwrites``,
    before any work) unless ``overwrite``. Every per-image failure (unreadable, too small,
    ...) is reported with its file and skipped. Images of equal size are batched; output names are unique (``output_stems``).
    With ``mc_samples`` (Bayesian models) the label map is the argmax of the mean softmax
    and ``NAME_uncertainty.png`` shows the per-pixel variance.
    """
    from tqdm import tqdm

    from ..data import DataError
    from ..models.mc_dropout import has_dropout

    if mc_samples and not has_dropout(loaded.model):
        raise ValueError("--mc-samples needs a Bayesian model (with dropout), e.g. bayesian_segnet")
    if mc_samples and loaded.tta is not None:
        raise ValueError("--tta and --mc-samples do not combine; leave one of them out")
    out = Path(out_dir)
    paths = expand_inputs(inputs)
    if not paths:
        raise ValueError(f"no images found in {' '.join(inputs)}")
    stems = output_stems(paths)  # by position: the same file may be given twice
    videos = [index for index, path in enumerate(paths) if is_video(path)]
    if videos and mc_samples:
        raise ValueError("--mc-samples applies to images, not videos; leave it out for "
                         f"{paths[videos[0]]}")
    check_overwrites(_planned_outputs(paths, stems, set(videos), out, mc_samples), paths, overwrite)
    if video_labels and not overwrite:
        _check_label_folders([out / f"{stems[index]}_labels" for index in videos])
    for stale in remove_stale_temporaries(out) if out.is_dir() else []:  # a killed predict's half-written files
        logging.getLogger("segnet").info(f"removed {stale}, left half-written by a process that was killed")
    loaded.ready(amp, images=None if videos else len(paths))  # auto sees how long the work is
    written, failures = _segment_videos(loaded, paths, videos, stems, out, batch_size, amp, video_labels, smooth,
                                        progress)
    image_indices = [index for index in range(len(paths)) if index not in set(videos)]
    with tqdm(total=len(image_indices), desc="segmenting", unit="img",
              disable=not image_indices or bar_disabled(progress)) as bar:
        for first in range(0, len(image_indices), batch_size):
            by_size: dict[tuple, list] = {}
            mark = len(written)
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
                    results = loaded.segment_batch([image for _, image in group], mc_samples, amp)
                except ValueError as error:  # e.g. below the network's minimum size: say which file
                    for index, _ in group:
                        failures.append((str(paths[index]), str(error)))
                    bar.update(len(group))
                    continue
                for (index, image), (labels, variance) in zip(group, results):
                    stem = stems[index]
                    written += write_prediction(image, labels, loaded.meta, out, stem)
                    if variance is not None:
                        target = out / f"{stem}_uncertainty.png"
                        with atomic_path(target) as tmp:
                            uncertainty_png(variance.cpu().numpy()).save(tmp, format="PNG")
                        written.append(target)
                    bar.update(1)
            record_outputs(written[mark:])  # this batch's files: a rerun may rewrite them
    return written, failures
