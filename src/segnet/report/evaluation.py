"""The files of an evaluation: metrics.json, CSV tables, pictures and one self-contained HTML page."""

from __future__ import annotations

import base64
import csv
import html
import json
import os
import shutil
import tempfile
from pathlib import Path


from . import plots

SUMMARY = (("global_accuracy", "G"), ("mean_accuracy", "C"), ("mean_iou", "mIoU"), ("weighted_iou", "wIoU"),
           ("mean_bf_score", "BF"))


def percent(value) -> str:
    """A fraction as a percentage with one decimal; ``-`` when undefined."""
    return "-" if value is None else f"{value * 100:.1f}"


def format_metrics_table(metrics: dict) -> str:
    """A compact terminal table: the summary line, then one line per class."""
    bf = (f" (BF {metrics['bf_mode']}, void {metrics.get('bf_void') or 'mask (before bf_void was recorded)'})" if metrics.get("bf_mode")
          else "")
    lines = [f"{metrics['dataset']}: {metrics['images']} images{bf}",
             "  ".join(f"{label} {percent(metrics[key])}" for key, label in SUMMARY), ""]
    width = max(len(c["name"]) for c in metrics["classes"])
    lines.append(f"{'class':<{width}}  {'acc':>6}  {'IoU':>6}  {'BF':>6}")
    for c in metrics["classes"]:
        lines.append(f"{c['name']:<{width}}  {percent(c['accuracy']):>6}  {percent(c['iou']):>6}  {percent(c['bf_score']):>6}")
    return "\n".join(lines)


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows([["" if v is None else v for v in row] for row in rows])


# what write_evaluation writes (samples.png only when there are samples to show)
EVALUATION_FILES = ("metrics.json", "class_metrics.csv", "image_metrics.csv", "confusion_matrix.csv",
                    "confusion_matrix.png", "class_iou.png", "samples.png", "report.html")


def write_evaluation(evaluation, out_dir: str | os.PathLike, info: dict | None = None) -> dict[str, Path]:
    """Write every output of ``evaluation`` into ``out_dir``; returns name -> path.

    Files are made in a temporary folder beside ``out_dir`` and moved in only when all of
    them are complete, so an interrupted run never leaves a half-written report.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = {**(info or {}), **evaluation.metrics}
    meta = evaluation.meta
    staging = Path(tempfile.mkdtemp(prefix=".evaluate-", dir=out))
    try:
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        _write_csv(staging / "class_metrics.csv", ["class", "accuracy", "iou", "bf_score", "pixels", "predicted_pixels"],
                   [[c["name"], c["accuracy"], c["iou"], c["bf_score"], c["pixels"], c["predicted_pixels"]]
                    for c in metrics["classes"]])
        _write_csv(staging / "image_metrics.csv", ["image", "global_accuracy", "mean_accuracy", "mean_iou", "bf_score",
                                                   "pixels"],
                   [[r["name"], r["global_accuracy"], r["mean_accuracy"], r["mean_iou"], r.get("bf_score"), r["pixels"]]
                    for r in evaluation.images])
        matrix = evaluation.confusion.numpy()
        _write_csv(staging / "confusion_matrix.csv", ["ground_truth \\ predicted", *meta.class_names],
                   [[name, *matrix[i].tolist()] for i, name in enumerate(meta.class_names)])
        plots.confusion_heatmap(matrix, meta.class_names, staging / "confusion_matrix.png")
        plots.class_iou_bars(metrics["classes"], meta, staging / "class_iou.png")
        if evaluation.samples:
            plots.sample_grid(evaluation.samples, meta, staging / "samples.png")
        (staging / "report.html").write_text(_html(metrics, evaluation.images, staging))
        written = {}
        for item in sorted(staging.iterdir()):
            os.replace(item, out / item.name)
            written[item.name] = out / item.name
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _embedded(path: Path, alt: str) -> str:
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _html(metrics: dict, images: list[dict], folder: Path) -> str:
    esc = html.escape
    summary = "".join(f"<tr><th>{label}</th><td>{percent(metrics[key])}</td></tr>" for key, label in SUMMARY)
    classes = "".join(
        f"<tr><td>{esc(c['name'])}</td><td>{percent(c['accuracy'])}</td><td>{percent(c['iou'])}</td>"
        f"<td>{percent(c['bf_score'])}</td><td>{c['pixels']:,}</td></tr>" for c in metrics["classes"])
    ranked = sorted((r for r in images if r["mean_iou"] is not None), key=lambda r: r["mean_iou"])
    worst = "".join(
        f"<tr><td>{esc(r['name'])}</td><td>{percent(r['global_accuracy'])}</td><td>{percent(r['mean_accuracy'])}</td>"
        f"<td>{percent(r['mean_iou'])}</td><td>{percent(r.get('bf_score'))}</td></tr>" for r in ranked[:10])
    context = "".join(f"<li><b>{esc(str(k))}</b>: {esc(str(v))}</li>" for k, v in metrics.items()
                      if k not in ("classes",) and not isinstance(v, (dict, list)))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>segnet evaluation: {esc(metrics['dataset'])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.7em; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
.summary td {{ font-size: 1.4em; font-weight: bold; }}
img {{ max-width: 100%; margin: 0.5em 0; }}
.note {{ color: #666; font-size: 0.9em; }}
</style></head><body>
<h1>Evaluation: {esc(metrics['dataset'])}, {metrics['images']} images</h1>
<p class="note">All scores in percent. G: global pixel accuracy; C: class average accuracy; mIoU: mean
intersection over union (dataset-level confusion matrix, void ignored); wIoU: IoU weighted by class
frequency; BF: boundary F1 ({esc(str(metrics.get('bf_mode')))} matching, tolerance 0.75% of the diagonal,
ground-truth void treated as {esc(str(metrics.get('bf_void') or 'mask (before bf_void was recorded)'))}), mean over images.</p>
<table class="summary">{summary}</table>
<h2>Per class</h2>
<table><tr><th>class</th><th>accuracy</th><th>IoU</th><th>BF</th><th>pixels</th></tr>{classes}</table>
{_embedded(folder / 'class_iou.png', 'per-class IoU')}
<h2>Confusion matrix</h2>
{_embedded(folder / 'confusion_matrix.png', 'normalised confusion matrix')}
<h2>Samples</h2>
{_embedded(folder / 'samples.png', 'sample images, ground truth and predictions')}
<h2>Hardest images (lowest mIoU)</h2>
<table><tr><th>image</th><th>G</th><th>C</th><th>mIoU</th><th>BF</th></tr>{worst}</table>
<p class="note">Every image is in image_metrics.csv; counts in confusion_matrix.csv.</p>
<h2>Run</h2><ul>{context}</ul>
</body></html>
"""
