"""Training recipes as plain data, and the configuration they resolve to.

A recipe is a dict of ``TrainConfig`` fields; ``resolve_config`` starts from the defaults,
applies the recipe, then the user's overrides, and checks every value. The resolved
configuration is written to the run directory as ``config.json``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from ..data.balancing import BALANCING_MODES
from .precision import AMP_CHOICES

LOSS_NORMALIZATIONS = ("valid_pixels", "weights")
# what may change when a run is continued: its length, its rate, where it runs, how often it validates
RESUMABLE = ("epochs", "lr", "device", "val_every", "val_bn_images")


@dataclass
class TrainConfig:
    """Everything a training run depends on (one flat record, written as config.json)."""

    model: str = "segnet_basic"
    dataset: str = "synthetic"
    root: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    recipe: str = "paper-basic"
    epochs: int = 100
    batch_size: int = 12  # global: split across ranks and micro-batches
    accumulate: int = 1  # micro-batches per optimiser step (same result, less memory)
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.1
    encoder_lr_scale: float = 1.0  # the encoder's rate is lr times this (below 1 for a pretrained encoder)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "constant"  # constant | cosine (per step, after linear warm-up)
    warmup_epochs: float = 0.0
    class_balancing: str = "median_frequency"  # median_frequency | median_frequency_sqrt | natural
    loss_normalization: str = "valid_pixels"  # valid_pixels (the original) | weights (PyTorch's mean)
    encoder_weights: str | None = None  # "imagenet" or a VGG16 state-dict path (VGG models only)
    size: list[int] | None = None  # [H, W] to train at (None: the data's own size)
    crop: list[int] | None = None  # [H, W] random training windows (validation on whole frames)
    hflip: bool = False
    scale: list[float] = field(default_factory=lambda: [1.0, 1.0])
    color_jitter: float = 0.0  # brightness, contrast and saturation each scaled in [1 - j, 1 + j] per image
    val_every: int = 10  # epochs between validations (and always after the last epoch)
    val_bn_images: int = 0  # >0: recompute BN statistics over this many training frames before each validation
    select_by: str = "global_accuracy"  # the validation score that picks best.pt
    ema: float = 0.0  # >0: validate and keep an exponential moving average of the weights with this decay per step
    bn_recompute: bool = True  # after training, recompute BN statistics of best.pt over the training set
    amp: str = "auto"  # auto (bf16 on CUDA and CPUs with native bf16, else fp32) | bf16 | off
    channels_last: bool = True
    compile: bool = False
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    init_from: str | None = None  # start from these weights: a checkpoint path or a shipped model's name

    def __post_init__(self) -> None:
        if isinstance(self.amp, bool):  # configurations written before amp had three values
            self.amp = "auto" if self.amp else "off"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


RECIPES: dict[str, dict] = {
    # Table 1 of the paper: SGD 0.1 fixed, momentum 0.9, batch 12, MFB, He init, 360x480,
    # no augmentation, keep the best validation global accuracy; BN statistics recomputed
    # over the training set at the end as the original release does.
    "paper-basic": dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, batch_size=12, epochs=200,
                        schedule="constant", class_balancing="median_frequency", loss_normalization="valid_pixels",
                        hflip=False, scale=[1.0, 1.0], val_every=10, select_by="global_accuracy", bn_recompute=True),
    # SegNet (VGG16): SGD 1e-3 fixed, momentum 0.9, weight decay 5e-4, small batch,
    # ImageNet VGG16 encoder, MFB.
    "paper": dict(optimizer="sgd", lr=1e-3, momentum=0.9, weight_decay=5e-4, batch_size=5, epochs=300,
                  schedule="constant", class_balancing="median_frequency", loss_normalization="valid_pixels",
                  encoder_weights="imagenet", hflip=False, scale=[1.0, 1.0], val_every=10,
                  select_by="global_accuracy", bn_recompute=True),
    # Same architectures, current practice: flips and scale augmentation, AdamW with warm-up
    # and cosine decay, longer training, best checkpoint by validation mIoU, running BN
    # statistics. Not yet validated at full scale (see docs/results.md).
    "modern": dict(optimizer="adamw", lr=1e-3, weight_decay=1e-4, batch_size=8, epochs=400,
                   schedule="cosine", warmup_epochs=5, class_balancing="median_frequency",
                   loss_normalization="valid_pixels", hflip=True, scale=[0.75, 1.5], val_every=10,
                   select_by="mean_iou", bn_recompute=False),
    # A pretrained (ImageNet) encoder on CamVid's 367 images, on CPU budgets: SGD with the
    # decoder at 0.01 and the encoder at a tenth of that (the rate a fresh decoder needs
    # would disturb the pretrained filters), 1 epoch of warm-up then cosine decay, flips
    # and mild zoom on 180x240 crops at native resolution, MFB, best by validation mIoU
    # with BN statistics recomputed on 48 training frames before each validation. A
    # departure from the paper, which trains every layer at 1e-3 on 3,433 images.
    "finetune": dict(optimizer="sgd", lr=0.01, encoder_lr_scale=0.1, momentum=0.9, weight_decay=5e-4, batch_size=8,
                     epochs=60, schedule="cosine", warmup_epochs=1, class_balancing="median_frequency",
                     loss_normalization="valid_pixels", encoder_weights="imagenet", hflip=True, scale=[0.75, 1.25],
                     crop=[180, 240], val_every=3, val_bn_images=48, select_by="mean_iou", bn_recompute=True),
    # SegNet (VGG16) from the ImageNet encoder on CPU budgets, the recipe that got it furthest
    # (docs/results.md): AdamW 3e-4 on every layer, 1 warm-up epoch then cosine, NATURAL class
    # weighting (median frequency balancing stalled the first epochs: val G 21 after 4 epochs
    # against 77 with natural weights), flips and zoom on 180x240 crops, best by val mIoU.
    # Its length is a guess: no run of it has reached convergence yet (docs/results.md).
    "pretrained": dict(optimizer="adamw", lr=3e-4, weight_decay=1e-4, batch_size=8, epochs=100,
                       schedule="cosine", warmup_epochs=1, class_balancing="natural", loss_normalization="valid_pixels",
                       encoder_weights="imagenet", hflip=True, scale=[0.75, 1.5], crop=[180, 240], val_every=4,
                       select_by="mean_iou", bn_recompute=False),
}

_CHOICES = {
    "optimizer": ("sgd", "adamw"),
    "schedule": ("constant", "cosine"),
    "class_balancing": BALANCING_MODES,
    "loss_normalization": LOSS_NORMALIZATIONS,
    "select_by": ("global_accuracy", "mean_accuracy", "mean_iou"),
    "amp": AMP_CHOICES,
}


def parse_override(text: str) -> tuple[str, object]:
    """``key=value`` with the value read as JSON when it parses (numbers, true, null, [..]), else a string."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like key=value (e.g. lr=0.01, scale=[0.5,2], size=null)")
    key, raw = text.split("=", 1)
    key = key.strip().replace("-", "_")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key, value


def describe_recipe(name: str) -> str:
    """One line of a recipe's main values, for help texts (generated, so it cannot go stale)."""
    recipe = RECIPES[name]
    parts = [f"{recipe['optimizer'].upper() if recipe['optimizer'] == 'sgd' else 'AdamW'} {recipe['lr']:g}",
             f"batch {recipe['batch_size']}", f"{recipe['epochs']} epochs", recipe["schedule"]]
    if recipe.get("encoder_weights"):
        parts.append("ImageNet encoder")
    if recipe.get("crop"):
        parts.append(f"{recipe['crop'][0]}x{recipe['crop'][1]} crops")
    if recipe.get("hflip"):
        parts.append("flips")
    parts.append({"median_frequency": "MFB", "median_frequency_sqrt": "square-root MFB"}.get(
        recipe["class_balancing"], "natural class weights"))
    return f"{name} ({', '.join(parts)})"


def resolve_config(recipe: str, overrides: dict | None = None) -> TrainConfig:
    """Defaults <- recipe <- overrides, with every value checked."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of: {', '.join(RECIPES)}")
    values = {**RECIPES[recipe], "recipe": recipe}
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for key, value in (overrides or {}).items():
        if key not in fields:
            raise ValueError(f"unknown training option {key!r}; options: {', '.join(fields)}")
        values[key] = value
    config = TrainConfig(**values)
    check_config(config)
    return config


def check_config(config: TrainConfig) -> None:
    """Raise ValueError naming the first bad value."""
    for key, allowed in _CHOICES.items():
        if getattr(config, key) not in allowed:
            raise ValueError(f"{key} must be one of {', '.join(allowed)}, not {getattr(config, key)!r}")
    for key in ("epochs", "batch_size", "accumulate", "val_every"):
        value = getattr(config, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{key} must be a positive integer, not {value!r}")
    for key in ("lr", "momentum", "weight_decay", "warmup_epochs", "encoder_lr_scale"):
        value = getattr(config, key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{key} must be a non-negative number, not {value!r}")
    if not isinstance(config.ema, (int, float)) or isinstance(config.ema, bool) or not 0 <= config.ema < 1:
        raise ValueError(f"ema must be a decay in [0, 1) (e.g. 0.99; 0 for none), not {config.ema!r}")
    if not isinstance(config.val_bn_images, int) or isinstance(config.val_bn_images, bool) or config.val_bn_images < 0:
        raise ValueError(f"val_bn_images must be a non-negative integer, not {config.val_bn_images!r}")
    if config.batch_size % config.accumulate:
        raise ValueError(f"batch_size {config.batch_size} must be divisible by accumulate {config.accumulate}")
    for key in ("size", "crop"):
        value = getattr(config, key)
        if value is not None and (not isinstance(value, (list, tuple)) or len(value) != 2 or min(value) < 1):
            raise ValueError(f"{key} must be [HEIGHT, WIDTH], not {value!r}")
    if config.crop is not None and config.size is not None and (
            config.crop[0] > config.size[0] or config.crop[1] > config.size[1]):
        raise ValueError(f"crop {config.crop} must fit in the training size {config.size}")
    if not isinstance(config.color_jitter, (int, float)) or isinstance(config.color_jitter, bool) or not (
            0 <= config.color_jitter < 1):
        raise ValueError(f"color_jitter must be a number in [0, 1), not {config.color_jitter!r}")
    if len(config.scale) != 2 or not 0 < config.scale[0] <= config.scale[1]:
        raise ValueError(f"scale must be [low, high] with 0 < low <= high, not {config.scale!r}")
