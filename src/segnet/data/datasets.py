"""Datasets: CamVid, SUN RGB-D, a generic folder layout, and synthetic road scenes.

Every dataset is a ``torch.utils.data.Dataset`` of ``(image, label)`` pairs: ``image`` a
``(3, H, W)`` uint8 tensor, ``label`` an ``(H, W)`` int64 tensor of class ids in
``[0, K)`` or ``meta.ignore_index``. Each carries its ``meta`` (:class:`DatasetMeta`).
Scaling and normalisation happen later, on the device (see ``segnet.data.transforms``).
"""

from __future__ import annotations

import json
import os
import re
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from .io import DataError, DataNotFoundError, DatasetMeta, SegmentationDataset, load_image, load_label

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

CAMVID_META = DatasetMeta(
    name="camvid",
    class_names=("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
                 "Pedestrian", "Bicyclist"),
    palette=((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
             (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192)),
    ignore_index=11,
)

SUNRGBD_CLASSES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
    "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor mat", "clothes",
    "ceiling", "books", "fridge", "tv", "paper", "towel", "shower curtain", "box", "whiteboard", "person",
    "night stand", "toilet", "sink", "lamp", "bathtub", "bag",
)


def _rgb(value) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 3 and all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)


def _sun_palette(count: int) -> tuple[tuple[int, int, int], ...]:
    # a fixed, well-spread palette (bit-reversal, as in PASCAL VOC's colour map)
    colors = []
    for i in range(1, count + 1):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colors.append((r, g, b))
    return tuple(colors)


SUNRGBD_META = DatasetMeta("sunrgbd", SUNRGBD_CLASSES, _sun_palette(len(SUNRGBD_CLASSES)), ignore_index=255)
# SUN RGB-D stores 0 = unlabelled, 1..37 = classes: shift to 0..36 and map 0 to the ignore value.
_SUN_VALUE_MAP = np.array([255] + list(range(37)) + [-1] * (256 - 38), dtype=np.int64)
# The widely used preprocessed release numbers its images test 1..5050, train 5051..10335.
SUNRGBD_NUMBERED_SPLITS = {"test": (1, 5050), "train": (5051, 10335)}


class PairDataset(SegmentationDataset):
    """A list of (image file, label file) pairs; the base of all file-backed datasets."""

    def __init__(
        self,
        pairs: list[tuple[Path, Path]],
        meta: DatasetMeta,
        transform: Callable | None = None,
        value_map: np.ndarray | None = None,
        colors: dict[tuple[int, int, int], int] | None = None,
    ) -> None:
        self.pairs = pairs
        self.meta = meta
        self.transform = transform
        self.value_map = value_map
        self.colors = colors

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The stored sample, before any transform."""
        image_path, label_path = self.pairs[index]
        image = load_image(image_path)
        label = load_label(label_path, self.meta, self.value_map, self.colors)
        if image.shape[-2:] != label.shape:
            raise DataError(
                f"{image_path}: image is {tuple(image.shape[-2:])} (HxW) but its label {label_path} is "
                f"{tuple(label.shape)}; they must match"
            )
        return image, label

    def name_of(self, index: int) -> str:
        return self.pairs[index][0].stem


def _check_split(split: str, allowed=SPLITS) -> None:
    if split not in allowed:
        raise ValueError(f"unknown split {split!r}; choose one of: {', '.join(allowed)}")


def _require_dir(path: Path, what: str) -> None:
    if path.exists() and not path.is_dir():
        raise DataError(f"{path}: is a file, where the {what} folder is needed; give --root the dataset's folder "
                        "(or a .pack file from 'segnet data pack')")
    if not path.is_dir():
        raise DataNotFoundError(f"{path}: {what} folder not found; check --root")


def shared_camvid() -> Path | None:
    """Where CamVid lies beside a checkout, by the one rule every command and test uses:
    ``SEGNET_CAMVID``, else ``SEGNET_SHARED/data/CamVid``, else ``../shared/data/CamVid``
    from the working folder, else from the folder above this source checkout. None when
    none of them holds a ``test`` folder."""
    if "SEGNET_CAMVID" in os.environ:
        candidates = [Path(os.environ["SEGNET_CAMVID"])]
    elif "SEGNET_SHARED" in os.environ:
        candidates = [Path(os.environ["SEGNET_SHARED"]) / "data" / "CamVid"]
    else:
        candidates = [Path("../shared/data/CamVid"), Path(__file__).resolve().parents[4] / "shared" / "data" / "CamVid"]
    return next((path for path in candidates if (path / "test").is_dir()), None)


class CamVid(PairDataset):
    """CamVid as released with SegNet: ``train/ trainannot/ ... train.txt val.txt test.txt``.

    The list files hold absolute ``/SegNet/CamVid/...`` paths; they are resolved against
    ``root``. Without a list file the split folders are paired by file name.
    """

    def __init__(self, root: str | Path, split: str = "train", transform: Callable | None = None) -> None:
        _check_split(split)
        root = Path(root)
        _require_dir(root, "CamVid root")
        list_file = root / f"{split}.txt"
        if list_file.is_file():
            pairs = [_camvid_pair(root, line, list_file, n) for n, line in enumerate(list_file.read_text().splitlines(), 1)
                     if line.strip()]
        else:
            pairs = _pair_folders(root / split, root / f"{split}annot")
        super().__init__(pairs, CAMVID_META, transform)


def _camvid_pair(root: Path, line: str, list_file: Path, number: int) -> tuple[Path, Path]:
    fields = line.split()
    if len(fields) != 2:
        raise DataError(f"{list_file}:{number}: expected 'IMAGE LABEL', got {line!r}")

    def resolve(text: str) -> Path:
        # '/SegNet/CamVid/train/x.png' -> root/train/x.png (keep the last two components)
        parts = Path(text).parts
        return root.joinpath(*parts[-2:])

    return resolve(fields[0]), resolve(fields[1])


# set by ``collecting_unpaired``: where images without a label are listed instead of failing
_UNPAIRED: ContextVar[list[str] | None] = ContextVar("unpaired", default=None)


@contextmanager
def collecting_unpaired() -> Iterator[list[str]]:
    """Within the block, datasets are built without their unlabelled images, which are named
    in the list this yields instead of failing the build: what lets ``data check`` report
    every problem of a folder at once."""
    found: list[str] = []
    token = _UNPAIRED.set(found)
    try:
        yield found
    finally:
        _UNPAIRED.reset(token)


def _pair_folders(image_dir: Path, label_dir: Path) -> list[tuple[Path, Path]]:
    _require_dir(image_dir, "image")
    _require_dir(label_dir, "label")
    images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    labels = {p.stem: p for p in label_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    unpaired = [f"{image}: no label with the same name in {label_dir}" for image in images if image.stem not in labels]
    if unpaired and _UNPAIRED.get() is None:
        more = f" (and {len(unpaired) - 1} more images without a label; 'segnet data check' lists them)"
        raise DataError(unpaired[0] + (more if len(unpaired) > 1 else ""))
    if unpaired:
        _UNPAIRED.get().extend(unpaired)
    return [(image, labels[image.stem]) for image in images if image.stem in labels]


class SUNRGBD(PairDataset):
    """SUN RGB-D (37 classes, 0 = unlabelled is ignored), RGB only as in the paper.

    Layouts (``layout="auto"`` picks whichever exists):
      - ``"numbered"``: ``root/images/<n>.jpg|png`` and ``root/labels/<n>.png`` with one number
        per image, split by ``splits`` (default: test 1..5050, train 5051..10335);
        file names may carry a prefix and zero padding (``img-000001.jpg``).
      - ``"folders"``: ``root/<split>/images/`` and ``root/<split>/labels/``, paired by name.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: Callable | None = None,
        layout: str = "auto",
        splits: dict[str, tuple[int, int]] | None = None,
    ) -> None:
        root = Path(root)
        _require_dir(root, "SUN RGB-D root")
        if layout == "auto":
            layout = "folders" if (root / split / "images").is_dir() else "numbered"
        if layout == "folders":
            pairs = _pair_folders(root / split / "images", root / split / "labels")
        elif layout == "numbered":
            ranges = splits or SUNRGBD_NUMBERED_SPLITS
            _check_split(split, tuple(ranges))
            low, high = ranges[split]
            images = _numbered(root / "images")
            labels = _numbered(root / "labels")
            pairs = []
            for number in sorted(n for n in images if low <= n <= high):
                if number not in labels:
                    raise DataError(f"{images[number]}: no label numbered {number} in {root / 'labels'}")
                pairs.append((images[number], labels[number]))
        else:
            raise ValueError(f"unknown SUN RGB-D layout {layout!r}; use 'auto', 'numbered' or 'folders'")
        super().__init__(pairs, SUNRGBD_META, transform, value_map=_SUN_VALUE_MAP)


def _numbered(folder: Path) -> dict[int, Path]:
    _require_dir(folder, "numbered")
    found = {}
    for path in folder.iterdir():
        match = re.search(r"(\d+)$", path.stem)
        if match and path.suffix.lower() in IMAGE_SUFFIXES:
            found[int(match.group(1))] = path
    return found


class FolderDataset(PairDataset):
    """Your own data: ``root/[split/]images/`` + ``root/[split/]masks/`` paired by file name.

    ``root/classes.yaml`` (or ``.json``) describes the labels::

        classes: [road, car, person]          # class ids 0, 1, 2
        colors: [[128, 64, 128], [64, 0, 128], [64, 64, 0]]   # optional palette
        ignore_index: 255                     # optional, default 255
        mask_format: index                    # 'index' (values are ids) or 'color'
    """

    def __init__(self, root: str | Path, split: str = "train", transform: Callable | None = None) -> None:
        root = Path(root)
        _require_dir(root, "dataset root")
        meta, mask_format = read_folder_description(root)
        base = root / split if (root / split / "images").is_dir() else root
        pairs = _pair_folders(base / "images", base / "masks")
        colors = None
        if mask_format == "color":
            colors = {tuple(c): i for i, c in enumerate(meta.palette)}
            colors[meta.ignore_color] = meta.ignore_index
        super().__init__(pairs, meta, transform, colors=colors)


def read_folder_description(root: Path) -> tuple[DatasetMeta, str]:
    """Parse ``classes.yaml``/``classes.json`` of a folder dataset."""
    for name in ("classes.yaml", "classes.yml", "classes.json"):
        path = root / name
        if path.is_file():
            break
    else:
        raise DataError(f"{root}: no classes.yaml or classes.json describing the classes (see 'segnet data --help')")
    text = path.read_text()
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as error:
        raise DataError(f"{path}: cannot be parsed ({error})") from error
    if not isinstance(data, dict) or not isinstance(data.get("classes"), list) or not data["classes"]:
        raise DataError(f"{path}: needs a non-empty 'classes' list of class names")
    names = tuple(str(c) for c in data["classes"])
    colors = data.get("colors") or [list(c) for c in _sun_palette(len(names))]
    if not isinstance(colors, list) or len(colors) != len(names) or not all(_rgb(c) for c in colors):
        shown = len(colors) if isinstance(colors, list) else type(colors).__name__
        raise DataError(f"{path}: 'colors' must hold one [R, G, B] (integers 0-255) per class: {len(names)} classes, "
                        f"{shown} colours given")
    for key in ("ignore_index", "ignore_color"):
        value = data.get(key)
        if value is not None and not (_rgb(value) if key == "ignore_color" else
                                      isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 65535):
            raise DataError(f"{path}: {key!r} is {value!r}; it must be "
                            + ("an [R, G, B] of integers 0-255" if key == "ignore_color" else "an integer 0-65535"))
    mask_format = data.get("mask_format", "index")
    if mask_format not in ("index", "color"):
        raise DataError(f"{path}: mask_format must be 'index' or 'color', not {mask_format!r}")
    meta = DatasetMeta(
        name=root.name,
        class_names=names,
        palette=tuple(tuple(int(v) for v in c) for c in colors),
        ignore_index=int(data.get("ignore_index", 255)),
        ignore_color=tuple(int(v) for v in data.get("ignore_color", (0, 0, 0))),
    )
    return meta, mask_format
