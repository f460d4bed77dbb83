"""Reproduce the paper's CamVid tables: train each model with the paper's recipe, evaluate
on the test set with exact BF, and set the numbers beside the paper's.

A run that changes the protocol's input size or length is labelled "reduced scale" in
every table it writes; it is never presented as the paper's protocol.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from ..data import build_dataset
from ..files import atomic_path, write_json
from ..models import count_parameters
from ..report import percent, write_evaluation
from ..engine.checkpoint import load_checkpoint
from ..engine.inference import load_model
from ..engine.recipes import RECIPES, resolve_config
from ..engine.train import TrainingError, resolve_device, resume_config, train

# Table 1 (CamVid, 360x480, median frequency balancing): G, C, mIoU, BF (percent)
PAPER_TABLE1 = {
    "bilinear_interpolation": (77.9, 61.1, 43.3, 20.83),
    "segnet_basic": (82.7, 62.0, 47.7, 35.78),
    "segnet_basic_encoder_addition": (83.4, 63.6, 48.5, 35.92),
    "segnet_basic_single_channel_decoder": (81.2, 60.7, 46.1, 31.62),
    "fcn_basic": (81.7, 62.4, 47.3, 38.11),
    "fcn_basic_no_addition": (80.5, 58.6, 44.1, 31.96),
    "fcn_basic_no_dim_reduction": (84.1, 63.4, 50.1, 37.37),
    "fcn_basic_no_addition_no_dim_reduction": (80.5, 61.6, 45.9, 30.47),
}
# SegNet (VGG16) on CamVid test, trained on 3,433 images (the paper has no 367-image row)
PAPER_SEGNET = {"segnet": (90.40, 71.20, 60.10, 46.84)}
# Table 3 (CamVid test, 3,433 training images, no balancing), the longest-trained column
PAPER_TABLE3 = {
    "segnet": PAPER_SEGNET["segnet"],
    "deeplab_largefov": (88.20, 62.53, 53.88, 32.77),
    "fcn_bilinear": (83.27, 59.56, 49.83, 27.99),
    "fcn8s": (83.14, 64.21, 51.96, 33.18),
    "deconvnet": (89.58, 70.24, 59.77, 52.23),
}
TARGETS = {"table1": ("paper-basic", PAPER_TABLE1), "segnet": ("paper", PAPER_SEGNET),
           "table3": ("paper", PAPER_TABLE3)}


def reproduce(target: str, root: str | None, out_dir: str | os.PathLike, models: list[str] | None = None,
              overrides: dict | None = None, dataset: str = "camvid", progress: bool = True) -> list[dict]:
    """Train (or resume) and evaluate every model of ``target``; write table.md and table.json."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose one of: {', '.join(TARGETS)}")
    recipe, paper = TARGETS[target]
    models = models or list(paper)
    unknown = [m for m in models if m not in paper]
    if unknown:
        raise ValueError(f"{', '.join(unknown)} not in the paper's {target}; choose from: {', '.join(paper)}")
    overrides = dict(overrides or {})
    out = Path(out_dir)
    rows = []
    for name in models:
        config = resolve_config(recipe, {**overrides, "model": name, "dataset": dataset, "root": root})
        run_dir = out / name
        try:
            train_or_resume(config, run_dir, progress=progress)
        except TrainingError as error:  # e.g. a diverging variant: report it, go on with the others
            print(f"{name}: {error}")
            rows.append(failed_row(config, error, dataset, paper[name]))
            continue
        rows.append(test_run(run_dir, recipe, dataset, root, paper[name], progress=progress))
    write_json(out / "table.json", rows)
    with atomic_path(out / "table.md") as tmp:
        tmp.write_text(format_table(rows, target) + "\n")
    return rows


def train_or_resume(config, run_dir: Path, progress: bool = True, stop_at: float | None = None,
                    clock: Callable[[], float] = time.time) -> None:
    """Train ``config`` in ``run_dir``; continue it there if it was interrupted (or planned
    longer now); leave a finished run alone. ``stop_at``: a ``clock()`` value (``train``)."""
    if not (run_dir / "last.pt").exists():
        train(config, run_dir, progress=progress, stop_at=stop_at, clock=clock)
    elif load_checkpoint(run_dir / "last.pt")["epoch"] < config.epochs:  # interrupted, or extended
        resumed = resume_config(run_dir, {"epochs": config.epochs, "device": config.device})
        train(resumed, run_dir, resume=True, progress=progress, stop_at=stop_at, clock=clock)


def failed_row(config, error: Exception, dataset: str, paper) -> dict:
    """The table row of a run whose training failed: described as planned (epochs included),
    since the error says where it stopped."""
    return {**describe_run(config.recipe, asdict(config), config.epochs, dataset), "model": config.model,
            "failed": str(error), "paper": list(paper)}


def test_run(run_dir: Path, recipe: str, dataset: str, root: str | None, paper, progress: bool = True) -> dict:
    """Evaluate a run's best.pt on the test split (exact BF), write ``run_dir/test``, and
    return its table row: the run as it was made, the scores, the paper's beside them."""
    last = load_checkpoint(run_dir / "last.pt")
    train_seconds = sum(entry["seconds"] for entry in last["history"])  # resumed epochs included
    best = load_model(run_dir / "best.pt", device=resolve_device(last["config"]["device"]))
    result = best.evaluate(build_dataset(dataset, root, "test"), bf_mode="exact", device=best.device,
                           progress=progress)
    # described from the run's own configuration, which may predate this invocation
    info = {"model": last["config"]["model"], **describe_run(recipe, last["config"], last["epoch"], dataset),
            "best_epoch": last["best"]["epoch"]}
    write_evaluation(result, run_dir / "test", info)
    m = result.metrics
    return {**info, "params": count_parameters(best.model), "train_seconds": round(train_seconds, 1),
            "ours": [m["global_accuracy"], m["mean_accuracy"], m["mean_iou"], m["mean_bf_score"]],
            "paper": list(paper)}


def describe_run(recipe: str, run_config: dict, epochs: int, dataset: str) -> dict:
    """Recipe, seed, epochs, size, whether the run is reduced scale, and how it departs from the recipe."""
    changes = {key: run_config[key] for key, value in RECIPES[recipe].items()
               if key != "epochs" and key in run_config and run_config[key] != value}
    changes.update({key: run_config[key] for key in ("crop", "init_from") if run_config.get(key) is not None})
    reduced = run_config["size"] is not None or epochs < RECIPES[recipe]["epochs"] or dataset != "camvid"
    return {"recipe": recipe, "seed": run_config["seed"], "epochs": epochs, "input_size": run_config["size"],
            "dataset": dataset, "reduced_scale": reduced, "recipe_changes": changes}


def format_table(rows: list[dict], target: str) -> str:
    """Paper vs this project, side by side, with the scale of each run stated."""
    lines = ["| model | params (M) | run | training time | G paper / ours | C paper / ours | mIoU paper / ours "
             "| BF paper / ours |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        changes = row.get("recipe_changes") or {}
        if row.get("budget_limited"):  # fewer epochs than the recipe because the time ran out
            scale = f"budget-limited: {row['epochs']} of {row['protocol_epochs']} epochs"
            if row["input_size"] or row.get("dataset", "camvid") != "camvid":
                scale += ", REDUCED SCALE"
        else:
            scale = "REDUCED SCALE" if row["reduced_scale"] else "CHANGED RECIPE" if changes else "paper protocol"
        if row["input_size"]:
            scale += f", {row['input_size'][0]}x{row['input_size'][1]}"
        run = f"{scale}, {row['epochs']} epochs" if not row.get("budget_limited") else f"{scale}, {row['recipe']}"
        run += f", seed {row['seed']}"
        if changes:
            run += ", " + ", ".join(f"{key}={value}" for key, value in changes.items())
        name = row.get("name", row["model"])
        if "failed" in row:
            lines.append(f"| {name} | | {run} | | training failed: {row['failed']} | | | |")
            continue
        cells = " | ".join(f"{p:.1f} / {percent(o)}" for p, o in zip(row["paper"], row["ours"]))
        seconds = row["train_seconds"]
        time = f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"
        lines.append(f"| {name} | {row['params'] / 1e6:.3f} | {run} | {time} | {cells} |")
    if target not in TARGETS:  # the caller adds its own note
        return "\n".join(lines)
    note = ("Paper: Table 1 (367 training images, MFB)." if target == "table1" else
            "Paper: trained on 3,433 images (CamVid plus other road scenes), Table 3's longest column; "
            "ours on CamVid's 367.")
    return "\n".join(lines + ["", note])
