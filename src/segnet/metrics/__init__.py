"""Segmentation metrics: confusion-matrix scores and the boundary F1 score. Imports nothing from models/data."""

from .boundary import BoundaryF1, boundary_map, image_bf_score, matched_counts, tolerance
from .confusion import ConfusionMatrix, confusion_matrix, scores_from_confusion

__all__ = [
    "BoundaryF1", "ConfusionMatrix", "boundary_map", "confusion_matrix", "image_bf_score", "matched_counts",
    "scores_from_confusion", "tolerance",
]
