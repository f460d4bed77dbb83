"""The whole paper in one time budget: ``segnet reproduce all --budget 25m``.

Four steps, each written to disk as soon as it is done, so that a process killed at any
moment leaves every finished run behind:

1. **measure**: a few real training steps of every planned model at its training size
   give images/s on this device, and a forward pass and one exact BF evaluation give the
   cost of validating and testing;
2. **plan**: epochs per run so that the runs, in priority order, fit the budget
   (``plan.json``, printed before anything trains);
3. **run**: train, test with exact BF, write ``runs/NAME/result.json`` and refresh the
   bundle, run after run; each run stops by itself when its share of the time is spent,
   and the whole stops before the budget ends, leaving time to write;
4. **bundle**: at most 8 small files in ``OUT/bundle`` (see ``reproduce.bundle``).

Priority: (1) SegNet-Basic with the paper-basic recipe; (2) SegNet (VGG16) with the
paper's recipe and with the best recipe of docs/results.md; (3) the seven other Table 1
variants; (4) the comparison networks of Table 3. Runs the planned epochs cannot take to
the recipe's length are labelled "budget-limited" in every table.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import queue
import signal
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..engine.measure import device_name, measure_training, median_seconds, synchronize, training_step
from ..data import build_dataset
from ..files import write_json
from ..models import create_model, model_info
from ..engine.precision import autocast, resolve_amp
from ..engine.recipes import resolve_config
from .paper import PAPER_SEGNET, PAPER_TABLE1, PAPER_TABLE3, failed_row, test_run, train_or_resume
from ..engine.train import TrainingError, resolve_device

RIVALS = ("deeplab_largefov", "fcn_bilinear", "fcn8s", "deconvnet")  # Table 3's comparison networks
# the recipe that got SegNet (VGG16) furthest on CamVid's 367 images (recipes.py, docs/results.md)
BEST_SEGNET_RECIPE = "pretrained"
SIDE_BY_SIDE_TIER = 3  # the small Table 1 variants: these may share one GPU


@dataclass
class PlannedRun:
    """One training run of the plan, with what was measured for it and what was planned."""

    name: str  # the run's folder under OUT/runs
    model: str
    recipe: str
    tier: int  # priority: 1 first
    paper: tuple[float, ...]  # G, C, mIoU, BF (percent)
    paper_note: str
    protocol_epochs: int  # the recipe's length
    train_images: int = 0
    val_images: int = 0
    test_images: int = 0
    val_every: int = 10
    train_images_per_s: float = 0.0  # measured
    inference_seconds_per_image: float = 0.0  # measured, at the evaluation size
    bf_seconds_per_image: float = 0.0  # measured: exact BF on one test frame
    load_seconds_per_image: float = 0.0  # measured: decoding a frame and its labels (each run loads its data)
    save_seconds: float = 0.0  # measured: writing one checkpoint (last.pt after every epoch)
    epochs: int = 0  # planned (0: not run)
    side_by_side: bool = False
    kept: bool = False  # finished by an earlier try in the same folder
    failed: str = ""  # why it could not be measured (then it is not run)

    def epoch_seconds(self) -> float:
        return self.train_images / self.train_images_per_s

    def testing_seconds(self) -> float:
        """The test evaluation with exact BF."""
        return self.test_images * (self.inference_seconds_per_image + self.bf_seconds_per_image)

    def seconds(self, epochs: int) -> float:
        """Estimated wall time: training, its validations, the BN pass over the training set
        and the test evaluation with exact BF."""
        if epochs <= 0:
            return 0.0
        validations = math.ceil(epochs / self.val_every)
        infer = self.inference_seconds_per_image
        loading = (self.train_images + self.val_images + self.test_images) * self.load_seconds_per_image
        return (loading + epochs * (self.epoch_seconds() + self.save_seconds)
                + validations * (self.val_images * infer + self.save_seconds)
                + (self.train_images + self.val_images) * infer
                + self.testing_seconds())


def priority_runs(models: list[str] | None = None) -> list[PlannedRun]:
    """The runs of the whole paper in priority order (``models``: keep only these)."""
    from ..engine.recipes import RECIPES

    table1_note = "Table 1: 367 training images, MFB"
    more_data = "trained on 3,433 images (ours on CamVid's 367)"
    runs = [PlannedRun("segnet_basic", "segnet_basic", "paper-basic", 1, PAPER_TABLE1["segnet_basic"], table1_note,
                       RECIPES["paper-basic"]["epochs"]),
            PlannedRun("segnet", "segnet", "paper", 2, PAPER_SEGNET["segnet"], f"Table 3, {more_data}",
                       RECIPES["paper"]["epochs"]),
            PlannedRun(f"segnet-{BEST_SEGNET_RECIPE}", "segnet", BEST_SEGNET_RECIPE, 2, PAPER_SEGNET["segnet"],
                       f"Table 3, {more_data}", RECIPES[BEST_SEGNET_RECIPE]["epochs"])]
    runs += [PlannedRun(name, name, "paper-basic", 3, paper, table1_note, RECIPES["paper-basic"]["epochs"])
             for name, paper in PAPER_TABLE1.items() if name != "segnet_basic"]
    runs += [PlannedRun(name, name, "paper", 4, PAPER_TABLE3[name], f"Table 3 (longest column), {more_data}",
                        RECIPES["paper"]["epochs"]) for name in RIVALS]
    if models:
        unknown = sorted(set(models) - {run.model for run in runs})
        if unknown:
            raise ValueError(f"{', '.join(unknown)}: not in the paper's tables; choose from: "
                             f"{', '.join(dict.fromkeys(run.model for run in runs))}")
        runs = [run for run in runs if run.model in models]
    return runs


def parse_budget(text: str) -> float:
    """``90s``, ``25m``, ``1.5h`` or plain seconds -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    text = str(text).strip().lower()
    try:
        seconds = float(text[:-1]) * units[text[-1]] if text and text[-1] in units else float(text)
    except ValueError:
        seconds = float("nan")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"--budget {text!r}: give a positive time such as 90s, 25m or 1.5h")
    return seconds


def plan_runs(runs: list[PlannedRun], seconds: float, min_epochs: int = 1,
              side_by_side_speedup: float = 1.0) -> list[PlannedRun]:
    """Set ``epochs`` on every run so that the estimated wall time fits ``seconds``.

    Every run gets the recipe's length when all fit. Otherwise each run gets the same
    fraction of its recipe's length (at least ``min_epochs``), and runs that would not get
    even that are dropped (``epochs = 0``) from the end of the priority list. Runs marked
    ``side_by_side`` share the device, which ``side_by_side_speedup`` (measured) credits.
    """
    def wall(run: PlannedRun, epochs: int) -> float:
        cost = run.seconds(epochs)
        return cost / side_by_side_speedup if run.side_by_side else cost

    def epochs_at(run: PlannedRun, fraction: float) -> int:
        return max(min_epochs, min(run.protocol_epochs, math.floor(fraction * run.protocol_epochs)))

    for run in runs:
        run.epochs = 0
    for kept in range(len(runs), 0, -1):
        chosen = runs[:kept]
        if sum(wall(run, epochs_at(run, 0.0)) for run in chosen) > seconds:
            continue
        low, high = 0.0, 1.0
        if sum(wall(run, run.protocol_epochs) for run in chosen) <= seconds:
            low = 1.0
        else:
            for _ in range(50):
                middle = (low + high) / 2
                if sum(wall(run, epochs_at(run, middle)) for run in chosen) <= seconds:
                    low = middle
                else:
                    high = middle
        for run in chosen:
            run.epochs = epochs_at(run, low)
        break
    return runs


def stop_time(run: PlannedRun, later: list[PlannedRun], now: float, end: float, min_epochs: int = 1,
              side_by_side_speedup: float = 1.0) -> float:
    """When ``run`` must stop training: at half as long again as its estimate, and early
    enough to be tested and to leave every planned run after it (``later``) the time of
    ``min_epochs`` epochs, so that one run that outlasts its estimate shortens the ones after
    it rather than dropping them (``end``: the budget's deadline less its reserve)."""
    allowed = 1.5 * run.seconds(run.epochs)
    if run.side_by_side:  # sharing the device, in a process of its own that must start first
        allowed = allowed / side_by_side_speedup + 15
    keep_for_later = sum(r.seconds(min(r.epochs, min_epochs)) for r in later)
    return min(now + allowed, end - run.testing_seconds() - keep_for_later)


def _train_shape(config, frame: tuple[int, int]) -> tuple[int, int]:
    return tuple(config.crop) if config.crop else tuple(config.size) if config.size else frame


def measure_inference(model_name: str, num_classes: int, shape: tuple[int, int], device: torch.device,
                      amp: str = "auto", batch: int = 2) -> float:
    """Seconds per image of a forward pass at ``shape`` (validation and test cost)."""
    model = create_model(model_name, num_classes).to(device).eval().to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, *shape, device=device).contiguous(memory_format=torch.channels_last)
    precision = resolve_amp(amp, device)

    def run() -> None:
        with torch.inference_mode(), autocast(precision, device):
            model(x)
    return median_seconds(run, repeats=1, warmup=1, device=device) / batch


def measure_bf(dataset) -> float:
    """Seconds of exact BF for one test frame: its label against itself shifted by 2 pixels."""
    from ..metrics import BoundaryF1

    _, label = dataset[0]
    label = np.asarray(label)
    metric = BoundaryF1(dataset.meta.num_classes, ignore_index=dataset.meta.ignore_index, mode="exact")
    start = time.perf_counter()
    metric.update(np.roll(label, 2, axis=1)[None], label[None])
    metric.compute()
    return time.perf_counter() - start


def _side_by_side_worker(model_name, num_classes, batch, shape, device, seconds, barrier, results) -> None:
    """One of several processes training side by side: its images/s within a shared window."""
    device = torch.device(device)
    step = training_step(model_name, num_classes, batch, shape, device)
    step()  # warm-up, before the window opens
    synchronize(device)
    barrier.wait()  # all processes ready: the window opens for all at once
    images, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        synchronize(device)
        images += batch
    results.put(images / (time.perf_counter() - start))


def measure_side_by_side(model_name: str, num_classes: int, batch: int, shape: tuple[int, int], device: torch.device,
                         processes: int = 2, seconds: float = 5.0) -> float:
    """Total images/s of ``processes`` training processes sharing ``device`` over the same
    window, divided by one process's images/s: above 1, small models finish sooner side by side."""
    alone = measure_training(model_name, num_classes, batch, shape, device, steps=5)
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(processes), context.Queue()
    workers = [context.Process(target=_side_by_side_worker, args=(model_name, num_classes, batch, tuple(shape),
                                                                 str(device), seconds, barrier, results))
               for _ in range(processes)]
    for worker in workers:
        worker.start()
    speeds: list[float] = []
    waited = time.perf_counter()
    while len(speeds) < processes:  # a worker that dies (out of memory, a crash) must not leave us waiting
        try:
            speeds.append(results.get(timeout=1.0))
        except queue.Empty:
            dead = [w for w in workers if w.exitcode not in (None, 0)]
            if dead or time.perf_counter() - waited > 600:
                for worker in workers:
                    worker.kill()
                why = f"exit code {dead[0].exitcode}" if dead else "no result within 10 minutes"
                raise RuntimeError(f"measuring {processes} {model_name} runs side by side failed: a worker process "
                                   f"ended without a result ({why}); run with --side-by-side 1") from None
    for worker in workers:
        worker.join()
    return sum(speeds) / alone


def measure_saving(model_name: str, num_classes: int) -> float:
    """Seconds to write a checkpoint of this model (weights and SGD momentum) to a temporary file."""
    import tempfile

    state = create_model(model_name, num_classes).state_dict()
    payload = {"state_dict": state, "optimizer": {k: v.clone() for k, v in state.items()}}
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        torch.save(payload, Path(folder) / "checkpoint.pt")
        return time.perf_counter() - start


def _call_and_send(send, function, args) -> None:
    try:
        send.send((True, function(*args)))
    except Exception as error:  # noqa: BLE001 -- reported to the parent, which names the model
        send.send((False, f"{type(error).__name__}: {error}"))


def in_child(function, *args):
    """``function(*args)`` in a fresh process, so that a crash there (an abort or a segfault,
    as oneDNN's bf16 kernels have done on AMX CPUs) costs that call, not this process.
    RuntimeError says how it failed or how the process died."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_call_and_send, args=(send, function, args))
    process.start()
    send.close()
    try:
        ok, value = receive.recv()
    except EOFError:  # died without an answer
        process.join()
        code = process.exitcode
        how = f"signal {-code} ({signal.Signals(-code).name})" if code and code < 0 else f"exit code {code}"
        raise RuntimeError(f"the process died: {how}") from None
    finally:
        receive.close()
    process.join()
    if not ok:
        raise RuntimeError(value)
    return value


def _measure_model(model_name: str, num_classes: int, batch: int, shape: tuple[int, int], evaluated: tuple[int, int],
                   device: str, steps: int, amp: str, channels_last: bool, threads: int) -> tuple[float, float]:
    """(training images/s, inference seconds per image) of one model: run in a child process."""
    torch.set_num_threads(threads)
    device = torch.device(device)
    return (measure_training(model_name, num_classes, batch, shape, device, steps, amp, channels_last),
            measure_inference(model_name, num_classes, evaluated, device, amp))


def measure_runs(runs: list[PlannedRun], dataset: str, root: str | None, device: torch.device,
                 overrides: dict | None = None, steps: int = 3, progress: bool = True) -> dict:
    """Fill in every run's split sizes and measured costs; returns what was measured. Each
    model is measured in a process of its own: one that crashes gets ``failed`` set."""
    splits = {split: build_dataset(dataset, root, split) for split in ("train", "val", "test")}
    meta = splits["train"].meta
    start = time.perf_counter()
    samples = [splits["train"][i] for i in range(min(4, len(splits["train"])))]
    load_seconds = (time.perf_counter() - start) / len(samples)
    frame = tuple(samples[0][1].shape[-2:])  # the label map's H, W
    bf_seconds = measure_bf(splits["test"])
    speeds: dict[tuple, tuple | str] = {}  # (training images/s, inference s/image), or why measuring failed
    saving: dict[str, float] = {}
    for run in runs:
        config = resolve_config(run.recipe, {**(overrides or {}), "model": run.model, "dataset": dataset})
        shape = _train_shape(config, frame)
        evaluated = tuple(config.size) if config.size else frame
        key = (run.model, config.batch_size, shape)
        if key not in speeds:
            try:
                speeds[key] = in_child(_measure_model, run.model, meta.num_classes,
                                       config.batch_size // config.accumulate, shape, evaluated, str(device), steps,
                                       config.amp, config.channels_last, torch.get_num_threads())
            except RuntimeError as error:
                speeds[key] = f"measuring {run.model} failed: {error}"
            if progress:
                print(f"  {run.model}: {speeds[key]}" if isinstance(speeds[key], str) else
                      f"  {run.model}: {speeds[key][0]:.1f} training images/s at {shape[0]}x{shape[1]} "
                      f"(batch {config.batch_size}), {1 / speeds[key][1]:.1f} images/s inference")
        if isinstance(speeds[key], str):
            run.failed = speeds[key]
            continue
        run.train_images_per_s, run.inference_seconds_per_image = speeds[key]
        if run.model not in saving:
            saving[run.model] = measure_saving(run.model, meta.num_classes)
        run.save_seconds = saving[run.model]
        run.bf_seconds_per_image = bf_seconds
        run.load_seconds_per_image = load_seconds
        run.val_every = config.val_every
        run.train_images, run.val_images, run.test_images = (len(splits[s]) for s in ("train", "val", "test"))
    return {"frame": list(frame), "num_classes": meta.num_classes, "bf_seconds_per_image": bf_seconds,
            "load_seconds_per_image": load_seconds, "device": str(device)}


def format_plan(runs: list[PlannedRun], seconds: float) -> str:
    """The plan as a table: epochs against the recipe's, estimated minutes, and the label."""
    lines = [f"plan for {seconds / 60:.1f} minutes of training and testing:",
             f"  {'run':<42} {'tier':>4} {'epochs':>12} {'est. min':>9}  label"]
    for run in runs:
        if run.kept:
            lines.append(f"  {run.name:<42} {run.tier:>4} {run.epochs:>12} {'-':>9}  kept from an earlier try")
            continue
        if run.failed:
            lines.append(f"  {run.name:<42} {run.tier:>4} {'-':>12} {'-':>9}  not run: {run.failed}")
            continue
        if run.epochs == 0:
            lines.append(f"  {run.name:<42} {run.tier:>4} {'-':>12} {'-':>9}  not run: the budget does not reach it")
            continue
        label = "paper protocol length" if run.epochs >= run.protocol_epochs else f"budget-limited: {run.epochs} epochs"
        together = ", side by side" if run.side_by_side else ""
        lines.append(f"  {run.name:<42} {run.tier:>4} {f'{run.epochs}/{run.protocol_epochs}':>12} "
                     f"{run.seconds(run.epochs) / 60:>9.1f}  {label}{together}")
    return "\n".join(lines)


def _run_config(run: PlannedRun, dataset: str, root: str | None, device: str, encoder_weights: str | None,
                overrides: dict) -> dict:
    values = {**overrides, "model": run.model, "dataset": dataset, "root": root, "epochs": run.epochs,
              "device": device}
    if model_info(run.model).vgg_encoder:  # every recipe starts the VGG encoders from ImageNet here, as the paper does
        values["encoder_weights"] = encoder_weights or "imagenet"
    return values


def run_one(run: PlannedRun, out: Path, dataset: str, root: str | None, device: str, encoder_weights: str | None,
            overrides: dict, stop_at: float | None, clock: Callable[[], float] = time.time,
            progress: bool = False) -> dict:
    """Train (or resume) one planned run, test it, and write ``runs/NAME/result.json``
    (``stop_at``: when to stop training, a ``clock()`` value)."""
    run_dir = out / "runs" / run.name
    if (run_dir / "result.json").exists():
        return json.loads((run_dir / "result.json").read_text())
    config = resolve_config(run.recipe, _run_config(run, dataset, root, device, encoder_weights, overrides))
    started = clock()
    try:
        with _log_to(run_dir / "train.log"):  # the epochs' lines go to the run, not the console
            train_or_resume(config, run_dir, progress=progress, stop_at=stop_at, clock=clock)
    except TrainingError as error:
        row = {**failed_row(config, error, dataset, run.paper), "name": run.name, "tier": run.tier,
               "paper_note": run.paper_note}
        write_json(run_dir / "result.json", row)
        return row
    row = test_run(run_dir, run.recipe, dataset, root, run.paper, progress=progress)
    row.update({"name": run.name, "tier": run.tier, "paper_note": run.paper_note,
                "planned_epochs": run.epochs, "protocol_epochs": run.protocol_epochs,
                "budget_limited": row["epochs"] < run.protocol_epochs,
                "wall_seconds": round(clock() - started, 1)})
    write_json(run_dir / "result.json", row)
    return row


@contextmanager
def _log_to(path: Path):
    """segnet's log lines go to ``path`` only, while the block runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger("segnet")
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    saved = logger.propagate, logger.level
    logger.addHandler(handler)
    logger.propagate, logger.level = False, logging.INFO
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.propagate, logger.level = saved


def reproduce_all(root: str | None, out_dir: str | os.PathLike, budget_seconds: float, *, dataset: str = "camvid",
                  device: str = "auto", encoder_weights: str | None = None, models: list[str] | None = None,
                  overrides: dict | None = None, side_by_side: int | str = "auto", min_epochs: int = 1,
                  benchmark: bool = True, measure_steps: int = 3, reserve_seconds: float | None = None,
                  progress: bool = True, clock: Callable[[], float] = time.time,
                  measure: Callable[..., dict] | None = None,
                  measure_together: Callable[..., float] | None = None) -> dict:
    """Measure, plan, run and bundle the paper's runs within ``budget_seconds`` of wall time.

    Returns the summary written to ``OUT/plan.json``. Re-running with the same ``out_dir``
    keeps the finished runs and resumes an interrupted one. ``clock`` (``time.time``),
    ``measure`` (``measure_runs``) and ``measure_together`` (``measure_side_by_side``) are
    what the plan is made from; tests give their own, so that no outcome depends on how
    fast the machine is.
    """
    from .bundle import write_bundle

    measure = measure or measure_runs
    started = clock()
    started_utc = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(started))  # measuring can take long
    deadline = started + budget_seconds
    # writing the bundle and a margin for estimates that run long
    reserve = reserve_seconds if reserve_seconds is not None else max(5.0, 0.05 * budget_seconds)
    out = Path(out_dir)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    overrides = dict(overrides or {})
    torch_device = resolve_device(device)
    runs = priority_runs(models)
    say = print if progress else (lambda *a, **k: None)
    finished = {run.name for run in runs if (out / "runs" / run.name / "result.json").exists()}  # an earlier try's
    todo = [run for run in runs if run.name not in finished]
    if any(model_info(run.model).vgg_encoder for run in todo):  # fail now, not after the first hour of runs
        from ..models.init import load_vgg16_state_dict

        load_vgg16_state_dict(encoder_weights or "imagenet")
    say(f"measuring {len(todo)} runs on {torch_device} ...")
    measured = measure(todo, dataset, root, torch_device, overrides, measure_steps, progress)
    todo = _record_failed_measurements(todo, out, dataset, root, device, encoder_weights, overrides)
    small = [run for run in todo if run.tier == SIDE_BY_SIDE_TIER]
    processes, speedup = _side_by_side(small, side_by_side, torch_device, dataset, overrides, measured,
                                       budget_seconds, say, measure_together or measure_side_by_side)
    for run in small:
        run.side_by_side = processes > 1
    if benchmark and not (out / "benchmark.json").exists():  # an earlier try's is kept
        say("benchmarking inference ...")
        _benchmark(runs, out, overrides, measured, torch_device, progress)
    summary = {"device": device_name(torch_device), "budget_seconds": budget_seconds,
               "started": started_utc, "dataset": dataset,
               "measured": measured, "side_by_side": {"processes": processes, "speedup": speedup},
               "overrides": overrides, "runs": []}

    def replan(remaining: list[PlannedRun]) -> float:
        """Give the runs not yet done the time that is left; record the plan."""
        available = deadline - reserve - clock()
        plan_runs(remaining, available, min_epochs, speedup)
        summary["runs"] = [asdict(run) for run in runs]
        write_json(out / "plan.json", summary)
        return available

    for run in runs:
        if run.name in finished:
            run.kept = True
            run.epochs = json.loads((out / "runs" / run.name / "result.json").read_text()).get("epochs", 0)
    say(format_plan(runs, replan(todo)))
    write_bundle(out)
    if finished:
        say(f"kept from an earlier try: {', '.join(sorted(finished))}")

    def job(run: PlannedRun, remaining: list[PlannedRun]) -> tuple:
        """``run_one``'s arguments, stopping in time to leave the ``remaining`` runs their epochs."""
        later = [r for r in remaining if r.epochs > 0 and not (r is run or (run.side_by_side and r.side_by_side))]
        stop_at = stop_time(run, later, clock(), deadline - reserve, min_epochs, speedup)
        return run, out, dataset, root, device, encoder_weights, overrides, stop_at, clock

    _run_in_order([run for run in todo if run.epochs > 0], out, processes, job, replan, say)
    write_bundle(out)
    return summary


def _record_failed_measurements(todo: list[PlannedRun], out: Path, dataset: str, root: str | None, device: str,
                                encoder_weights: str | None, overrides: dict) -> list[PlannedRun]:
    """Write the table row of every run whose measurement failed; return the others."""
    for run in todo:
        if run.failed:
            values = _run_config(run, dataset, root, device, encoder_weights, overrides)
            config = resolve_config(run.recipe, {**values, "epochs": run.protocol_epochs})  # as it would have run
            row = {**failed_row(config, RuntimeError(run.failed), dataset, run.paper), "name": run.name,
                   "tier": run.tier, "paper_note": run.paper_note}
            (out / "runs" / run.name).mkdir(parents=True, exist_ok=True)
            write_json(out / "runs" / run.name / "result.json", row)
    return [run for run in todo if not run.failed]


def _run_in_order(todo: list[PlannedRun], out: Path, processes: int, job, replan, say) -> None:
    """Run ``todo`` in priority order (the side-by-side group together), rewriting the bundle
    after each and giving the runs left the time that is left (``replan``)."""
    from .bundle import write_bundle

    while todo:
        run = todo[0]
        if run.epochs == 0:
            say(f"{run.name}: not run, the time left does not reach it")
            todo.pop(0)
            continue
        group = [r for r in todo if r.side_by_side and r.epochs > 0] if run.side_by_side else [run]
        say(f"{', '.join(r.name for r in group)}: {run.recipe}, {run.epochs} epochs"
            + (f", {processes} side by side" if len(group) > 1 else "") + " ...")
        if len(group) > 1:  # the small models share the device
            # not a multiprocessing.Pool: its daemonic workers could not start evaluate()'s BF workers
            with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
                for done in as_completed([pool.submit(run_one, *job(r, todo)) for r in group]):
                    say(_row_line(done.result()))
                    write_bundle(out)
        else:
            say(_row_line(run_one(*job(run, todo))))
            write_bundle(out)
        todo = [r for r in todo if r not in group]
        replan(todo)


def _side_by_side(small: list[PlannedRun], side_by_side: int | str, device: torch.device, dataset: str,
                  overrides: dict, measured: dict, budget_seconds: float, say, measure_together) -> tuple[int, float]:
    """``(processes, throughput speed-up)`` for the small runs: several on one GPU when that
    was measured to pay (``auto``), or as many as ``side_by_side`` says."""
    if not small or side_by_side == 1:
        return 1, 1.0
    processes = 2 if side_by_side == "auto" else int(side_by_side)
    if side_by_side == "auto" and device.type != "cuda":
        return 1, 1.0  # CPU threads are already all busy with one run
    if processes == 1:
        return 1, 1.0
    config = resolve_config(small[0].recipe, {**overrides, "model": small[0].model, "dataset": dataset})
    shape = _train_shape(config, tuple(measured["frame"]))
    speedup = measure_together(small[0].model, measured["num_classes"], config.batch_size, shape, device,
                               processes, seconds=min(10.0, max(1.0, budget_seconds / 200)))
    say(f"  {processes} small models side by side: {speedup:.2f}x the throughput of one")
    if side_by_side == "auto" and speedup < 1.1:
        return 1, 1.0
    return processes, speedup


def _benchmark(runs: list[PlannedRun], out: Path, overrides: dict, measured: dict, device: torch.device,
               progress: bool) -> None:
    """The inference benchmark of every planned model at the training frame size, into the bundle."""
    from ..benchmark import run_benchmark, write_benchmark

    size = tuple(overrides["size"]) if overrides.get("size") else tuple(measured["frame"])
    result = run_benchmark(list(dict.fromkeys(run.model for run in runs)), size, str(device), progress=progress)
    write_benchmark(result, out / "benchmark.md")


def _row_line(row: dict) -> str:
    if "failed" in row:
        return f"{row['name']}: training failed: {row['failed']}"
    g, c, miou, bf = (value * 100 for value in row["ours"])
    return (f"{row['name']}: {row['epochs']} epochs, test G {g:.1f} C {c:.1f} mIoU {miou:.1f} BF {bf:.1f} "
            f"(paper {' / '.join(f'{p:.1f}' for p in row['paper'])})")
