"""The packed format: a whole dataset (one or more splits) in one compact file.

A pack is a ``torch.save`` file of plain containers and uint8 tensors, so it loads with
``weights_only=True``. Images are stored JPEG-encoded (quality 95 by default, the one lossy
step: mean absolute error about 1.3/255 on CamVid) or PNG (``lossless=True``); labels are
always PNG, so label values never change. CamVid's three splits pack into about 41 MB.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..progress import bar_disabled
from .io import DataError, DatasetMeta, SegmentationDataset

FORMAT = "segnet-pack"
VERSION = 1


def _encode(array: np.ndarray, codec: str, quality: int) -> torch.Tensor:
    buffer = io.BytesIO()
    if codec == "jpeg":
        Image.fromarray(array).save(buffer, "JPEG", quality=quality)  # 4:2:0 chroma, as usual
    else:
        Image.fromarray(array).save(buffer, "PNG", compress_level=6)
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)


def pack_dataset(datasets: dict[str, SegmentationDataset], path: str | Path, lossless: bool = False, quality: int = 95) -> Path:
    """Write ``{split: dataset}`` to one pack file (atomically: a temporary file, then rename)."""
    path = Path(path)
    metas = {ds.meta for ds in datasets.values()}
    if len(metas) != 1:
        raise ValueError("all splits of a pack must share one dataset description")
    meta = metas.pop()
    if meta.ignore_index > 255 or meta.num_classes > 255:
        raise ValueError("packs store labels as 8-bit: classes and the ignore value must be below 256")
    codec = "png" if lossless else "jpeg"
    splits = {}
    for split, dataset in datasets.items():
        images, labels, names = [], [], []
        for index in tqdm(range(len(dataset)), desc=f"packing {split}", unit="img", disable=bar_disabled(True)):
            image, label = dataset.load(index)
            images.append(_encode(image.permute(1, 2, 0).numpy(), codec, quality))
            labels.append(_encode(label.to(torch.uint8).numpy(), "png", quality))
            names.append(dataset.name_of(index))
        splits[split] = {"images": images, "labels": labels, "names": names}
    payload = {"format": FORMAT, "version": VERSION, "meta": meta.to_dict(), "image_codec": codec, "splits": splits}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def read_pack(path: str | Path) -> dict:
    """Load a pack's contents (still encoded); checks that it is one."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: pack file not found (create one with 'segnet data pack')")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise DataError(f"{path}: not a readable segnet pack ({error}); re-create it with 'segnet data pack'") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DataError(f"{path}: not a segnet pack file")
    if payload.get("version") != VERSION:
        raise DataError(f"{path}: pack version {payload.get('version')} is not supported (expected {VERSION})")
    return payload


def decode_split(payload: dict, split: str, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Decode a split to ``images (N, 3, H, W)`` and ``labels (N, H, W)`` uint8 tensors on ``device``."""
    if split not in payload["splits"]:
        raise DataError(f"pack has no split {split!r}; it holds: {', '.join(payload['splits'])}")
    entry = payload["splits"][split]
    if not entry["images"]:
        raise DataError(f"split {split!r} of the pack is empty")
    images = torch.stack([_decode(b, "RGB").permute(2, 0, 1) for b in entry["images"]])
    labels = torch.stack([_decode(b, "L") for b in entry["labels"]])
    return images.to(device), labels.to(device)


def _decode(encoded: torch.Tensor, mode: str) -> torch.Tensor:
    with Image.open(io.BytesIO(encoded.numpy().tobytes())) as image:
        return torch.from_numpy(np.array(image.convert(mode)))


class PackedDataset(SegmentationDataset):
    """A split of a pack as an ordinary dataset (decoded once, kept in memory)."""

    def __init__(self, path: str | Path, split: str = "train", transform=None) -> None:
        payload = read_pack(path)
        self.meta = DatasetMeta.from_dict(payload["meta"])
        self.images, self.labels = decode_split(payload, split)
        self.names = payload["splits"][split]["names"]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.names)

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index].long()

    def name_of(self, index: int) -> str:
        return self.names[index]
