"""Datasets, class balancing, transforms and loaders. Imports nothing from models/metrics/engine."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from .balancing import compute_class_weights, median_frequency_weights
from .datasets import CAMVID_META, SUNRGBD_META, SPLITS, CamVid, FolderDataset, PairDataset, SUNRGBD
from .io import DataError, DataNotFoundError, DatasetMeta, load_image, load_label
from .pack import PackedDataset, decode_split, pack_dataset, read_pack
from .resident import ResidentLoader
from .synthetic import SYNTHETIC_META, SyntheticRoadScenes
from .transforms import normalize

# name -> (builder(root, split, transform, **options), needs a root)
DATASETS: dict[str, tuple[Callable, bool]] = {
    "camvid": (lambda root, split, transform, **kw: CamVid(root, split, transform, **kw), True),
    "sunrgbd": (lambda root, split, transform, **kw: SUNRGBD(root, split, transform, **kw), True),
    "folder": (lambda root, split, transform, **kw: FolderDataset(root, split, transform, **kw), True),
    "synthetic": (lambda root, split, transform, **kw: SyntheticRoadScenes(split, transform, **kw), False),
}


def build_dataset(name: str, root: str | Path | None = None, split: str = "train", transform: Callable | None = None, **options):
    """A dataset by name (``camvid``, ``sunrgbd``, ``folder``, ``synthetic``).

    A ``root`` that is a ``.pack`` file (see ``segnet data pack``) loads that pack's split
    whatever the name, so the same command works on a remote machine with only the pack.
    """
    if root is not None and Path(root).suffix == ".pack":
        return PackedDataset(root, split, transform)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    builder, needs_root = DATASETS[name]
    if needs_root and root is None:
        raise ValueError(f"dataset {name!r} needs --root DIR (where the data is)")
    return builder(root, split, transform, **options)


__all__ = [
    "CAMVID_META", "DATASETS", "SPLITS", "SUNRGBD_META", "SYNTHETIC_META", "CamVid", "DataError", "DataNotFoundError", "DatasetMeta",
    "FolderDataset", "PackedDataset", "PairDataset", "ResidentLoader", "SUNRGBD", "SyntheticRoadScenes",
    "build_dataset", "compute_class_weights", "decode_split", "load_image",
    "load_label", "median_frequency_weights", "normalize", "pack_dataset", "read_pack",
]
