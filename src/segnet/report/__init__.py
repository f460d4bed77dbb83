"""Tables, pictures and the HTML page made from results. Imports data (for metadata) only."""

from .evaluation import format_metrics_table, percent, write_evaluation
from .labels import overlay, palette_png, uncertainty_png
from .plots import class_iou_bars, colorize, confusion_heatmap, curves_by_hours, sample_grid, training_curves

__all__ = ["class_iou_bars", "colorize", "confusion_heatmap", "curves_by_hours", "format_metrics_table", "overlay", "palette_png", "percent", "sample_grid",
           "training_curves", "uncertainty_png", "write_evaluation"]
