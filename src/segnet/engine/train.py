"""One readable training loop: single process, or data-parallel under torchrun.

    run_dir/config.json        the resolved configuration, what it ran on (precision, CPU
                               flags or GPU) and every resume with the values it changed
    run_dir/class_weights.json the loss weights (median frequency balancing or ones)
    run_dir/last.pt, best.pt   checkpoints (atomic; best by the recipe's validation score)
    run_dir/metrics.csv        one row per epoch
    run_dir/training_curves.png

Under ``torchrun --nproc-per-node N`` every rank trains on its slice of each global batch
(DistributedDataParallel), validation confusion matrices are summed across ranks, and only
rank 0 writes files.
"""

from __future__ import annotations

import atexit
import copy
import csv
import logging
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..data import DatasetMeta, ResidentLoader, build_dataset, compute_class_weights, normalize
from ..files import atomic_path, remove_stale_temporaries, write_json
from ..metrics import ConfusionMatrix
from ..models import create_model, model_info
from ..progress import bar_disabled
from .checkpoint import load_checkpoint, save_checkpoint, unwrap
from .precision import autocast as autocast_context
from .precision import avoid_amx_bias_crash, check_device, precision_record, resolve_amp
from .recipes import RESUMABLE, TrainConfig, check_config

log = logging.getLogger("segnet")
CSV_FIELDS = ["epoch", "step", "train_loss", "lr", "images_per_s", "seconds", "hours", "val_global_accuracy",
              "val_mean_accuracy", "val_mean_iou"]


# A loss this many times the first step's means the run diverged (a loss that stays finite
# can still explode: lr 5 on SegNet-Basic reaches 1e15). Healthy runs only fall below it.
DIVERGENCE_FACTOR = 100.0


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the message says what to do."""


# ----------------------------------------------------------------------------- setup
def _distributed() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)``; joins the process group when torchrun started us."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1, 0
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        # leave the group before the interpreter shuts down: left to the finalizer, Gloo's
        # worker threads can abort the exit of a finished run (SIGABRT)
        atexit.register(dist.destroy_process_group)
    return dist.get_rank(), world_size, int(os.environ.get("LOCAL_RANK", "0"))


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` (this process's GPU if there is one, else the CPU), or ``name`` checked;
    under torchrun a bare ``cuda`` means this process's GPU."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    device = check_device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


def resume_config(out_dir: str | os.PathLike, overrides: dict | None = None) -> TrainConfig:
    """The configuration that continues the run in ``out_dir``: its own, with ``overrides``
    applied. Only the ``RESUMABLE`` values may change; an override that repeats the run's
    own value is accepted (the original command plus ``--resume`` works), any other
    change is refused, by name."""
    stored = load_checkpoint(_resumable(Path(out_dir)))["config"]
    config = TrainConfig(**{**stored, **(overrides or {})})
    check_config(config)
    resume_changes(stored, config, out_dir)
    return config


def _resumable(out: Path) -> Path:
    """``out/last.pt``, or FileNotFoundError saying why there is nothing to resume."""
    if not out.is_dir():
        raise FileNotFoundError(f"{out}: no such run folder to --resume; check --out, or start a new run there "
                                "without --resume")
    if not (out / "last.pt").exists():
        raise FileNotFoundError(f"{out}: no checkpoint yet (last.pt is written at the end of each epoch, and this "
                                "run stopped before its first ended); start it again without --resume")
    return out / "last.pt"


def resume_changes(stored: dict, config: TrainConfig, out_dir: str | os.PathLike = "the run") -> dict:
    """``{key: [old, new]}`` for the resumable values ``config`` changes in the ``stored``
    configuration; ValueError naming every other value it changes."""
    before, after = TrainConfig(**stored).to_dict(), config.to_dict()
    changed = {k: [before[k], after[k]] for k in after if before[k] != after[k]}
    refused = sorted(k for k in changed if k not in RESUMABLE)
    if refused:
        flags = ", ".join(f"--{k.replace('_', '-')} ({changed[k][0]!r} -> {changed[k][1]!r})" for k in refused)
        raise ValueError(f"--resume continues {out_dir} with its own configuration; only "
                         f"{', '.join('--' + k.replace('_', '-') for k in RESUMABLE)} may change, not {flags}. "
                         f"To change anything else start a new run (another --out), e.g. with --init-from "
                         f"{Path(out_dir) / 'last.pt'}")
    return changed


def load_initial_weights(model: nn.Module, source: str, model_name: str, num_classes: int) -> str:
    """Load ``source`` (a checkpoint path, or a shipped model's name) into ``model``.

    A checkpoint of another architecture is refused. When only the class count differs,
    the classifier keeps its fresh initialisation and everything else is loaded. Returns
    a sentence saying what was done.
    """
    from ..pretrained import PRETRAINED, pretrained_path

    path = pretrained_path(source) if source in PRETRAINED and not Path(source).exists() else Path(source)
    checkpoint = load_checkpoint(path)
    if checkpoint["model"]["name"] != model_name:
        raise ValueError(f"--init-from {path} holds a {checkpoint['model']['name']}, but this run trains a "
                         f"{model_name}; choose a checkpoint of the same model (or --model "
                         f"{checkpoint['model']['name']})")
    own = model.state_dict()
    theirs = checkpoint["state_dict"]
    missing = sorted(set(own) - set(theirs))
    if missing:
        raise ValueError(f"--init-from {path} lacks {len(missing)} of this model's tensors ({', '.join(missing[:3])}"
                         "...); it was not saved from this architecture")
    old_classes = checkpoint["model"]["num_classes"]
    reinit = [k for k in own if theirs[k].shape != own[k].shape]
    if any(theirs[k].shape[0] != old_classes or own[k].shape[0] != num_classes for k in reinit):
        raise ValueError(f"--init-from {path}: tensor shapes differ beyond the classifier "
                         f"({', '.join(reinit[:3])}); it was not saved from this architecture")
    model.load_state_dict({k: (own[k] if k in reinit else theirs[k]) for k in own})
    if reinit:
        return (f"weights from {path}; classifier ({', '.join(reinit)}) re-initialised: "
                f"{old_classes} -> {num_classes} classes")
    return f"weights from {path} (all {len(own)} tensors)"


def load_split(config: TrainConfig, split: str, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor, DatasetMeta]:
    """A whole split as uint8 images ``(N, 3, H, W)`` and uint8/int labels, resized to ``config.size``."""
    dataset = build_dataset(config.dataset, config.root, split)
    if len(dataset) == 0:
        raise ValueError(f"{config.dataset} split {split!r} has no images")
    images, labels = [], []
    for index in tqdm(range(len(dataset)), desc=f"loading {split}", unit="img", leave=False,
                      disable=not progress):
        image, label = dataset.load(index)
        if config.size is not None and tuple(image.shape[-2:]) != tuple(config.size):
            image = F.interpolate(image[None].float(), size=config.size, mode="bilinear", antialias=True,
                                  align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
            label = F.interpolate(label[None, None].float(), size=config.size, mode="nearest")[0, 0].long()
        images.append(image)
        labels.append(label)
    shapes = {tuple(i.shape) for i in images}
    if len(shapes) > 1:
        raise ValueError(f"{config.dataset} {split} images have different sizes {sorted(shapes)[:3]}...; "
                         "train at one size with --size HxW")
    dtype = torch.uint8 if dataset.meta.ignore_index < 256 else torch.int16
    return torch.stack(images), torch.stack(labels).to(dtype), dataset.meta


def weighted_loss_sum(logits, labels, weights, ignore_index, loss_normalization: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(weighted cross-entropy summed over valid pixels, its normaliser)``.

    ``valid_pixels``: the original's normaliser, the number of non-void pixels;
    ``weights``: PyTorch's weighted mean, the sum of the weights of those pixels.
    Returning both lets a step divide by the normaliser of the whole global batch, so
    micro-batches and ranks add up to exactly the single-batch loss.
    """
    total = F.cross_entropy(logits.float(), labels, weight=weights, ignore_index=ignore_index, reduction="sum")
    valid = labels != ignore_index
    if loss_normalization == "valid_pixels":
        return total, valid.sum().to(total.dtype)
    return total, weights[labels[valid]].sum().to(total.dtype)


def _all_reduce(tensor: torch.Tensor, world_size: int) -> torch.Tensor:
    if world_size > 1:
        dist.all_reduce(tensor)
    return tensor


def validate(model, images, labels, meta: DatasetMeta, normalization: dict, batch_size: int, device,
             autocast, rank: int = 0, world_size: int = 1) -> dict:
    """G, C, mIoU on a resident split; with several ranks each scores a slice and the
    confusion matrices are summed."""
    mine = torch.tensor_split(torch.arange(len(images)), world_size)[rank]
    confusion = ConfusionMatrix(meta.num_classes, meta.ignore_index)
    confusion.matrix = torch.zeros(meta.num_classes, meta.num_classes, dtype=torch.long, device=device)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for chunk in mine.split(batch_size):
            x = normalize(images[chunk].to(device), normalization["mean"], normalization["std"])
            with autocast():
                pred = model(x).argmax(1)
            confusion.update(pred, labels[chunk].to(device).long())
    model.train(was_training)
    _all_reduce(confusion.matrix, world_size)
    return confusion.compute()


@torch.no_grad()
def recompute_bn_statistics(model: nn.Module, loader, device, world_size: int = 1, autocast=nullcontext) -> int:
    """The original's test-time BN: one pass over the training set in training mode, with
    each BN layer's statistics the plain average of the per-batch means and (unbiased)
    variances (PyTorch's ``momentum=None``). Returns the number of batches used."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
    was_training = model.training
    model.train()
    batches = 0
    for images, _ in loader:
        with autocast():
            model(images.to(device))
        batches += 1
    model.train(was_training)
    for m, momentum in zip(layers, saved):
        m.momentum = momentum
        if world_size > 1:
            for buffer in (m.running_mean, m.running_var):
                dist.all_reduce(buffer)
                buffer /= world_size
    return batches


def parameter_groups(model: nn.Module, encoder_lr_scale: float = 1.0) -> list[dict]:
    """One group, or with ``encoder_lr_scale != 1`` the encoder (``encoders.*``/``encoder.*``
    parameters, e.g. ImageNet VGG16) in a group whose rate is scaled by it."""
    named = list(unwrap(model).named_parameters())
    if encoder_lr_scale == 1.0:
        return [{"params": [p for _, p in named]}]
    encoder = [p for n, p in named if n.split(".")[0] in ("encoders", "encoder")]
    if not encoder:
        raise ValueError("encoder_lr_scale needs a model with an encoder (encoders.* parameters)")
    rest = [p for n, p in named if n.split(".")[0] not in ("encoders", "encoder")]
    return [{"params": encoder, "lr_scale": encoder_lr_scale}, {"params": rest, "lr_scale": 1.0}]


def _learning_rate(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    warmup = config.warmup_epochs * steps_per_epoch
    if warmup and step < warmup:
        return config.lr * (step + 1) / warmup
    if config.schedule == "cosine":
        total = config.epochs * steps_per_epoch
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        return config.lr * 0.5 * (1 + math.cos(math.pi * progress))
    return config.lr


def _write_csv(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, CSV_FIELDS)
        writer.writeheader()
        writer.writerows([{k: ("" if row.get(k) is None else row.get(k)) for k in CSV_FIELDS} for row in rows])


# ----------------------------------------------------------------------------- the state
@dataclass
class TrainingState:
    """Everything a run carries from epoch to epoch: what ``setup_training`` builds and the
    stages (``train_one_epoch``, ``validate_and_select``, ``save``) read and update."""

    config: TrainConfig
    out: Path
    rank: int
    world_size: int
    device: torch.device
    per_rank: int  # images per rank in one optimiser step
    model: nn.Module  # DDP-wrapped under torchrun; ``unwrap`` gives the network
    step_model: nn.Module  # what the step runs: the model, or it compiled
    optimizer: torch.optim.Optimizer
    loader: ResidentLoader
    val_images: torch.Tensor | None
    val_labels: torch.Tensor | None
    meta: DatasetMeta
    normalization: dict  # the model's input normalisation (mean, std)
    class_weights: torch.Tensor
    precision: str
    runtime: dict
    progress: bool
    start_epoch: int = 0
    step: int = 0
    history: list = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"value": -1.0, "epoch": None})
    reference_loss: float | None = None  # the first step's loss: the yardstick of the divergence guard
    segments: list = field(default_factory=list)  # one per start or resume
    hours: float = 0.0
    ema: nn.Module | None = None  # the weights' moving average (config.ema > 0): what is validated and kept

    def autocast(self):
        """A fresh precision context (bf16 autocast or nothing)."""
        return autocast_context(self.precision, self.device)


def setup_training(config: TrainConfig, out_dir: str | os.PathLike, resume: bool = False,
                   progress: bool = True) -> TrainingState:
    """Check the configuration, load the data, build the model and optimiser (restored from
    ``out_dir/last.pt`` with ``resume``), write config.json; nothing is written before the
    data and the weights have loaded."""
    out = Path(out_dir)
    rank, world_size, local_rank = _distributed()
    device = resolve_device(config.device, local_rank)
    check_config(config)
    checkpoint, changes = None, {}
    if resume:
        checkpoint = load_checkpoint(_resumable(out), map_location="cpu")
        changes = resume_changes(checkpoint["config"], config, out)
    elif (out / "last.pt").exists():
        raise ValueError(f"{out} already holds a run (last.pt); continue it with --resume or choose another --out")
    per_rank, remainder = divmod(config.batch_size, world_size)
    if remainder or per_rank % config.accumulate:
        raise ValueError(f"batch_size {config.batch_size} must split evenly over {world_size} processes "
                         f"and {config.accumulate} micro-batches")
    torch.manual_seed(config.seed)
    progress = not bar_disabled(progress)
    show = progress and rank == 0
    train_images, train_labels, meta = load_split(config, config.train_split, show)
    val_images, val_labels, _ = load_split(config, config.val_split, show) if config.val_split else (None, None, None)
    normalization = model_info(config.model).normalization
    model = _initial_model(config, meta, checkpoint)  # before anything is written: bad weights leave no run folder
    loader = ResidentLoader(train_images.to(device), train_labels.to(device), per_rank, normalization["mean"],
                            normalization["std"], meta.ignore_index, shuffle=True, drop_last=True,
                            hflip=config.hflip, scale=tuple(config.scale), crop=config.crop,
                            color_jitter=config.color_jitter, seed=config.seed,
                            rank=rank, world_size=world_size)
    if len(loader) == 0:
        raise ValueError(f"batch_size {config.batch_size} is larger than the {len(train_images)} training images")
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        for stale in remove_stale_temporaries(out):  # a killed run's half-written files
            log.info("removed %s, left half-written by a process that was killed", stale)
    # from the stored labels at full size; cached in the run (a resume does not recount)
    balancing = compute_class_weights(build_dataset(config.dataset, config.root, config.train_split),
                                      config.class_balancing, cache=out / "class_weights.json", progress=False)
    precision = resolve_amp(config.amp, device)
    runtime = precision_record(precision, device)
    workaround = avoid_amx_bias_crash(model, precision, device)
    if workaround:  # recorded: the run's arithmetic differs from other machines' by rounding there
        runtime["amx_bias_after_convolution"] = workaround
    model, step_model, optimizer = _placed_model_and_optimizer(config, model, device, world_size)
    state = TrainingState(config, out, rank, world_size, device, per_rank, model, step_model, optimizer, loader,
                          val_images, val_labels, meta, normalization,
                          torch.tensor(balancing["weights"], dtype=torch.float32, device=device), precision, runtime,
                          progress, segments=[{"start_epoch": 0, "runtime": runtime}])
    if config.ema:
        state.ema = copy.deepcopy(unwrap(model)).eval().requires_grad_(False)
    if checkpoint is not None:
        _restore(state, checkpoint, changes)
    if rank == 0:
        write_json(out / "config.json", {**config.to_dict(), "runtime": runtime, "segments": state.segments})
    log.info("%s on %s in %s%s", config.model, device, "bf16 autocast" if precision == "bf16" else "fp32",
             f" ({runtime['cpu']['model']}: {' '.join(runtime['cpu']['flags'])}, {runtime['threads']} threads)"
             if "cpu" in runtime else "")
    return state


def _initial_model(config: TrainConfig, meta: DatasetMeta, checkpoint: dict | None) -> nn.Module:
    """The network with its starting weights: the resumed run's, ``init_from``'s, or He
    initialisation with the encoder weights the configuration names."""
    encoder = config.encoder_weights if checkpoint is None and config.init_from is None else None
    model = create_model(config.model, meta.num_classes, encoder_weights=encoder)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["state_dict"])
    elif config.init_from is not None:
        log.info("starting from %s", load_initial_weights(model, config.init_from, config.model, meta.num_classes))
    return model


def _placed_model_and_optimizer(config: TrainConfig, model: nn.Module, device: torch.device, world_size: int):
    """``(model on the device, in its memory layout and DDP-wrapped under torchrun; the
    model the step runs, compiled when asked; the optimiser)``."""
    model = model.to(device)
    cuda = device.type == "cuda"
    if config.channels_last:  # faster convolutions on CUDA and on CPU (oneDNN), fp32 and bf16
        model = model.to(memory_format=torch.channels_last)
    if world_size > 1:
        if cuda:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    step_model = torch.compile(model) if config.compile else model
    groups = parameter_groups(model, config.encoder_lr_scale)
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    return model, step_model, optimizer


def _restore(state: TrainingState, checkpoint: dict, changes: dict) -> None:
    """Continue where ``checkpoint`` (a run's last.pt) stopped: optimiser, counters, history, random state."""
    state.optimizer.load_state_dict(checkpoint["optimizer"])
    if state.ema is not None:
        state.ema.load_state_dict(checkpoint["ema_state_dict"])
    state.start_epoch, state.step = checkpoint["epoch"], checkpoint["step"]
    state.history, state.best = checkpoint["history"], checkpoint["best"]
    state.reference_loss = checkpoint.get("reference_loss",
                                          state.history[0]["train_loss"] if state.history else None)
    torch.set_rng_state(checkpoint["rng"]["torch"])
    if state.device.type == "cuda" and checkpoint["rng"].get("cuda") is not None:
        torch.cuda.set_rng_state(checkpoint["rng"]["cuda"], state.device)
    state.segments = checkpoint.get("segments", []) + [{"start_epoch": state.start_epoch, "runtime": state.runtime,
                                                        "changed": changes}]
    history = state.history
    state.hours = (history[-1].get("hours") or sum(r["seconds"] for r in history) / 3600) if history else 0.0
    log.info("resuming %s after epoch %d (step %d)%s", state.out, state.start_epoch, state.step,
             "; changed: " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changes.items()) if changes else "")


# ----------------------------------------------------------------------------- the loop
def train(config: TrainConfig, out_dir: str | os.PathLike, resume: bool = False, progress: bool = True,
          stop_at: float | None = None, clock: Callable[[], float] = time.time) -> dict:
    """Train as ``config`` says, writing the run into ``out_dir``; returns a summary dict.

    ``resume=True`` continues from ``out_dir/last.pt`` (same configuration, same data
    order and random state): the result equals an uninterrupted run. ``config`` must then
    be the run's own (``resume_config``), where only the ``RESUMABLE`` values may differ;
    what changed is recorded in config.json. A finished run can be extended by giving a
    larger ``epochs``. ``progress``: progress bars on a terminal or in a notebook; when
    stderr is a log file or a pipe each epoch is one log line. ``stop_at`` (a ``clock()``
    value; ``clock`` is ``time.time`` unless a test injects one): the first epoch that ends
    after it is the last one, validated and saved as the planned last epoch would be; the run
    can be continued with ``resume``.
    """
    state = setup_training(config, out_dir, resume, progress)
    state.model.train()
    for epoch in range(state.start_epoch, config.epochs):
        epoch_start = time.perf_counter()
        row = train_one_epoch(state, epoch)
        # out of time (a budgeted run): this epoch is the last, validated and saved like the planned last one
        out_of_time = stop_at is not None and bool(_all_reduce(
            torch.tensor(float(clock() >= stop_at), device=state.device), state.world_size) > 0)
        metrics = validate_and_select(state, epoch, last=epoch + 1 == config.epochs or out_of_time)
        if metrics is not None:
            row.update({f"val_{k}": metrics[k] for k in ("global_accuracy", "mean_accuracy", "mean_iou")})
        state.hours += (time.perf_counter() - epoch_start) / 3600  # training and validation
        row["hours"] = round(state.hours, 4)
        state.history.append(row)
        if state.rank == 0:
            save(state, "last.pt", epoch + 1, metrics)
            _report_epoch(state, row, metrics)
        if out_of_time and epoch + 1 < config.epochs:
            log.info("stopped after epoch %d of %d: the time allowed ran out (--resume continues it)", epoch + 1,
                     config.epochs)
            break
    return _finish(state)


def train_one_epoch(state: TrainingState, epoch: int) -> dict:
    """One pass over the training set (one optimiser step per global batch); returns the
    epoch's metrics.csv row so far. Stops with ``TrainingError`` when the loss diverges."""
    config, loader = state.config, state.loader
    loader.set_epoch(epoch)
    epoch_start, loss_sum, norm_sum, images_seen, lr = time.perf_counter(), 0.0, 0.0, 0, config.lr
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", leave=False,
               disable=not state.progress or state.rank != 0)
    for images, labels in bar:
        lr = _learning_rate(config, state.step, len(loader))
        for group in state.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        total, norm = train_step(state.step_model, images, labels, state.class_weights, state.meta.ignore_index,
                                 config.loss_normalization, config.accumulate, state.world_size, state.autocast,
                                 config.channels_last)
        loss = float(total / norm.clamp(min=1))
        state.reference_loss = loss if state.reference_loss is None else state.reference_loss
        if not math.isfinite(loss) or loss > DIVERGENCE_FACTOR * max(state.reference_loss, 1e-3):
            state.optimizer.zero_grad(set_to_none=True)
            raise _diverged(state, loss, epoch)
        state.optimizer.step()
        state.optimizer.zero_grad(set_to_none=True)
        if state.ema is not None:
            update_ema(state.ema, unwrap(state.model), state.config.ema, state.step)
        state.step += 1
        loss_sum += float(total)
        norm_sum += float(norm)
        images_seen += len(images) * state.world_size
        bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{images_seen / (time.perf_counter() - epoch_start):.1f}")
    seconds = time.perf_counter() - epoch_start
    return {"epoch": epoch + 1, "step": state.step, "train_loss": loss_sum / max(norm_sum, 1), "lr": lr,
            "images_per_s": round(images_seen / seconds, 2), "seconds": round(seconds, 2), "hours": None}


def _diverged(state: TrainingState, loss: float, epoch: int) -> TrainingError:
    kept = (f"{state.out / 'last.pt'} holds the last good state (after epoch {state.history[-1]['epoch']})"
            if state.history else "no checkpoint had been written yet")
    reference = state.reference_loss
    grown = "" if not math.isfinite(loss) else (
        f" ({loss / reference:.3g} times the first step's {reference:.4g}: training diverged)")
    return TrainingError(
        f"the training loss became {loss:.6g}{grown} at epoch {epoch + 1}, step {state.step + 1}; stopped. "
        f"{kept}. Lower the learning rate (--lr, now {state.config.lr:g}) or check the data (segnet data check), "
        "then --resume or start anew."
    )


def validate_and_select(state: TrainingState, epoch: int, last: bool) -> dict | None:
    """Validate when the schedule says so (every ``val_every`` epochs and after the ``last``);
    a new best by ``select_by`` is saved as best.pt. Returns the scores, or None."""
    config = state.config
    if state.val_images is None or ((epoch + 1) % config.val_every and not last):
        return None
    network = state.ema if state.ema is not None else state.model
    if config.val_bn_images:
        _recompute_bn_on_subset(state, unwrap(network))
    metrics = _validate(state, network)
    if metrics[config.select_by] > state.best["value"]:
        state.best = {"value": metrics[config.select_by], "epoch": epoch + 1}
        if state.rank == 0:
            save(state, "best.pt", epoch + 1, metrics)
    return metrics


def save(state: TrainingState, name: str, epoch: int, metrics: dict | None) -> None:
    """Write ``out/NAME`` (atomic): the network and everything a resume needs. With an
    EMA, best.pt holds the averaged weights (what was validated) and last.pt the trained
    ones, with the average beside them."""
    cuda = state.device.type == "cuda"
    config = state.config
    network = state.ema if state.ema is not None and name == "best.pt" else unwrap(state.model)
    ema = {"ema_state_dict": state.ema.state_dict()} if state.ema is not None and name == "last.pt" else {}
    save_checkpoint(
        state.out / name, network, config.model, state.meta, state.normalization, **ema,
        recipe=config.recipe, config=config.to_dict(), epoch=epoch, step=state.step, metrics=metrics,
        history=state.history, best=state.best, optimizer=state.optimizer.state_dict(), input_size=config.size,
        segments=state.segments, reference_loss=state.reference_loss,
        rng={"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(state.device) if cuda else None},
    )


def _report_epoch(state: TrainingState, row: dict, metrics: dict | None) -> None:
    """metrics.csv, the curves (when there is a new validation) and one log line."""
    from ..report import training_curves

    _write_csv(state.out / "metrics.csv", state.history)
    if metrics is not None:  # a picture to follow a long run by
        training_curves(state.history, state.out / "training_curves.png")
    val = f", val G {row['val_global_accuracy'] * 100:.1f} mIoU {row['val_mean_iou'] * 100:.1f}" if metrics else ""
    log.info("epoch %d/%d: loss %.4f, %.1f img/s, %.2f h%s", row["epoch"], state.config.epochs, row["train_loss"],
             row["images_per_s"], state.hours, val)


def _finish(state: TrainingState) -> dict:
    """BN recomputed for best.pt (when the recipe says so), final curves; the run's summary."""
    summary = {"run_dir": str(state.out), "epochs": len(state.history), "planned_epochs": state.config.epochs,
               "best": state.best, "history": state.history}
    if state.config.bn_recompute and state.best["epoch"] is not None:
        summary["bn_recompute"] = _recompute_best(state)
    if state.rank == 0:
        from ..report import training_curves

        training_curves(state.history, state.out / "training_curves.png")
        _write_tensorboard(state.out, state.history)
    if state.world_size > 1:
        dist.barrier()
    return summary


def train_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
               ignore_index: int, loss_normalization: str = "valid_pixels", accumulate: int = 1, world_size: int = 1,
               autocast=nullcontext, channels_last: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward of one global batch: gradients accumulate in ``model``'s
    parameters (the caller steps the optimiser). Returns ``(loss sum, normaliser)`` over the
    global batch (all ranks), so ``sum / normaliser`` is the batch's loss whatever the
    number of micro-batches (``accumulate``) and processes. ``model`` may be DDP-wrapped
    (or compiled around DDP); ``autocast``: a function returning the precision context."""
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    # normaliser of the whole global batch, so micro-batches and ranks add up exactly
    norm = _all_reduce(_batch_normaliser(labels, weights, ignore_index, loss_normalization), world_size)
    total = torch.zeros((), device=images.device)
    micro_batches = list(zip(images.chunk(accumulate), labels.chunk(accumulate)))
    ddp = next((m for m in (model, getattr(model, "_orig_mod", None)) if hasattr(m, "no_sync")), None)
    for index, (x, y) in enumerate(micro_batches):
        sync = index == len(micro_batches) - 1 or world_size == 1 or ddp is None
        with (nullcontext() if sync else ddp.no_sync()), autocast():
            logits = model(x)
        loss_part, _ = weighted_loss_sum(logits, y, weights, ignore_index, loss_normalization)
        # DDP averages gradients over ranks: scale back up to the global sum / global normaliser
        (loss_part / norm.clamp(min=1) * world_size).backward()
        total += loss_part.detach()
    return _all_reduce(total, world_size), norm


def _batch_normaliser(labels, weights, ignore_index: int, loss_normalization: str) -> torch.Tensor:
    valid = labels != ignore_index
    if loss_normalization == "valid_pixels":
        return valid.sum().float()
    return weights[labels[valid]].sum().float()


def _validate(state: TrainingState, model: nn.Module) -> dict:
    return validate(model, state.val_images, state.val_labels, state.meta, state.normalization, state.per_rank,
                    state.device, state.autocast, state.rank, state.world_size)


def update_ema(average: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    """Move ``average`` (parameters and float buffers, BN statistics among them) towards
    ``model``: ``a = d * a + (1 - d) * m``, with ``d`` ramped up as ``(1 + step) / (10 + step)``
    until it reaches ``decay``, so the first steps' weights do not linger in the average."""
    d = min(decay, (1 + step) / (10 + step))
    with torch.no_grad():
        current = model.state_dict()
        for key, value in average.state_dict().items():
            if value.is_floating_point():
                value.lerp_(current[key].to(value.dtype), 1 - d)
            else:
                value.copy_(current[key])


def _recompute_bn_on_subset(state: TrainingState, network: nn.Module) -> None:
    """BN statistics recomputed over ``val_bn_images`` whole training frames, evenly spread,
    before a validation. Training uses batch statistics, so replacing the running ones costs it
    nothing; at lr 0.1 the running averages lag the weights so far that validating with
    them says little (CamVid SegNet-Basic, 180x240 crops: val G 4% with them, 41% after this)."""
    loader = state.loader
    count = min(state.config.val_bn_images, len(loader.images))
    index = torch.linspace(0, len(loader.images) - 1, count).round().long().unique()
    subset = ResidentLoader(loader.images[index.to(loader.images.device)], loader.labels[index.to(loader.labels.device)],
                            state.per_rank, state.normalization["mean"], state.normalization["std"],
                            state.meta.ignore_index, shuffle=False, drop_last=False, rank=state.rank,
                            world_size=state.world_size)
    recompute_bn_statistics(network, subset, state.device, state.world_size, state.autocast)


def _recompute_best(state: TrainingState) -> dict:
    """Load best.pt's weights, recompute BN statistics over the training set, re-validate, save."""
    if state.world_size > 1:
        dist.barrier()  # rank 0 has written best.pt
    out = state.out
    best_checkpoint = load_checkpoint(out / "best.pt", map_location=state.device)
    keys = ("global_accuracy", "mean_accuracy", "mean_iou")
    if best_checkpoint.get("bn_recomputed"):  # a resumed run whose best.pt has not changed since
        before, after = best_checkpoint["metrics_running_bn"], best_checkpoint["metrics"]
        return {"batches": None, "before": {k: before[k] for k in keys}, "after": {k: after[k] for k in keys}}
    plain = unwrap(state.model)
    plain.load_state_dict(best_checkpoint["state_dict"])
    before = best_checkpoint["metrics"]
    normalization, loader = state.normalization, state.loader
    plain_loader = ResidentLoader(loader.images, loader.labels, state.per_rank, normalization["mean"],
                                  normalization["std"], state.meta.ignore_index, shuffle=False, drop_last=True,
                                  rank=state.rank, world_size=state.world_size)
    batches = recompute_bn_statistics(plain, plain_loader, state.device, state.world_size, state.autocast)
    after = _validate(state, plain)
    result = {"batches": batches, "before": {k: before[k] for k in keys}, "after": {k: after[k] for k in keys}}
    if state.rank == 0:
        extra = {k: v for k, v in best_checkpoint.items()
                 if k not in ("format", "version", "model", "dataset", "normalization", "state_dict", "metrics",
                              "metrics_running_bn", "bn_recomputed")}
        save_checkpoint(out / "best.pt", plain, state.config.model, state.meta, normalization, metrics=after,
                        metrics_running_bn=before, bn_recomputed=True, **extra)
        log.info("best.pt (epoch %s): BN statistics recomputed over %d training batches; val G %.1f -> %.1f, "
                 "mIoU %.1f -> %.1f", best_checkpoint["epoch"], batches, before["global_accuracy"] * 100,
                 after["global_accuracy"] * 100, before["mean_iou"] * 100, after["mean_iou"] * 100)
    return result


def _write_tensorboard(out: Path, history: list[dict]) -> None:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return
    writer = SummaryWriter(str(out / "tensorboard"))
    for row in history:
        for key, value in row.items():
            if key != "epoch" and value is not None:
                writer.add_scalar(key, value, row["epoch"])
    writer.close()
