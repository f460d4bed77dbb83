"""Boundary F1 (BF) score (Csurka et al., BMVC 2013), as the SegNet paper computes it.

Per image and class: boundary maps of the binary masks (label == c) of prediction and
ground truth; predicted boundary pixels are matched to ground-truth ones within a tolerance
of 0.75% of the image diagonal; precision, recall and F1 follow. The image's score is the
mean F1 over the classes whose boundary map is non-empty in the ground truth or the
prediction; the dataset's BF is the mean over images.

Two matchings:
- ``exact``: one-to-one, a maximum bipartite matching on the sparse graph of pixel pairs
  within the tolerance: a pixel can be matched only once. (Our own augmenting-path
  matcher: SciPy's ``maximum_bipartite_matching`` takes exponential time on such chain-like
  graphs, scipy/scipy#26147.)
- ``fast``: the distance-transform approximation (MATLAB's ``bfscore``): a pixel counts as
  matched if any boundary pixel of the other map lies within the tolerance. Never lower
  than ``exact``.

Ground-truth void pixels: the prediction there is set to void too before the boundary maps
are drawn, so a model is neither rewarded nor punished for what it predicts on unlabelled
pixels, and the edges of void regions appear identically in both maps.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import distance_transform_edt
from scipy.sparse import coo_matrix
from scipy.spatial import cKDTree

TOLERANCE_FRACTION = 0.0075
MODES = ("exact", "fast")


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """Pixel (i, j) is a boundary when the 2x2 block with top-left corner (i, j) is not constant.

    On the last row (column) only the right (lower) neighbour is compared; the bottom-right
    pixel has no block and is never a boundary.
    """
    mask = np.asarray(mask, dtype=bool)
    edge = np.zeros_like(mask)
    edge[:-1, :] |= mask[:-1, :] != mask[1:, :]
    edge[:, :-1] |= mask[:, :-1] != mask[:, 1:]
    edge[:-1, :-1] |= mask[:-1, :-1] != mask[1:, 1:]
    return edge


def tolerance(shape: tuple[int, int]) -> float:
    """0.75% of the image diagonal (4.5 px at 360x480)."""
    return TOLERANCE_FRACTION * math.hypot(*shape)


def matched_counts(pred_edge: np.ndarray, gt_edge: np.ndarray, tol: float, mode: str = "exact") -> tuple[int, int]:
    """(matched predicted pixels, matched ground-truth pixels) for two boundary maps."""
    if mode == "fast":
        if not gt_edge.any() or not pred_edge.any():
            return 0, 0
        to_gt = distance_transform_edt(~gt_edge)
        to_pred = distance_transform_edt(~pred_edge)
        return int((to_gt[pred_edge] <= tol).sum()), int((to_pred[gt_edge] <= tol).sum())
    if mode != "exact":
        raise ValueError(f"BF mode must be one of {MODES}, not {mode!r}")
    p = np.argwhere(pred_edge)
    g = np.argwhere(gt_edge)
    if len(p) == 0 or len(g) == 0:
        return 0, 0
    pairs = cKDTree(p).sparse_distance_matrix(cKDTree(g), tol, output_type="coo_matrix")
    # sparse_distance_matrix stores no zero distances: add the coincident pixels back
    same_p, same_g = _coincident(p, g, pred_edge.shape[1])
    rows = np.concatenate([pairs.row, same_p])
    cols = np.concatenate([pairs.col, same_g])
    if len(rows) == 0:
        return 0, 0
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(p), len(g))).tocsr()
    graph.sum_duplicates()
    matched = maximum_matching_size(graph.indptr, graph.indices, len(p), len(g), same_p, same_g)
    return matched, matched


def maximum_matching_size(indptr, indices, n_left: int, n_right: int, init_left=(), init_right=()) -> int:
    """Size of a maximum bipartite matching of a CSR graph (left rows, right columns).

    Starts from the given (valid) partial matching, then runs Kuhn phases: a depth-first
    search for an augmenting path from every free left vertex, right vertices visited by a
    failed search marked dead for the rest of the phase, until a phase augments nothing
    (then no augmenting path exists and, by Berge's theorem, the matching is maximum).
    """
    indptr, indices = indptr.tolist(), indices.tolist()
    match_left, match_right = [-1] * n_left, [-1] * n_right
    for u, v in zip(np.asarray(init_left).tolist(), np.asarray(init_right).tolist()):
        match_left[u], match_right[v] = v, u
    for u in range(n_left):  # greedy start for the rest: first free neighbour
        if match_left[u] < 0:
            for v in indices[indptr[u] : indptr[u + 1]]:
                if match_right[v] < 0:
                    match_left[u], match_right[v] = v, u
                    break
    while True:
        visited = [False] * n_right
        augmented = False
        for root in range(n_left):
            if match_left[root] >= 0:
                continue
            # iterative DFS over alternating paths: stack of (left vertex, next edge position)
            stack, path = [[root, indptr[root]]], []
            while stack:
                top = stack[-1]
                u, position = top
                if position == indptr[u + 1]:
                    stack.pop()
                    if path:
                        path.pop()
                    continue
                top[1] += 1
                v = indices[position]
                if visited[v]:
                    continue
                visited[v] = True
                path.append(v)
                if match_right[v] < 0:  # augmenting path found: flip it
                    for (left, _), right in zip(stack, path):
                        match_left[left], match_right[right] = right, left
                    augmented = True
                    break
                stack.append([match_right[v], indptr[match_right[v]]])
        if not augmented:
            return sum(1 for v in match_left if v >= 0)


def _coincident(p: np.ndarray, g: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices into ``p`` and ``g`` of pixels present in both lists."""
    _, p_index, g_index = np.intersect1d(p[:, 0] * width + p[:, 1], g[:, 0] * width + g[:, 1], return_indices=True)
    return p_index, g_index


def image_bf_score(
    pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int | None = None, mode: str = "exact"
) -> tuple[float, list[float]]:
    """BF of one image and the per-class F1 (NaN for classes with no boundary in either map).

    The image score is NaN when no class has a boundary in either map (e.g. both maps are
    one uniform class); such images are left out of the dataset mean.
    """
    pred = np.asarray(pred)
    target = np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in shape")
    if ignore_index is not None:
        pred = np.where(target == ignore_index, ignore_index, pred)
    tol = tolerance(target.shape)
    scores = []
    for c in range(num_classes):
        pred_edge = boundary_map(pred == c)
        gt_edge = boundary_map(target == c)
        n_pred, n_gt = int(pred_edge.sum()), int(gt_edge.sum())
        if n_pred == 0 and n_gt == 0:
            scores.append(float("nan"))
            continue
        matched_pred, matched_gt = matched_counts(pred_edge, gt_edge, tol, mode)
        precision = matched_pred / n_pred if n_pred else 0.0
        recall = matched_gt / n_gt if n_gt else 0.0
        scores.append(2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0)
    valid = [s for s in scores if not math.isnan(s)]
    return (float(np.mean(valid)) if valid else float("nan")), scores


class BoundaryF1:
    """Accumulates per-image BF scores; ``compute()`` gives the dataset BF and per-class means."""

    def __init__(self, num_classes: int, ignore_index: int | None = None, mode: str = "exact") -> None:
        if mode not in MODES:
            raise ValueError(f"BF mode must be one of {MODES}, not {mode!r}")
        self.num_classes, self.ignore_index, self.mode = num_classes, ignore_index, mode
        self.image_scores: list[float] = []
        self.class_scores: list[list[float]] = []

    def update(self, pred, target) -> list[float]:
        """Add a batch ``(N, H, W)`` (tensors or arrays); returns the batch's image scores."""
        pred = pred.cpu().numpy() if hasattr(pred, "cpu") else np.asarray(pred)
        target = target.cpu().numpy() if hasattr(target, "cpu") else np.asarray(target)
        if pred.ndim == 2:
            pred, target = pred[None], target[None]
        batch = []
        for p, t in zip(pred, target):
            score, per_class = image_bf_score(p, t, self.num_classes, self.ignore_index, self.mode)
            self.image_scores.append(score)
            self.class_scores.append(per_class)
            batch.append(score)
        return batch

    def compute(self) -> dict:
        images = np.array(self.image_scores, dtype=np.float64)
        classes = np.array(self.class_scores, dtype=np.float64).reshape(-1, self.num_classes)
        # nanmean without "mean of empty slice" warnings: an all-NaN column stays NaN
        counts = np.isfinite(classes).sum(0)
        per_class = np.where(counts > 0, np.nansum(classes, 0) / np.maximum(counts, 1), np.nan)
        finite = images[np.isfinite(images)]
        mean = float(finite.mean()) if len(finite) else float("nan")
        return {"mean_bf_score": mean, "class_bf_score": per_class.tolist(), "bf_mode": self.mode,
                "bf_images": int(np.isfinite(images).sum())}
