"""Training: recipes, loss, BN recompute, checkpoints, kill-and-resume, non-finite stop, DDP."""

from __future__ import annotations

import csv
import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import CAMVID_ROOT, SUBPROCESS_SCENES
from segnet.cli import main
from segnet.engine import load_checkpoint, load_model
from segnet.engine.recipes import RECIPES, parse_override, resolve_config
from segnet.engine.train import TrainingError, recompute_bn_statistics, train, weighted_loss_sum
from segnet.pretrained import DEFAULT_PRETRAINED

# small and quick: synthetic scenes at 32x48, 96 training images, batch 8 -> 12 steps per epoch
TINY = {"dataset": "synthetic", "size": [32, 48], "batch_size": 8, "val_every": 1, "device": "cpu"}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}


def test_recipes_carry_the_paper_protocols():
    basic = resolve_config("paper-basic")
    assert (basic.optimizer, basic.lr, basic.momentum, basic.batch_size) == ("sgd", 0.1, 0.9, 12)
    assert basic.class_balancing == "median_frequency" and basic.loss_normalization == "valid_pixels"
    assert basic.select_by == "global_accuracy" and basic.hflip is False and basic.encoder_weights is None
    paper = resolve_config("paper")
    assert (paper.lr, paper.weight_decay, paper.encoder_weights) == (1e-3, 5e-4, "imagenet")
    assert set(RECIPES) == {"paper-basic", "paper", "modern", "finetune", "pretrained"}
    pretrained = resolve_config("pretrained")
    assert (pretrained.optimizer, pretrained.lr, pretrained.class_balancing) == ("adamw", 3e-4, "natural")
    assert pretrained.crop == [180, 240] and pretrained.encoder_weights == "imagenet"
    finetune = resolve_config("finetune")
    assert finetune.crop == [180, 240] and finetune.encoder_lr_scale == 0.1 and finetune.encoder_weights == "imagenet"
    overridden = resolve_config("paper", {"lr": 0.01, "scale": [0.5, 2.0], "encoder_weights": None})
    assert overridden.lr == 0.01 and overridden.scale == [0.5, 2.0] and overridden.encoder_weights is None
    assert parse_override("scale=[0.5,2]") == ("scale", [0.5, 2]) and parse_override("device=cuda:1") == ("device", "cuda:1")
    with pytest.raises(ValueError, match="unknown training option 'lrate'"):
        resolve_config("paper", {"lrate": 1})
    with pytest.raises(ValueError, match="optimizer must be one of"):
        resolve_config("paper", {"optimizer": "lbfgs"})
    assert resolve_config("pretrained", {"class_balancing": "median_frequency_sqrt"}).class_balancing == \
        "median_frequency_sqrt"
    with pytest.raises(ValueError, match="class_balancing must be one of"):
        resolve_config("paper", {"class_balancing": "inverse"})
    with pytest.raises(ValueError, match="divisible by accumulate"):
        resolve_config("paper-basic", {"batch_size": 12, "accumulate": 5})
    with pytest.raises(ValueError, match="unknown recipe"):
        resolve_config("fast")


def test_loss_normalisations():
    logits = torch.randn(2, 3, 4, 5)
    labels = torch.randint(0, 3, (2, 4, 5))
    labels[0, 0] = 255
    weights = torch.tensor([0.5, 2.0, 1.0])
    total, pixels = weighted_loss_sum(logits, labels, weights, 255, "valid_pixels")
    assert pixels == (labels != 255).sum()
    per_pixel = F.cross_entropy(logits, labels, reduction="none", ignore_index=255)
    valid = labels != 255
    assert total == pytest.approx(float((per_pixel * weights[labels.clamp(max=2)])[valid].sum()), rel=1e-5)
    # "weights" is PyTorch's weighted mean: sum / sum of the weights of the valid pixels
    total, weight_sum = weighted_loss_sum(logits, labels, weights, 255, "weights")
    expected = F.cross_entropy(logits, labels, weight=weights, ignore_index=255)
    assert float(total / weight_sum) == pytest.approx(float(expected), rel=1e-5)


def test_bn_recompute_is_the_average_of_batch_statistics():
    bn = nn.BatchNorm2d(3)
    batches = [(torch.randn(4, 3, 5, 5) * (i + 1) + i, None) for i in range(3)]
    assert recompute_bn_statistics(nn.Sequential(bn), batches, "cpu") == 3
    means = torch.stack([x.mean((0, 2, 3)) for x, _ in batches]).mean(0)
    variances = torch.stack([x.var((0, 2, 3), unbiased=True) for x, _ in batches]).mean(0)
    assert torch.allclose(bn.running_mean, means, atol=1e-6) and torch.allclose(bn.running_var, variances, atol=1e-5)
    assert bn.momentum == 0.1  # restored


def test_training_run_writes_everything(tmp_path, few_scenes):
    config = resolve_config("paper-basic", {**TINY, "epochs": 3, "val_every": 2})
    summary = train(config, tmp_path, progress=False)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "class_weights.json", "last.pt", "best.pt", "metrics.csv", "training_curves.png"} <= names
    assert not [n for n in names if n.startswith(".")]  # no temporary files left
    assert json.loads((tmp_path / "config.json").read_text())["lr"] == 0.1
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])  # it learns
    assert rows[0]["val_mean_iou"] == "" and float(rows[1]["val_mean_iou"]) > 0  # validated on epochs 2 and 3
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["epoch"] == 3 and last["recipe"] == "paper-basic" and last["input_size"] == [32, 48]
    assert {"optimizer", "rng", "history", "config", "metrics"} <= set(last)
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["epoch"] == summary["best"]["epoch"] and best["bn_recomputed"] is True
    _loaded = load_model(tmp_path / "best.pt")
    model, meta = _loaded.model, _loaded.meta
    assert meta.name == "synthetic" and not model.training
    with pytest.raises(ValueError, match="already holds a run"):
        train(config, tmp_path, progress=False)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, few_scenes):
    import segnet.engine.train as engine_train

    calls = {"n": 0}
    real = engine_train.weighted_loss_sum

    def poisoned(logits, *args):
        calls["n"] += 1
        total, norm = real(logits, *args)
        return (total * float("nan") if calls["n"] > 3 else total), norm  # 2 steps in epoch 1, fail in epoch 2

    monkeypatch.setattr(engine_train, "weighted_loss_sum", poisoned)
    config = resolve_config("paper-basic", {**TINY, "epochs": 3, "bn_recompute": False})
    with pytest.raises(TrainingError, match=r"loss became nan at epoch 2.*last\.pt"):
        train(config, tmp_path, progress=False)
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in load_checkpoint(tmp_path / "last.pt")["state_dict"].values()
               if v.is_floating_point())


def test_a_loss_that_explodes_but_stays_finite_stops_the_run(tmp_path, few_scenes):
    # lr 5 makes SegNet-Basic diverge within a few steps (at step 6 or 7 here; batch 1 gives epoch 1,
    # before any checkpoint, 16 steps); the loss stays finite for a while
    config = resolve_config("paper-basic", {**TINY, "batch_size": 1, "epochs": 3, "bn_recompute": False, "lr": 5.0})
    with pytest.raises(TrainingError, match=r"times the first step's .*training diverged.*--lr, now 5"):
        train(config, tmp_path, progress=False)
    assert not (tmp_path / "last.pt").exists() and not (tmp_path / "best.pt").exists()
    # nothing to resume: --resume says so, and a fresh start in the same folder is allowed
    with pytest.raises(FileNotFoundError, match="no checkpoint yet.*without --resume"):
        train(config, tmp_path, resume=True, progress=False)
    summary = train(resolve_config("paper-basic", {**TINY, "epochs": 1, "bn_recompute": False}), tmp_path,
                    progress=False)
    assert summary["history"][0]["epoch"] == 1


def _train_command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "segnet", "train", "--out", str(out), "--size", "32x48", "--batch-size", "8",
            "--val-every", "1", "--device", "cpu", *extra]


def _weights(path: Path) -> dict:
    return load_checkpoint(path)["state_dict"]


# Runs `segnet train ARGS` on SUBPROCESS_SCENES and, for N > 0, kills itself with SIGKILL at
# training step N (the Nth loss): a kill -9 at a known point, whatever the machine's load.
_TRAIN_SCRIPT = f"""
import os, signal, sys
from segnet.data import synthetic
synthetic.DEFAULT_SIZES.update({SUBPROCESS_SCENES!r})
import segnet.engine.train as engine_train
real, calls = engine_train.weighted_loss_sum, [0]
def dying(*args, **kwargs):
    calls[0] += 1
    if calls[0] == int(sys.argv[1]):
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)
engine_train.weighted_loss_sum = dying
from segnet.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _train_in_subprocess(out: Path, *extra: str, die_at_step: int = 0) -> list[str]:
    return [sys.executable, "-c", _TRAIN_SCRIPT, str(die_at_step), *_train_command(out, *extra)[3:]]


@pytest.mark.slow
def test_killed_run_resumes_to_identical_weights(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    small = ("--size", "32x32")  # the smallest size the CLI takes: three trainings here
    subprocess.run(_train_in_subprocess(straight, "--epochs", "2", *small), env=ENV, check=True,
                   capture_output=True, timeout=300)
    # 6 steps per epoch: step 9 is in the middle of epoch 2, the last
    process = subprocess.run(_train_in_subprocess(killed, "--epochs", "2", *small, die_at_step=9), env=ENV,
                             capture_output=True, timeout=300)
    assert process.returncode == -signal.SIGKILL
    assert load_checkpoint(killed / "last.pt")["epoch"] == 1  # it really died mid-run
    subprocess.run(_train_in_subprocess(killed, "--resume", *small), env=ENV, check=True, capture_output=True,
                   timeout=300)
    a, b = _weights(straight / "last.pt"), _weights(killed / "last.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    history = [r["train_loss"] for r in csv.DictReader(open(killed / "metrics.csv"))]
    assert history == [r["train_loss"] for r in csv.DictReader(open(straight / "metrics.csv"))]


@pytest.mark.slow
def test_two_process_gloo_run_equals_one_process(tmp_path, monkeypatch):
    """torchrun, 2 CPU processes with gloo, batch 8 (4 per rank) == 1 process, batch 8 in 2
    micro-batches of 4 (batch norm sees 4 images in both; SyncBatchNorm is GPU-only); with
    random crops and flips, drawn per sample, and bf16 autocast where the CPU has it."""
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    augment = ("--crop", "24x32", "--set", "hflip=true")
    subprocess.run(_train_in_subprocess(single, "--epochs", "1", "--accumulate", "2", *augment), env=ENV,
                   check=True, capture_output=True, timeout=300)
    script = tmp_path / "train.py"  # torchrun runs a file: the same script, never dying
    script.write_text(_TRAIN_SCRIPT)
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                             "--standalone", str(script), "0", *_train_command(ddp, "--epochs", "1", *augment)[3:]],
                            env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    _loaded = load_model(single / "last.pt")
    single_model, meta, normalization = _loaded.model, _loaded.meta, _loaded.normalization
    ddp_model = load_model(ddp / "last.pt").model
    # the learned parameters agree (summation order differs: all-reduce vs accumulation);
    # BN running statistics are not compared: each forward updates them, and one process
    # with two micro-batches makes twice as many forwards per step as each rank does
    for (name, a), (_, b) in zip(single_model.named_parameters(), ddp_model.named_parameters()):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), name
    # validation is split across the ranks and their confusion matrices summed: the
    # reported score equals one process validating the same weights on the whole split
    from segnet.engine.precision import autocast, resolve_amp
    from segnet.engine.recipes import TrainConfig
    from segnet.engine.train import load_split, validate

    precision = json.loads((ddp / "config.json").read_text())["runtime"]["precision"]
    assert precision == resolve_amp("auto", "cpu")
    monkeypatch.setattr("segnet.data.synthetic.DEFAULT_SIZES", SUBPROCESS_SCENES)  # the scenes the runs had
    images, labels, _ = load_split(TrainConfig(**TINY), "val", progress=False)
    assert len(images) == SUBPROCESS_SCENES["val"]
    ddp_model = ddp_model.to(memory_format=torch.channels_last)  # as trained: same kernels, same ties
    from segnet.engine.precision import avoid_amx_bias_crash

    avoid_amx_bias_crash(ddp_model, precision, "cpu")  # as trained on an AMX CPU: the bias added in the same place
    expected = validate(ddp_model, images, labels, meta, normalization, 4, "cpu", lambda: autocast(precision, "cpu"))
    reported = next(csv.DictReader(open(ddp / "metrics.csv")))
    assert float(reported["val_mean_iou"]) == pytest.approx(expected["mean_iou"], abs=1e-9)
    assert [p.name for p in ddp.iterdir() if p.name.startswith(".")] == []


def test_cli_train_errors(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "r"), "--set", "nonsense=1"]) == 2
    assert "unknown training option" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "r"), "--set", "lr"]) == 2
    assert "key=value" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "none"), "--resume"]) == 3
    assert "no such run folder to --resume" in capsys.readouterr().err


def test_demo_wiring(tmp_path, monkeypatch, capsys, few_scenes):
    import segnet.reproduce.demo as demo

    # the demo's steps, shortened: one epoch on a few small scenes, no BN pass
    monkeypatch.setitem(demo.DEMO_OVERRIDES, "epochs", 1)
    monkeypatch.setitem(demo.DEMO_OVERRIDES, "val_every", 1)
    monkeypatch.setitem(demo.DEMO_OVERRIDES, "bn_recompute", False)
    monkeypatch.setitem(demo.DEMO_OVERRIDES, "size", [32, 48])
    camvid = CAMVID_ROOT.is_dir()
    monkeypatch.setenv("SEGNET_CAMVID", str(CAMVID_ROOT if camvid else tmp_path / "no-camvid"))
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "report.html" in out and "trivial model" in out
    assert (tmp_path / "evaluation" / "report.html").is_file()
    assert len(list((tmp_path / "predictions").glob("*_overlay.png"))) == 4
    # the real street image, segmented by the shipped CamVid model, when CamVid is beside the checkout
    assert len(list((tmp_path / "street").glob("*_overlay.png"))) == (1 if camvid else 0)
    assert f"shipped model {DEFAULT_PRETRAINED}" in out and (("street/" in out) == camvid)


@pytest.mark.slow
def test_reproduce_labels_reduced_scale_and_reuses_finished_runs(tmp_path, capsys, few_scenes):
    from segnet.reproduce.paper import reproduce

    overrides = {"epochs": 1, "size": [32, 48], "batch_size": 8, "device": "cpu", "bn_recompute": False}
    rows = reproduce("table1", None, tmp_path, models=["segnet_basic"], overrides=overrides, dataset="synthetic",
                     progress=False)
    assert rows[0]["reduced_scale"] and rows[0]["paper"] == [82.7, 62.0, 47.7, 35.78]
    assert all(0 <= v <= 1 for v in rows[0]["ours"])
    table = (tmp_path / "table.md").read_text()
    assert "REDUCED SCALE, 32x48, 1 epochs" in table and "82.7 / " in table
    assert rows[0]["train_seconds"] > 0 and " s | " in table
    assert rows[0]["recipe_changes"] == {"batch_size": 8, "bn_recompute": False}  # the deviations, stated
    assert "1 epochs, seed 0, batch_size=8, bn_recompute=False |" in table
    assert (tmp_path / "segnet_basic" / "test" / "report.html").is_file()
    stamp = (tmp_path / "segnet_basic" / "last.pt").stat().st_mtime_ns
    reproduce("table1", None, tmp_path, models=["segnet_basic"], overrides=overrides, dataset="synthetic",
              progress=False)
    assert (tmp_path / "segnet_basic" / "last.pt").stat().st_mtime_ns == stamp  # finished run not retrained
    with pytest.raises(ValueError, match="not in the paper's table1"):
        reproduce("table1", None, tmp_path, models=["segnet"], dataset="synthetic")


@pytest.mark.slow
def test_reproduce_goes_on_when_one_model_diverges(tmp_path, capsys, monkeypatch, few_scenes):
    # One variant stops with a non-finite loss (as FCN-Basic-NoDimReduction does at lr 0.1 on
    # CamVid); the table must say so for it and still hold the model trained after it.
    import segnet.reproduce.paper as reproduce_module
    from segnet.engine.train import TrainingError

    real_train = reproduce_module.train

    def train(config, out, **kwargs):
        if config.model == "fcn_basic_no_dim_reduction":
            raise TrainingError("the training loss became nan at epoch 1, step 3; stopped.")
        return real_train(config, out, **kwargs)

    monkeypatch.setattr(reproduce_module, "train", train)
    code = main(["reproduce", "table1", "--dataset", "synthetic", "--root", str(tmp_path), "--out", str(tmp_path),
                 "--models", "fcn_basic_no_dim_reduction", "segnet_basic", "--epochs", "1", "--size", "32x48",
                 "--batch-size", "8", "--device", "cpu", "--set", "bn_recompute=false", "--set", "lr=0.05"])
    out = capsys.readouterr().out
    assert code == 1 and "training failed for fcn_basic_no_dim_reduction" in out
    table = (tmp_path / "table.md").read_text()
    assert "| fcn_basic_no_dim_reduction | | REDUCED SCALE, 32x48, 1 epochs" in table
    assert "training failed: the training loss became nan" in table
    assert "| segnet_basic | 1.416 |" in table and "lr=0.05" in table


@pytest.mark.slow
def test_resume_extends_finished_runs_exactly_with_crops_and_recorded_changes(tmp_path, capsys, monkeypatch,
                                                                              few_scenes):
    """2 epochs straight == 1 epoch, then --resume --epochs 2 (a finished run extended):
    same weights, bit for bit, with per-sample crops, flips, colour jitter, a weight average
    and the machine's autocast."""
    options = {**TINY, "crop": [24, 32], "hflip": True, "scale": [0.8, 1.2], "color_jitter": 0.3, "ema": 0.9}
    # the timer training reads moves a minute at each look, so that the hours it records
    # (4 decimals) grow by the same steps on any machine, however fast the epochs are
    ticks = itertools.count()
    monkeypatch.setattr("segnet.engine.train.time", SimpleNamespace(perf_counter=lambda: 60.0 * next(ticks)))
    straight, extended = tmp_path / "straight", tmp_path / "extended"
    train(resolve_config("paper-basic", {**options, "epochs": 2}), straight, progress=False)
    train(resolve_config("paper-basic", {**options, "epochs": 1}), extended, progress=False)
    assert load_checkpoint(extended / "best.pt")["bn_recomputed"] is True  # finished, BN recomputed
    assert main(["train", "--out", str(extended), "--resume", "--epochs", "2"]) == 0
    a, b = _weights(straight / "last.pt"), _weights(extended / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    a_ema, b_ema = (load_checkpoint(run / "last.pt")["ema_state_dict"] for run in (straight, extended))
    assert all(torch.equal(a_ema[k], b_ema[k]) for k in a_ema)  # the weights' average resumes exactly too
    best = load_checkpoint(extended / "best.pt")
    assert best["bn_recomputed"] is True and "metrics_running_bn" in best
    # resuming a finished run with nothing to add works, changes nothing, and is recorded
    assert main(["train", "--out", str(extended), "--resume"]) == 0
    assert all(torch.equal(b[k], v) for k, v in _weights(extended / "last.pt").items())
    # a changed rate applies to the remaining epochs and is recorded with the run
    assert main(["train", "--out", str(extended), "--resume", "--epochs", "3", "--lr", "0.01"]) == 0
    config = json.loads((extended / "config.json").read_text())
    assert config["lr"] == 0.01 and config["epochs"] == 3
    assert [s["start_epoch"] for s in config["segments"]] == [0, 1, 2]  # a resume that trained nothing is not kept
    assert config["segments"][-1]["changed"] == {"epochs": [2, 3], "lr": [0.1, 0.01]}
    assert config["runtime"]["precision"] in ("bf16", "off")
    rows = list(csv.DictReader(open(extended / "metrics.csv")))
    assert [float(r["lr"]) for r in rows] == [0.1, 0.1, 0.01]
    assert float(rows[2]["hours"]) > float(rows[1]["hours"]) > 0
    capsys.readouterr()
    # anything else is refused by name; repeating the run's own value is accepted
    assert main(["train", "--out", str(extended), "--resume", "--batch-size", "4", "--crop", "16x16"]) == 2
    err = capsys.readouterr().err
    assert "--batch-size (8 -> 4)" in err and "--crop ([24, 32] -> [16, 16])" in err and "--init-from" in err
    assert main(["train", "--out", str(extended), "--resume", "--recipe", "modern"]) == 2
    assert "--recipe ('paper-basic' -> 'modern')" in capsys.readouterr().err
    assert main(["train", "--out", str(extended), "--resume", "--batch-size", "8", "--epochs", "3"]) == 0


@pytest.mark.slow
def test_init_from_loads_weights_and_reinitialises_only_a_resized_classifier(tmp_path, capsys, few_scenes):
    from segnet.engine.train import load_initial_weights
    from segnet.models import create_model

    source = tmp_path / "source"
    train(resolve_config("paper-basic", {**TINY, "epochs": 1, "bn_recompute": False}), source, progress=False)
    trained = _weights(source / "last.pt")
    model = create_model("segnet_basic", 4)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    message = load_initial_weights(model, str(source / "last.pt"), "segnet_basic", 4)
    assert "classifier.weight, classifier.bias" in message and "6 -> 4 classes" in message
    for key, value in model.state_dict().items():
        assert torch.equal(value, fresh[key] if key.startswith("classifier.") else trained[key]), key
    with pytest.raises(ValueError, match="holds a segnet_basic, but this run trains a fcn_basic"):
        load_initial_weights(create_model("fcn_basic", 6), str(source / "last.pt"), "fcn_basic", 6)
    # from the command line, by shipped name: a new run that starts from trained weights
    assert main(["train", "--out", str(tmp_path / "tuned"), "--init-from", "camvid_segnet_basic", "--epochs", "1",
                 "--size", "32x48", "--batch-size", "8", "--device", "cpu", "--set", "bn_recompute=false"]) == 0
    tuned = load_checkpoint(tmp_path / "tuned" / "last.pt")
    assert tuned["config"]["init_from"] == "camvid_segnet_basic" and tuned["model"]["num_classes"] == 6


@pytest.mark.slow
def test_progress_in_a_log_file_is_one_line_per_epoch(tmp_path):
    result = subprocess.run(_train_in_subprocess(tmp_path / "run", "--epochs", "2", "--set", "bn_recompute=false"),
                            env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "\r" not in result.stderr  # no progress bars when stderr is not a terminal
    epochs = [line for line in result.stderr.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["epoch 1/2", "epoch 2/2"]
    assert "h, val G" in epochs[-1]


def test_validation_can_use_bn_statistics_recomputed_on_training_frames(tmp_path, few_scenes):
    from segnet.data import ResidentLoader
    from segnet.engine.precision import autocast, resolve_amp
    from segnet.engine.recipes import TrainConfig
    from segnet.engine.train import load_split

    config = resolve_config("paper-basic", {**TINY, "epochs": 1, "crop": [24, 32], "val_bn_images": 16,
                                            "bn_recompute": False})
    train(config, tmp_path, progress=False)
    _loaded = load_model(tmp_path / "last.pt")
    model, normalization = _loaded.model, _loaded.normalization
    saved = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    # the same pass by hand: 16 whole training frames, evenly spread, the run's batch size and precision
    images, labels, _ = load_split(TrainConfig(**TINY), "train", progress=False)
    index = torch.linspace(0, len(images) - 1, 16).round().long()
    subset = ResidentLoader(images[index], labels[index], 8, normalization["mean"], normalization["std"], 255,
                            shuffle=False)
    model = model.to(memory_format=torch.channels_last)
    precision = resolve_amp("auto", "cpu")
    recompute_bn_statistics(model, subset, "cpu", autocast=lambda: autocast(precision, "cpu"))
    for key, value in model.state_dict().items():
        if "running" in key:
            assert torch.allclose(value, saved[key], rtol=1e-4, atol=1e-5), key
    assert not torch.equal(saved["encoder.stages.0.1.running_mean"], torch.zeros(64))
    with pytest.raises(ValueError, match="val_bn_images must be a non-negative integer"):
        resolve_config("paper-basic", {"val_bn_images": -1})


def test_encoder_lr_scale_puts_the_encoder_in_its_own_slower_group(tmp_path, few_scenes):
    from segnet.engine.train import parameter_groups
    from segnet.models import create_model

    model = create_model("segnet", 5)
    encoder, rest = parameter_groups(model, 0.1)
    assert encoder["lr_scale"] == 0.1 and rest["lr_scale"] == 1.0
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)].split(".")[0] for p in encoder["params"]} == {"encoders"}
    assert len(encoder["params"]) + len(rest["params"]) == len(list(model.parameters()))
    assert len(parameter_groups(model)) == 1
    train(resolve_config("paper-basic", {**TINY, "epochs": 1, "encoder_lr_scale": 0.1, "bn_recompute": False}),
          tmp_path, progress=False)
    groups = load_checkpoint(tmp_path / "last.pt")["optimizer"]["param_groups"]
    assert [g["lr"] for g in groups] == pytest.approx([0.01, 0.1])


def test_update_ema_is_a_ramped_moving_average_of_weights_and_float_buffers():
    from segnet.engine.train import update_ema

    model, average = torch.nn.BatchNorm2d(2), torch.nn.BatchNorm2d(2)
    with torch.no_grad():
        model.weight.fill_(3.0)
        model.running_mean.fill_(1.0)
        model.num_batches_tracked.fill_(7)
    update_ema(average, model, decay=0.99, step=0)  # first step: d = 1/10
    assert torch.allclose(average.weight, torch.full((2,), 0.1 * 1.0 + 0.9 * 3.0))
    assert torch.allclose(average.running_mean, torch.full((2,), 0.9)) and int(average.num_batches_tracked) == 7
    update_ema(average, model, decay=0.5, step=10**6)  # ramped past the decay: the decay itself
    assert torch.allclose(average.weight, torch.full((2,), 0.5 * 2.8 + 0.5 * 3.0))


def test_with_ema_best_pt_holds_the_average_that_was_validated(tmp_path, few_scenes):
    # one epoch, validated once: best.pt is that epoch's average, which last.pt carries beside the weights
    summary = train(resolve_config("paper-basic", {**TINY, "epochs": 1, "ema": 0.5, "bn_recompute": False}),
                    tmp_path / "run", progress=False)
    best, last = load_checkpoint(tmp_path / "run" / "best.pt"), load_checkpoint(tmp_path / "run" / "last.pt")
    assert summary["best"]["epoch"] == 1 and "ema_state_dict" in last and "ema_state_dict" not in best
    assert all(torch.equal(best["state_dict"][k], last["ema_state_dict"][k]) for k in best["state_dict"])
    assert any(not torch.equal(last["state_dict"][k], last["ema_state_dict"][k]) for k in last["state_dict"])
    with pytest.raises(ValueError, match="ema must be a decay"):
        resolve_config("paper-basic", {"ema": 1.0})
