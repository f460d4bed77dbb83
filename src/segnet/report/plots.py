"""Pictures of results, drawn with matplotlib's file backend (no screen needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..data import DatasetMeta


def _pyplot():
    """pyplot on the file backend, imported when a picture is drawn: most commands draw none,
    and importing it costs every command's start-up a third of a second or more."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def colorize(label: np.ndarray, meta: DatasetMeta) -> np.ndarray:
    """``(H, W)`` class ids -> ``(H, W, 3)`` uint8 in the dataset's palette (ignore: its colour)."""
    table = np.zeros((256, 3), dtype=np.uint8)
    table[:] = meta.ignore_color
    table[: meta.num_classes] = np.array(meta.palette, dtype=np.uint8)
    return table[np.clip(label, 0, 255).astype(np.int64)]


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def confusion_heatmap(matrix: np.ndarray, class_names: Sequence[str], path: Path) -> Path:
    """Row-normalised confusion matrix (each row: where that class's pixels went)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    rows = matrix.sum(1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    k = len(class_names)
    fig, ax = _pyplot().subplots(figsize=(1.0 + 0.55 * k, 0.8 + 0.5 * k))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title("confusion matrix (rows sum to 1)")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if normalised[i, j] >= 0.005:
                    ax.text(j, i, f"{normalised[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if normalised[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, path)


def class_iou_bars(classes: list[dict], meta: DatasetMeta, path: Path) -> Path:
    """Horizontal IoU bars per class, in the class colours, with the mean marked."""
    names = [c["name"] for c in classes]
    values = [c["iou"] if c["iou"] is not None else 0.0 for c in classes]
    fig, ax = _pyplot().subplots(figsize=(6, 0.8 + 0.35 * len(names)))
    colors = [np.array(meta.palette[i]) / 255 for i in range(len(names))]
    ax.barh(range(len(names)), [v * 100 for v in values], color=colors, edgecolor="black", linewidth=0.5)
    for i, c in enumerate(classes):
        text = "n/a" if c["iou"] is None else f"{c['iou'] * 100:.1f}"
        ax.text(min(values[i] * 100 + 1, 92), i, text, va="center", fontsize=8)
    present = [v for v, c in zip(values, classes) if c["iou"] is not None]
    if present:
        ax.axvline(np.mean(present) * 100, color="black", linestyle="--", linewidth=1, label="mean IoU")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("IoU (%)")
    ax.set_title("per-class IoU")
    return _save(fig, path)


def sample_grid(samples: list, meta: DatasetMeta, path: Path) -> Path:
    """Rows of image | ground truth | prediction, with the palette as a legend."""
    from matplotlib.patches import Patch

    n = max(len(samples), 1)
    height, width = samples[0][0].shape[:2] if samples else (1, 1)
    fig, axes = _pyplot().subplots(n, 3, figsize=(9, 3 * n * height / width + 0.6), squeeze=False)
    for row, (image, target, pred, name) in zip(axes, samples):
        for ax, picture, title in zip(row, (image, colorize(target, meta), colorize(pred, meta)),
                                      (name, "ground truth", "prediction")):
            ax.imshow(picture, interpolation="nearest")
            ax.set_title(title, fontsize=9)
    for ax in axes.ravel():
        ax.axis("off")
    handles = [Patch(color=np.array(c) / 255, label=name) for name, c in zip(meta.class_names, meta.palette)]
    handles.append(Patch(color=np.array(meta.ignore_color) / 255, label="void (ignored)"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.6 / (3 * n * height / width + 0.6), 1, 1))
    return _save(fig, path)


def training_curves(epochs: list[dict], path: Path) -> Path:
    """Training loss and validation scores per epoch (from metrics.csv rows)."""
    fig, (left, right) = _pyplot().subplots(1, 2, figsize=(10, 3.8))
    x = [row["epoch"] for row in epochs]
    left.plot(x, [row["train_loss"] for row in epochs], marker=".", label="training loss")
    left.set_xlabel("epoch")
    left.set_ylabel("loss")
    left.set_title("training loss")
    validated = [row for row in epochs if row.get("val_global_accuracy") not in (None, "")]
    for key, label in (("val_global_accuracy", "G"), ("val_mean_accuracy", "C"), ("val_mean_iou", "mIoU")):
        right.plot([row["epoch"] for row in validated], [float(row[key]) * 100 for row in validated], marker="o",
                   label=label)
    right.set_xlabel("epoch")
    right.set_ylabel("%")
    right.set_title("validation")
    if validated:
        right.legend()
    for ax in (left, right):
        ax.grid(alpha=0.3)
    return _save(fig, path)


def line_colours(count: int) -> list:
    """``count`` distinct line colours: matplotlib's default ten (C0, C1, ...) while they
    suffice, the 20 of ``tab20`` beyond ten, so no two runs of a figure share a colour."""
    if count <= 10:
        return [f"C{i}" for i in range(count)]
    if count > 20:
        raise ValueError(f"{count} lines are more than a figure's 20 distinguishable colours; draw fewer runs")
    return [_pyplot().get_cmap("tab20")(i) for i in range(count)]


def curves_by_hours(runs: dict[str, list[dict]], path: Path, key: str = "val_mean_iou",
                    targets: dict[str, float] | None = None, title: str = "") -> Path:
    """One validation score against cumulative wall-clock hours, one line per run
    (``runs``: name -> metrics.csv rows), with dashed horizontal ``targets`` (percent)."""
    fig, ax = _pyplot().subplots(figsize=(7, 4))
    for (name, rows), colour in zip(runs.items(), line_colours(len(runs))):
        points = [(float(r["hours"]), float(r[key]) * 100) for r in rows
                  if r.get(key) not in (None, "") and r.get("hours") not in (None, "")]
        if points:
            ax.plot(*zip(*points), marker="o", markersize=3, label=name, color=colour)
    for label, value in (targets or {}).items():
        ax.axhline(value, linestyle="--", color="grey", linewidth=1)
        ax.annotate(label, (0, value), xycoords=("axes fraction", "data"), textcoords="offset points",
                    xytext=(4, 3), fontsize=8, color="grey")
    ax.margins(y=0.15)  # room above the highest target's label
    ax.set_xlabel("wall-clock hours (training and validation)")
    ax.set_ylabel(f"{key.replace('val_', 'validation ').replace('_', ' ')} (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    # below the axes: with several runs a legend inside covers the lowest curves
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=1 if len(runs) > 3 else max(1, len(runs)))
    return _save(fig, path)
