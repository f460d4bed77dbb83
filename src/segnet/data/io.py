"""Reading images and label maps, with errors that name the file and the problem."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset


class DataError(ValueError):
    """A problem with a dataset file; the message names the file and what to do."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A dataset folder or file that is not there (exit status 3 in the CLI, not 2)."""


@dataclass(frozen=True)
class DatasetMeta:
    """What every consumer needs to know about a dataset's labels."""

    name: str
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]  # RGB per class, same order as class_names
    ignore_index: int  # label value that is not a class and is left out of loss and metrics
    ignore_color: tuple[int, int, int] = (0, 0, 0)
    notes: tuple[str, ...] = field(default=())

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "class_names": list(self.class_names),
            "palette": [list(c) for c in self.palette],
            "ignore_index": self.ignore_index,
            "ignore_color": list(self.ignore_color),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "DatasetMeta":
        return cls(
            name=data["name"],
            class_names=tuple(data["class_names"]),
            palette=tuple(tuple(int(v) for v in c) for c in data["palette"]),
            ignore_index=int(data["ignore_index"]),
            ignore_color=tuple(int(v) for v in data.get("ignore_color", (0, 0, 0))),
        )


class SegmentationDataset(Dataset):
    """What every dataset shares: ``load(index)`` gives the stored sample, indexing applies
    ``transform``. Subclasses set ``meta`` and ``transform`` and define ``load``, ``name_of``."""

    meta: DatasetMeta
    transform = None

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.load(index)
        if self.transform is not None:
            image, label = self.transform(image, label)
        return image, label


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise DataError(f"{path}: file is missing")
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError) as error:
        raise DataError(f"{path}: cannot be read as an image ({error}); replace or remove it") from error
    return image


def image_conversion_note(mode: str) -> str | None:
    """Why an image of this PIL mode is converted to 8-bit RGB, or None if it is already."""
    if mode == "RGB":
        return None
    if mode in ("L", "1"):
        return "grayscale, converted to RGB"
    if mode in ("RGBA", "LA", "PA"):
        return f"{mode} with alpha, alpha dropped"
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return f"{mode} (16-bit or float), rescaled to 8-bit RGB"
    return f"mode {mode}, converted to RGB"


def load_image(path: str | Path) -> torch.Tensor:
    """Read an image file as a ``(3, H, W)`` uint8 tensor (grayscale, RGBA, 16-bit converted)."""
    return rgb_tensor(_open(Path(path)))


def rgb_tensor(image: Image.Image) -> torch.Tensor:
    """A decoded PIL image as a ``(3, H, W)`` uint8 tensor: the one conversion every way in
    uses (files, uploads, PIL images given to ``segment``). 16-bit and float images are
    rescaled by their maximum (PIL's own RGB conversion would clip them to white)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = array.max() if array.max() > 0 else 1.0
        array = np.repeat((array / top * 255).round().astype(np.uint8)[..., None], 3, axis=2)
    else:
        array = np.array(image.convert("RGB"))  # a writable copy
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def load_label(
    path: str | Path,
    meta: DatasetMeta,
    value_map: np.ndarray | None = None,
    colors: dict[tuple[int, int, int], int] | None = None,
) -> torch.Tensor:
    """Read a label PNG as an ``(H, W)`` int64 tensor of class ids or ``meta.ignore_index``.

    Args:
        value_map: a 256-entry lookup table from stored values to class ids (e.g. SUN RGB-D's
            1..37 -> 0..36, 0 -> ignore).
        colors: for colour masks, RGB -> class id; colours not listed are an error.
    """
    path = Path(path)
    image = _open(path)
    if colors is not None:
        rgb = np.asarray(image.convert("RGB")).astype(np.int64)
        packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        out = np.full(packed.shape, -1, dtype=np.int64)
        for color, index in colors.items():
            out[packed == ((color[0] << 16) | (color[1] << 8) | color[2])] = index
        if (out < 0).any():
            bad = np.unique(packed[out < 0])[:5].tolist()
            shown = ", ".join(str(((v >> 16) & 255, (v >> 8) & 255, v & 255)) for v in bad)
            raise DataError(f"{path}: colours not in the class table: {shown}; add them to the description file")
        return torch.from_numpy(out)
    if image.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
        raise DataError(
            f"{path}: label maps must be single-channel index images (mode L or P), got {image.mode}; "
            "for colour masks, give the colours in the dataset description"
        )
    array = np.array(image, dtype=np.int64)
    if value_map is not None:
        if array.max(initial=0) >= len(value_map):
            raise DataError(f"{path}: label value {array.max()} is outside the stored range 0..{len(value_map) - 1}")
        array = value_map[array]
    valid = (array >= 0) & (array < meta.num_classes) | (array == meta.ignore_index)
    if not valid.all():
        bad = sorted(set(np.unique(array[~valid]).tolist()))[:10]
        raise DataError(
            f"{path}: label values {bad} are not classes 0..{meta.num_classes - 1} "
            f"nor the ignore value {meta.ignore_index}"
        )
    return torch.from_numpy(array)
