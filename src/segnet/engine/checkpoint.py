"""Checkpoints: written atomically, read with ``weights_only=True`` (loading never runs code).

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts:

- ``format``, ``version``: what this file is;
- ``model``: ``{"name", "num_classes", "options"}``, enough to rebuild the network;
- ``dataset``: the classes, palette and ignore value (``DatasetMeta.to_dict()``);
- ``normalization``: ``{"mean", "std"}`` applied to images scaled to [0, 1];
- ``state_dict``: the weights;
- ``weight_scales`` (only in files written with ``weights="int8"``): one fp32 scale per
  output channel of each convolution kernel, which ``state_dict`` then holds in int8
  (with ``weights="bf16"`` it holds them in bf16); :func:`load_checkpoint` turns them back
  into fp32, so every reader sees fp32 weights;
- anything else the caller adds (the training loop adds recipe, epoch, metrics, optimizer
  and RNG state).
"""

from __future__ import annotations

import math
import os
import pickle
import shutil
from pathlib import Path

import torch
from torch import nn

from ..data import DatasetMeta
from ..files import atomic_path, write_error
from ..models import create_model
from .kernel_storage import WEIGHT_STORAGE, restore_kernels, store_kernels

FORMAT = "segnet-checkpoint"
VERSION = 1  # what checkpoints with fp32 weights are written as
COMPACT_KERNELS_VERSION = 2  # checkpoints with int8 or bf16 kernels; segnet before them refuses them by this number
MAX_INPUT_SIDE = 8192  # the largest side an input size may name (ONNX export's limit too)


def clean_state_dict(model: nn.Module) -> dict:
    """The model's weights without wrapper prefixes (DDP's ``module.``, compile's ``_orig_mod.``)."""
    state = {}
    for key, value in model.state_dict().items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix) :]
        state[key] = value
    return state


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DDP and ``torch.compile`` wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    model_name: str,
    meta: DatasetMeta,
    normalization: dict,
    model_options: dict | None = None,
    **extra,
) -> Path:
    """Write a checkpoint to ``path`` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model": {"name": model_name, "num_classes": meta.num_classes, "options": dict(model_options or {})},
        "dataset": meta.to_dict(),
        "normalization": {"mean": [float(v) for v in normalization["mean"]],
                          "std": [float(v) for v in normalization["std"]]},
        "state_dict": clean_state_dict(model),
        **extra,
    }
    _write(payload, path)
    return path


def _write(payload: dict, path: Path) -> None:
    """``torch.save`` atomically; a full disk is said as such, with the path (torch reports it
    as 'unexpected pos' or 'file write failed'), and the file that was there is kept."""
    try:
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
    except RuntimeError as error:  # torch's own words for a failed write
        full = shutil.disk_usage(path.parent).free < 64 * 2**20
        raise write_error(path, None if full else str(error).splitlines()[0]) from None


# What a checkpoint needs for inference; the rest (optimizer, RNG state, history) is for resuming.
INFERENCE_KEYS = ("format", "version", "model", "dataset", "normalization", "state_dict", "input_size")


def slim_checkpoint(source: str | os.PathLike, dest: str | os.PathLike, keep: tuple[str, ...] = (),
                    weights: str = "fp32", **extra) -> Path:
    """Copy a checkpoint without what only resuming needs (optimizer and RNG state, history).

    ``keep`` names further entries to carry over (e.g. ``"config"``, ``"metrics"``);
    ``weights="int8"`` stores the convolution kernels in int8 (``kernel_storage``; about a
    quarter of the size), ``weights="bf16"`` in bf16 (half); such a file needs a segnet that
    reads checkpoint version 2; ``extra`` adds new entries (e.g. provenance for a model
    card). Written atomically.
    """
    if weights not in WEIGHT_STORAGE:
        raise ValueError(f"weights must be one of {', '.join(WEIGHT_STORAGE)}, got {weights!r}")
    checkpoint = load_checkpoint(source)
    check_weights(checkpoint["state_dict"], source)  # a slim copy of a broken model would travel far
    missing = [key for key in keep if key not in checkpoint]
    if missing:
        raise ValueError(f"{source}: has no {', '.join(missing)} entry to keep (it has "
                         f"{', '.join(k for k in checkpoint if k not in INFERENCE_KEYS)})")
    payload = {key: checkpoint[key] for key in INFERENCE_KEYS + tuple(keep) if key in checkpoint}
    payload["version"] = VERSION
    if weights != "fp32":
        payload["state_dict"], scales = store_kernels(payload["state_dict"], weights)
        payload.update(version=COMPACT_KERNELS_VERSION, **({"weight_scales": scales} if scales else {}))
    payload.update(extra)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _write(payload, dest)
    return dest


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint safely; errors name the file and say what is wrong. ``path`` may
    also be a model folder (``save_pretrained``) or an ``hf-hub:OWNER/NAME`` id, read the
    same way into the same dict."""
    from .hub import HUB_PREFIX, download_from_hub, read_model_folder

    if str(path).startswith(HUB_PREFIX):
        path = download_from_hub(str(path))
    path = Path(path)
    if path.is_dir():
        checkpoint = read_model_folder(path)
        checkpoint["state_dict"] = {k: v.to(map_location) for k, v in checkpoint["state_dict"].items()}
        return checkpoint
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found (training writes RUN_DIR/best.pt and RUN_DIR/last.pt)")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:  # torch's own message suggests weights_only=False: never pass that on
        raise ValueError(f"{path}: refused to load: it is not a segnet checkpoint (damaged, another kind of file, "
                         "or one holding objects other than tensors and plain data, which are never loaded); "
                         "use a checkpoint from 'segnet train' or a model folder") from None
    except (RuntimeError, EOFError, OSError) as error:
        raise ValueError(f"{path}: not a readable checkpoint ({error}); was the file truncated?") from error
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise ValueError(f"{path}: not a segnet checkpoint (no 'format': '{FORMAT}' entry)")
    version = checkpoint.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError(f"{path}: its 'version' entry is {version!r}, not a number; the file was edited or not "
                         "written by segnet")
    if version > COMPACT_KERNELS_VERSION:
        raise ValueError(f"{path}: checkpoint version {checkpoint['version']} is newer than this segnet "
                         f"understands ({COMPACT_KERNELS_VERSION}); upgrade segnet")
    _check_entries(checkpoint, path)
    scales = checkpoint.pop("weight_scales", None)
    if scales is not None and not isinstance(scales, dict):
        raise ValueError(f"{path}: its 'weight_scales' entry is not a table of tensors; the file was edited")
    checkpoint["state_dict"], stored = restore_kernels(checkpoint["state_dict"], scales, path)
    if stored != "fp32":
        checkpoint["stored_weights"] = stored  # what the file held, for whoever reports on it
    return checkpoint


def _check_entries(checkpoint: dict, path) -> None:
    """Every entry inference needs is there and has the right shape of data."""
    problems = []
    model = checkpoint.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("name"), str) or not isinstance(
            model.get("num_classes"), int):
        problems.append("'model' (name and num_classes)")
    normalization = checkpoint.get("normalization")
    if not isinstance(normalization, dict) or any(
            not isinstance(normalization.get(k), (list, tuple)) or len(normalization[k]) != 3 for k in ("mean", "std")):
        problems.append("'normalization' (mean and std, 3 values each)")
    if not isinstance(checkpoint.get("dataset"), dict) or "class_names" not in checkpoint["dataset"]:
        problems.append("'dataset' (class names and palette)")
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        problems.append("'state_dict' (the weights: names and tensors only)")
    if isinstance(normalization, dict) and not _positive_stds(normalization.get("std")):
        problems.append("'normalization' (its std must be 3 positive finite numbers: a std of 0 divides by zero)")
    size = checkpoint.get("input_size")
    if size is not None and not (isinstance(size, (list, tuple)) and len(size) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_INPUT_SIDE for v in size)):
        problems.append(f"'input_size' ({size!r} is not [height, width] of 1 to {MAX_INPUT_SIDE} pixels)")
    if problems:
        raise ValueError(f"{path}: this checkpoint lacks or has a malformed {', '.join(problems)}; it was not "
                         "written by segnet or was edited: use a checkpoint from 'segnet train' (RUN_DIR/best.pt)")


def _positive_stds(values) -> bool:
    return isinstance(values, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in values)


def check_weights(state: dict, where) -> None:
    """ValueError naming the tensor when weights hold NaN or infinity, or when a batch norm's
    running variance is negative (such a model predicts nonsense without an error)."""
    for key, value in state.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise ValueError(f"{where}: weight {key} holds NaN or infinite values; this model cannot predict. "
                             "Use an earlier checkpoint (training keeps last.pt and best.pt from good epochs)")
        if key.endswith("running_var") and value.is_floating_point() and (value < 0).any():
            raise ValueError(f"{where}: batch-norm statistic {key} is negative, which no training produces; the "
                             "file was edited or damaged. Use the checkpoint training wrote")


def _model_from_checkpoint(checkpoint: dict, map_location: str | torch.device = "cpu",
                           source: str | os.PathLike | None = None):
    """``(model in eval mode, DatasetMeta, normalization)`` from a loaded checkpoint (what
    ``engine.inference.load_model`` builds its ``LoadedModel`` from).

    Weights that do not fit the recorded architecture, and non-finite weights, are refused
    with the file (``source``) and the offending tensor named.
    """
    where = source if source is not None else "the checkpoint"
    spec = checkpoint["model"]
    try:
        model = create_model(spec["name"], spec["num_classes"], **spec.get("options", {}))
    except (ValueError, TypeError) as error:
        raise ValueError(f"{where}: records a model this segnet cannot build ({error})") from None
    state = checkpoint["state_dict"]
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    reshaped = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or reshaped:
        details = []
        if missing:
            details.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if reshaped:
            key = reshaped[0]
            details.append(f"{len(reshaped)} of another shape (e.g. {key}: {tuple(state[key].shape)} instead of "
                           f"{tuple(own[key].shape)})")
        raise ValueError(f"{where}: its weights do not fit a {spec['name']} with {spec['num_classes']} classes, as "
                         f"it says it holds: tensors {'; '.join(details)}. The file was edited or saved from another "
                         "model; use the checkpoint training wrote")
    check_weights(state, where)
    model.load_state_dict(state)
    return model.to(map_location).eval(), DatasetMeta.from_dict(checkpoint["dataset"]), checkpoint["normalization"]
