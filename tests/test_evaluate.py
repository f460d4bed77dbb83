"""Checkpoints, `evaluate`, the report files and the `segnet evaluate` command."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess

import numpy as np
import pytest
import torch
from torch import nn

from segnet.cli import main
from segnet.data import SYNTHETIC_META, SyntheticRoadScenes
from segnet.engine import evaluate, load_checkpoint, load_model, save_checkpoint
from segnet.metrics import BoundaryF1, ConfusionMatrix
from segnet.models import create_model
from segnet.report import write_evaluation
from segnet.report.evaluation import EVALUATION_FILES

RAW = {"mean": (0.0, 0.0, 0.0), "std": (1 / 255, 1 / 255, 1 / 255)}  # model sees 0..255 pixel values


class LabelInImage(SyntheticRoadScenes):
    """Synthetic scenes whose image carries the label (red = 40 * class), so a model can be exact."""

    def load(self, index):
        image, label = super().load(index)
        image = image.clone()
        image[0] = (label.clamp(max=5) * 40).to(torch.uint8)
        return image, label


class ReadLabel(nn.Module):
    """Predicts class ``(red / 40 + shift) mod K``: perfect with shift 0, always wrong otherwise."""

    def __init__(self, shift: int = 0, num_classes: int = 6):
        super().__init__()
        self.shift, self.num_classes = shift, num_classes
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        target = (torch.round(x[:, 0] / 40).long() + self.shift) % self.num_classes
        return nn.functional.one_hot(target, self.num_classes).permute(0, 3, 1, 2).float() + self.dummy


def test_checkpoint_round_trip_is_safe_and_atomic(tmp_path):
    model = create_model("segnet_basic", 6).eval()
    path = save_checkpoint(tmp_path / "run" / "best.pt", model, "segnet_basic", SYNTHETIC_META,
                           {"mean": (0, 0, 0), "std": (1, 1, 1)}, epoch=3, metrics={"mean_iou": 0.5})
    assert sorted(p.name for p in path.parent.iterdir()) == ["best.pt"]  # no temporary file left
    checkpoint = load_checkpoint(path)
    assert checkpoint["epoch"] == 3 and checkpoint["metrics"] == {"mean_iou": 0.5}
    _loaded = load_model(path)
    loaded, meta, normalization = _loaded.model, _loaded.meta, _loaded.normalization
    assert meta == SYNTHETIC_META and normalization["std"] == [1.0, 1.0, 1.0]
    x = torch.rand(1, 3, 40, 50)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


class Payload:
    """An arbitrary object: unpickling it would import and run code from this module."""


def test_checkpoint_loading_refuses_code_and_garbage(tmp_path):
    torch.save({"format": "segnet-checkpoint", "evil": Payload()}, tmp_path / "code.pt")
    with pytest.raises(ValueError, match="refused to load"):
        load_checkpoint(tmp_path / "code.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a segnet checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    good = save_checkpoint(tmp_path / "good.pt", create_model("segnet_basic", 6), "segnet_basic", SYNTHETIC_META, RAW)
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:1000])
    with pytest.raises(ValueError, match="truncated"):
        load_checkpoint(tmp_path / "cut.pt")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_perfect_and_always_wrong_models():
    dataset = LabelInImage("test", count=5, size=(40, 56))
    perfect = evaluate(ReadLabel(0), dataset, RAW, bf_workers=0, bf_void="mask", progress=False)
    m = perfect.metrics
    assert m["global_accuracy"] == m["mean_accuracy"] == m["mean_iou"] == m["weighted_iou"] == 1.0
    assert m["mean_bf_score"] == 1.0 and m["images"] == 5 and m["bf_mode"] == "exact" and m["bf_void"] == "mask"
    # raw (the default): what the model predicts on void pixels enters BF, not the pixel metrics
    raw = evaluate(ReadLabel(0), dataset, RAW, bf_workers=0, progress=False).metrics
    assert raw["bf_void"] == "raw" and raw["mean_bf_score"] < 1.0 and raw["mean_iou"] == 1.0
    # the confusion matrix is diagonal and counts every non-void pixel once
    labels = torch.stack([dataset.load(i)[1] for i in range(5)])
    valid = labels != SYNTHETIC_META.ignore_index
    assert torch.equal(perfect.confusion.diag(), torch.bincount(labels[valid], minlength=6))
    assert perfect.confusion.sum() == valid.sum() == m["pixels"]
    wrong = evaluate(ReadLabel(1), dataset, RAW, bf_mode="fast", bf_workers=0, progress=False).metrics
    assert wrong["global_accuracy"] == 0.0 and wrong["mean_iou"] == 0.0
    assert all(c["accuracy"] == 0.0 for c in wrong["classes"] if c["pixels"])


def test_evaluate_equals_direct_metric_computation():
    dataset = SyntheticRoadScenes("val", count=6, size=(48, 64))
    model = create_model("segnet_basic", 6)
    result = evaluate(model, dataset, RAW, batch_size=4, bf_workers=2, amp="off", progress=False)
    assert model.training  # evaluate restores the mode it found
    confusion, boundary = ConfusionMatrix(6, 255), BoundaryF1(6, 255)
    model.eval()
    with torch.no_grad():
        for i in range(len(dataset)):
            image, label = dataset.load(i)
            pred = model(image[None].float())[0].argmax(0)  # RAW normalisation is the identity on 0..255
            confusion.update(pred, label)
            boundary.update(pred, label)
    expected = confusion.compute()
    assert torch.equal(result.confusion, confusion.matrix)
    assert result.metrics["mean_iou"] == pytest.approx(expected["mean_iou"])
    assert result.metrics["mean_bf_score"] == pytest.approx(boundary.compute()["mean_bf_score"])
    assert [r["bf_score"] for r in result.images] == pytest.approx(boundary.image_scores, nan_ok=True)
    assert len(result.samples) == 6


def test_write_evaluation_files(tmp_path):
    dataset = LabelInImage("test", count=4, size=(40, 56))
    result = evaluate(ReadLabel(0), dataset, RAW, bf_workers=0, num_samples=2, progress=False)
    written = write_evaluation(result, tmp_path, {"model": "oracle"})
    assert set(written) == {"metrics.json", "class_metrics.csv", "image_metrics.csv", "confusion_matrix.csv",
                            "confusion_matrix.png", "class_iou.png", "samples.png", "report.html"}
    assert set(written) == set(EVALUATION_FILES)  # the overwrite check plans with that list
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("global_accuracy", "mean_accuracy", "mean_iou", "weighted_iou", "mean_bf_score"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["model"] == "oracle" and metrics["images"] == 4 and metrics["bf_mode"] == "exact"
    assert [c["name"] for c in metrics["classes"]] == list(SYNTHETIC_META.class_names)
    assert set(metrics["classes"][0]) >= {"name", "accuracy", "iou", "bf_score"}
    images = list(csv.DictReader(open(tmp_path / "image_metrics.csv")))
    assert len(images) == 4 and float(images[0]["mean_iou"]) == 1.0
    matrix = list(csv.reader(open(tmp_path / "confusion_matrix.csv")))
    assert len(matrix) == 7 and sum(int(v) for row in matrix[1:] for v in row[1:]) == metrics["pixels"]
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "http" not in page  # self-contained
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_cli_evaluate_untrained_model_end_to_end(tmp_path, capsys, few_scenes):
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", "segnet_basic", "--dataset", "synthetic", "--out", str(out),
                 "--bf", "fast", "--workers", "0"]) == 0
    printed = capsys.readouterr()
    assert "mIoU" in printed.out and "report.html" in printed.out
    assert "\r" not in printed.err  # no progress bar when stderr is a log file, not a terminal
    assert json.loads((out / "metrics.json").read_text())["images"] == 4  # few_scenes' test split


def test_cli_evaluate_checkpoint_and_errors(tmp_path, capsys, few_scenes):
    ckpt = save_checkpoint(tmp_path / "best.pt", create_model("segnet_basic", 6), "segnet_basic", SYNTHETIC_META, RAW)
    assert main(["evaluate", "--checkpoint", str(ckpt), "--out", str(tmp_path / "e"), "--bf", "none"]) == 0
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["mean_bf_score"] is None
    assert main(["evaluate", "--out", str(tmp_path / "x")]) == 2
    assert "--checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_camvid_untrained_end_to_end(camvid_root, tmp_path):
    """The whole path on real CamVid data: full-size test images, exact BF (a few images keep it short)."""
    from segnet.data import build_dataset

    dataset = build_dataset("camvid", camvid_root, "test")
    dataset.pairs = dataset.pairs[:3]
    result = evaluate(create_model("segnet_basic", 11), dataset, RAW, bf_workers=0, progress=False)
    written = write_evaluation(result, tmp_path)
    metrics = json.loads(written["metrics.json"].read_text())
    assert metrics["images"] == 3 and metrics["pixels"] > 3 * 360 * 480 * 0.8
    assert len(metrics["classes"]) == 11 and metrics["classes"][0]["name"] == "Sky"


@pytest.mark.slow
def test_report_renders_in_headless_chromium(tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium); .ci/run installs it")
    dataset = LabelInImage("test", count=3, size=(40, 56))
    write_evaluation(evaluate(ReadLabel(1), dataset, RAW, bf_workers=0, progress=False), tmp_path)
    shot = tmp_path / "screenshot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1800", f"--screenshot={shot}",
                    (tmp_path / "report.html").as_uri()], capture_output=True, timeout=120, check=True)
    from PIL import Image

    picture = np.asarray(Image.open(shot).convert("RGB"))
    assert picture.shape[:2] == (1800, 1200)
    # the page drew text, tables and the embedded pictures: many distinct colours, not a blank page
    assert len(np.unique(picture.reshape(-1, 3), axis=0)) > 100


def test_curves_by_hours_draws_one_line_per_run_from_metrics_rows(tmp_path):
    from PIL import Image

    from segnet.report import curves_by_hours

    rows = [{"hours": "0.5", "val_mean_iou": "0.2"}, {"hours": "1.0", "val_mean_iou": ""},  # an epoch not validated
            {"hours": "1.5", "val_mean_iou": "0.35"}]
    path = curves_by_hours({"a": rows, "b": rows[:1]}, tmp_path / "c.png", targets={"paper": 47.7})
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape[0] > 200 and image.shape[1] > 300
    # matplotlib's first two line colours (C0 blue, C1 orange) are both drawn
    for colour in ((31, 119, 180), (255, 127, 14)):
        assert (np.abs(image.astype(int) - colour).sum(-1) < 30).sum() > 20, colour


def test_curves_by_hours_gives_every_run_its_own_colour_beyond_ten(tmp_path):
    from matplotlib.colors import to_rgb
    from PIL import Image

    from segnet.report import curves_by_hours
    from segnet.report.plots import line_colours

    colours = [to_rgb(c) for c in line_colours(12)]
    assert len(set(colours)) == 12  # matplotlib's default cycle would repeat C0 and C1
    runs = {f"run {i}": [{"hours": "0.5", "val_mean_iou": str(0.1 + 0.05 * i)},
                         {"hours": "1.5", "val_mean_iou": str(0.12 + 0.05 * i)}] for i in range(12)}
    image = np.asarray(Image.open(curves_by_hours(runs, tmp_path / "c.png")).convert("RGB")).astype(int)
    for colour in colours[10:]:  # the two colours past the default ten are drawn
        rgb = np.array(colour) * 255
        assert (np.abs(image - rgb).sum(-1) < 30).sum() > 20, colour
    with pytest.raises(ValueError, match="more than a figure's 20"):
        line_colours(21)
