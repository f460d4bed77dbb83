"""Synthetic road scenes: a deterministic, offline stand-in for CamVid.

Each scene has a horizon, sky, buildings with windows, a road in perspective with
pavements, cars with wheels, poles, texture noise, a global lighting change, and a small
unlabelled (ignored) patch. Class colours overlap (grey sky, grey road, grey buildings),
so a model has to use shape and context, not colour alone.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .io import DatasetMeta, SegmentationDataset

SYNTHETIC_META = DatasetMeta(
    name="synthetic",
    class_names=("sky", "building", "pole", "road", "pavement", "car"),
    palette=((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (64, 0, 128)),
    ignore_index=255,
)
SKY, BUILDING, POLE, ROAD, PAVEMENT, CAR = range(6)
DEFAULT_SIZES = {"train": 96, "val": 24, "test": 24}
_SPLIT_OFFSET = {"train": 0, "val": 1_000_003, "test": 2_000_003}


def render_scene(seed: int, height: int = 96, width: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """One scene: ``(H, W, 3)`` uint8 image and ``(H, W)`` uint8 labels (255 = ignore)."""
    rng = np.random.default_rng(seed)
    label = np.full((height, width), SKY, dtype=np.uint8)
    image = np.zeros((height, width, 3), dtype=np.float32)
    rows, cols = np.mgrid[0:height, 0:width]

    # sky: a vertical gradient, sometimes grey like the road
    horizon = int(height * rng.uniform(0.35, 0.55))
    top = rng.uniform(90, 200, size=3) if rng.random() < 0.6 else np.full(3, rng.uniform(110, 170))
    image[:] = top + (rows[..., None] / height) * rng.uniform(-30, 30, size=3)

    # buildings along the horizon, with window grids
    x = int(rng.integers(-10, 10))
    while x < width:
        w = int(rng.integers(width // 8, width // 3))
        h = int(rng.integers(height // 8, horizon))
        y0 = max(horizon - h, 0)
        color = rng.uniform(60, 170) + rng.uniform(-25, 25, size=3)
        region = (rows >= y0) & (rows < horizon) & (cols >= x) & (cols < x + w)
        label[region] = BUILDING
        image[region] = color
        windows = region & ((rows - y0) % 6 < 3) & ((cols - x) % 7 < 3) & (rows < horizon - 3)
        image[windows] = color * rng.uniform(0.3, 0.6)
        x += w + int(rng.integers(0, width // 10))

    # road in perspective, pavements on both sides
    vanish = width * rng.uniform(0.35, 0.65)
    depth = np.clip((rows - horizon) / max(height - horizon, 1), 0, 1)
    half_road = depth * width * rng.uniform(0.35, 0.55)
    half_pave = half_road + depth * width * rng.uniform(0.12, 0.3)
    ground = rows >= horizon
    pavement = ground & (np.abs(cols - vanish) < half_pave)
    road = ground & (np.abs(cols - vanish) < half_road)
    grass = ground & ~pavement
    label[grass] = BUILDING  # roadside walls/hedges: counted as building here
    image[grass] = rng.uniform(70, 130) + rng.uniform(-20, 20, size=3)
    label[pavement] = PAVEMENT
    image[pavement] = np.array([60, 40, 222]) * rng.uniform(0.5, 0.9) + rng.uniform(20, 60)
    label[road] = ROAD
    image[road] = rng.uniform(80, 140) + rng.uniform(-8, 8, size=3)
    markings = road & (np.abs(cols - vanish) < 1 + depth * 2) & ((rows // 4) % 2 == 0)
    image[markings] = 230

    # cars on the road, bigger when nearer
    for _ in range(int(rng.integers(0, 4))):
        d = rng.uniform(0.15, 1.0)
        y1 = int(horizon + d * (height - horizon))
        cw = max(int(d * width * 0.28), 4)
        ch = max(int(cw * rng.uniform(0.45, 0.7)), 3)
        cx = int(vanish + rng.uniform(-0.8, 0.8) * d * width * 0.4)
        body = (rows >= y1 - ch) & (rows < y1) & (cols >= cx - cw // 2) & (cols < cx + cw // 2)
        label[body] = CAR
        image[body] = rng.uniform(20, 235, size=3)
        glass = body & (rows < y1 - ch + max(ch // 3, 1)) & (cols > cx - cw // 3) & (cols < cx + cw // 3)
        image[glass] = rng.uniform(30, 70)
        for wx in (cx - cw // 3, cx + cw // 3):
            wheel = (rows - (y1 - 1)) ** 2 + (cols - wx) ** 2 <= max(cw // 8, 1) ** 2
            label[wheel & (rows < height)] = CAR
            image[wheel] = 25

    # poles: thin, tall, from the pavement up past the horizon
    for _ in range(int(rng.integers(1, 4))):
        px = int(rng.integers(0, width))
        pw = int(rng.integers(1, 3))
        base = int(rng.integers(horizon + 2, height))
        pole = (cols >= px) & (cols < px + pw) & (rows < base) & (rows > horizon - rng.integers(10, horizon + 1))
        label[pole] = POLE
        image[pole] = rng.uniform(140, 220, size=3)

    # an unlabelled patch (void), lighting, texture noise
    vy, vx = int(rng.integers(0, height - 4)), int(rng.integers(0, width - 4))
    label[vy : vy + int(rng.integers(2, 6)), vx : vx + int(rng.integers(2, 6))] = SYNTHETIC_META.ignore_index
    image *= rng.uniform(0.7, 1.25)
    image += rng.normal(0, 8, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), label


class SyntheticRoadScenes(SegmentationDataset):
    """Generated road scenes, identical for the same (seed, split, index).

    Args:
        split: ``train``, ``val`` or ``test`` (disjoint seeds).
        size: ``(H, W)`` of every scene.
        count: number of scenes (default: 96 train, 24 val, 24 test).
    """

    meta = SYNTHETIC_META

    def __init__(
        self,
        split: str = "train",
        transform: Callable | None = None,
        size: tuple[int, int] = (96, 128),
        count: int | None = None,
        seed: int = 0,
    ) -> None:
        if split not in _SPLIT_OFFSET:
            raise ValueError(f"unknown split {split!r}; choose one of: {', '.join(_SPLIT_OFFSET)}")
        self.split, self.size, self.seed, self.transform = split, tuple(size), seed, transform
        self.count = DEFAULT_SIZES[split] if count is None else count

    def __len__(self) -> int:
        return self.count

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.count:
            raise IndexError(index)
        image, label = render_scene(self.seed * 7_919 + _SPLIT_OFFSET[self.split] + index, *self.size)
        return torch.from_numpy(image).permute(2, 0, 1).contiguous(), torch.from_numpy(label).long()

    def name_of(self, index: int) -> str:
        return f"{self.split}_{index:05d}"
