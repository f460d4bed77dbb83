"""Boundary F1 (BF) score (Csurka et al., BMVC 2013), as the SegNet paper computes it.

Per image and class: boundary maps of the binary masks (label == c) of prediction and
ground truth; predicted boundary pixels are matched to ground-truth ones within a tolerance
of 0.75% of the image diagonal; precision, recall and F1 follow. The image's score is the
mean F1 over the classes whose boundary map is non-empty in the ground truth or the
prediction; the dataset's BF is the mean over images.

Two matchings, on the same graph of (predicted, ground-truth) boundary-pixel pairs within
the tolerance:
- ``exact``: one-to-one, a maximum bipartite matching: a pixel can be matched only once.
  It is solved as a unit-capacity maximum flow (SciPy's Dinic, compiled), all classes of an
  image in one graph. (SciPy's ``maximum_bipartite_matching`` takes exponential time on
  these chain-like graphs, scipy/scipy#26147, so it is not used.)
- ``fast``: the distance-transform criterion (MATLAB's ``bfscore``): a pixel counts as
  matched if any boundary pixel of the other map lies within the tolerance. Never lower
  than ``exact``.

Ground-truth void pixels (``void``, when an ``ignore_index`` is given), three treatments:
- ``raw`` (the default): the prediction as it is. This is what the SegNet authors' released
  BF script does (``Scripts/computeBFmeasure.m`` in SegNet-Tutorial: boundary maps of
  ``prediction == c`` and ``groundTruth == c``, nothing masked). A model is then punished
  for transitions it draws inside void and for not stopping a class where the annotator
  stopped labelling.
- ``mask``: the prediction is set to void wherever the ground truth is void before the maps
  are drawn. What is predicted on unlabelled pixels does not count, but the edges of void
  regions then appear in both maps, as free matches.
- ``drop``: both maps are drawn as they are, then every boundary pixel whose 2x2 block
  touches ground-truth void is removed from both. Void and its edges count for nothing,
  either way.
docs/results.md gives the sources and the sensitivity of CamVid numbers to this choice.
"""

from __future__ import annotations

import math
from concurrent.futures import Executor, Future

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_flow

TOLERANCE_FRACTION = 0.0075
MODES = ("exact", "fast")
VOID_TREATMENTS = ("raw", "mask", "drop")


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


def class_boundaries(label: np.ndarray, classes) -> dict[int, np.ndarray]:
    """Flat (raster-order) indices of the boundary pixels of every class, in one pass.

    Same rule as ``boundary_map(label == c)``: a pixel is a boundary of class c when its
    2x2 block holds c and is not constant, because a block with two distinct labels is
    non-constant in the mask of each label it holds. Padding by replication reproduces
    the last-row/column rule.
    """
    label = np.asarray(label)
    padded = np.pad(label, ((0, 1), (0, 1)), mode="edge")
    a, b, c, d = label, padded[1:, :-1], padded[:-1, 1:], padded[1:, 1:]
    where = np.flatnonzero((a != b) | (a != c) | (a != d))
    members = np.stack([a.ravel()[where], b.ravel()[where], c.ravel()[where], d.ravel()[where]], 1)
    result = {}
    for k in classes:
        result[k] = where[(members == k).any(1)]
    return result


def tolerance(shape: tuple[int, int]) -> float:
    """0.75% of the image diagonal (4.5 px at 360x480)."""
    return TOLERANCE_FRACTION * math.hypot(*shape)


def _offsets(tol: float, width: int) -> tuple[np.ndarray, np.ndarray]:
    reach = int(math.floor(tol))
    dy, dx = np.mgrid[-reach : reach + 1, -reach : reach + 1]
    distance = dy**2 + dx**2
    keep = distance <= tol**2
    # nearest first: the flow's depth-first search then tries the closest partner first
    order = np.argsort(distance[keep], kind="stable")
    return dy[keep][order].astype(np.int32), dx[keep][order].astype(np.int32)


def boundary_pairs(pred_pixels: np.ndarray, gt_pixels: np.ndarray, shape: tuple[int, int], tol: float):
    """All (i, j) with predicted pixel i and ground-truth pixel j at most ``tol`` apart.

    Pixels are flat indices into an image of ``shape``; the pairs come from a lookup image
    over the (few dozen) integer offsets inside the tolerance disc, so no tree is built.
    """
    height, width = shape
    if len(pred_pixels) == 0 or len(gt_pixels) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    lookup = np.full(height * width, -1, dtype=np.int32)
    lookup[gt_pixels] = np.arange(len(gt_pixels), dtype=np.int32)
    dy, dx = _offsets(tol, width)
    y, x = np.divmod(pred_pixels.astype(np.int32), width)
    ny, nx = y[:, None] + dy, x[:, None] + dx
    inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
    found = np.where(inside, lookup[np.where(inside, ny * width + nx, 0)], -1)
    rows, hit = np.nonzero(found >= 0)
    return rows, found[rows, hit]


def maximum_matching_size(rows: np.ndarray, cols: np.ndarray, n_left: int, n_right: int,
                          groups: np.ndarray | None = None, n_groups: int = 1) -> np.ndarray:
    """Sizes of maximum bipartite matchings, one per group of left vertices.

    The edges ``rows[e] -> cols[e]`` may form several independent graphs (one per class);
    ``groups[i]`` names the graph of left vertex i. One unit-capacity maximum flow
    (source -> left -> right -> sink) solves them all; its value through each group is
    that group's maximum matching (integral flows are matchings, and vice versa).
    """
    groups = np.zeros(n_left, np.int64) if groups is None else np.asarray(groups)
    if len(rows) == 0:
        return np.zeros(n_groups, np.int64)
    # vertices: left 0..n_left-1, right n_left.., source, sink; edges listed in order of
    # their tail (rows come sorted), so the CSR arrays are written directly
    order = np.argsort(rows, kind="stable") if np.any(np.diff(rows) < 0) else slice(None)
    rows, cols = rows[order], cols[order]
    source, sink = n_left + n_right, n_left + n_right + 1
    heads = np.concatenate([n_left + cols, np.full(n_right, sink), np.arange(n_left)]).astype(np.int32)
    out_degree = np.concatenate([np.bincount(rows, minlength=n_left), np.ones(n_right, np.int64), [n_left, 0]])
    indptr = np.concatenate([[0], np.cumsum(out_degree)]).astype(np.int32)
    graph = csr_matrix((np.ones(len(heads), np.int32), heads, indptr), shape=(sink + 1, sink + 1))
    flow = maximum_flow(graph, source, sink, method="dinic").flow
    out_of_source = np.asarray(flow[source].toarray()).ravel()[:n_left]
    return np.bincount(groups, weights=out_of_source, minlength=n_groups).astype(np.int64)


def matched_counts(pred_edge: np.ndarray, gt_edge: np.ndarray, tol: float, mode: str = "exact") -> tuple[int, int]:
    """(matched predicted pixels, matched ground-truth pixels) for two boundary maps."""
    if mode not in MODES:
        raise ValueError(f"BF mode must be one of {MODES}, not {mode!r}")
    pred_pixels, gt_pixels = np.flatnonzero(pred_edge), np.flatnonzero(gt_edge)
    rows, cols = boundary_pairs(pred_pixels, gt_pixels, pred_edge.shape, tol)
    if mode == "fast":
        return len(np.unique(rows)), len(np.unique(cols))
    matched = int(maximum_matching_size(rows, cols, len(pred_pixels), len(gt_pixels))[0])
    return matched, matched


def touches_void(target: np.ndarray, ignore_index: int) -> np.ndarray:
    """Flat indices of the pixels whose 2x2 block (as ``boundary_map`` reads it) holds void."""
    void = np.pad(np.asarray(target) == ignore_index, ((0, 1), (0, 1)), mode="edge")
    return np.flatnonzero(void[:-1, :-1] | void[1:, :-1] | void[:-1, 1:] | void[1:, 1:])


def image_bf_score(
    pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int | None = None, mode: str = "exact",
    void: str = "raw",
) -> tuple[float, list[float]]:
    """BF of one image and the per-class F1 (NaN for classes with no boundary in either map).

    ``void``: how ground-truth ``ignore_index`` pixels are treated (``mask``, ``drop`` or
    ``raw``; see the module docstring). The image score is NaN when no class has a
    boundary in either map (e.g. both maps are one uniform class); such images are left out
    of the dataset mean.
    """
    if mode not in MODES:
        raise ValueError(f"BF mode must be one of {MODES}, not {mode!r}")
    if void not in VOID_TREATMENTS:
        raise ValueError(f"BF void treatment must be one of {VOID_TREATMENTS}, not {void!r}")
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in shape")
    if ignore_index is not None and void == "mask":
        pred = np.where(target == ignore_index, ignore_index, pred)
    tol = tolerance(target.shape)
    classes = range(num_classes)
    pred_pixels, gt_pixels = class_boundaries(pred, classes), class_boundaries(target, classes)
    if ignore_index is not None and void == "drop":
        near_void = touches_void(target, ignore_index)
        for pixels in (pred_pixels, gt_pixels):
            for c in classes:
                pixels[c] = pixels[c][~np.isin(pixels[c], near_void, assume_unique=True)]
    n_pred = np.array([len(pred_pixels[c]) for c in classes])
    n_gt = np.array([len(gt_pixels[c]) for c in classes])
    # every class's pairs in one graph: left/right vertex ids offset per class
    pred_start = np.concatenate([[0], np.cumsum(n_pred)])
    gt_start = np.concatenate([[0], np.cumsum(n_gt)])
    all_rows, all_cols, matched_pred, matched_gt = [], [], np.zeros(num_classes), np.zeros(num_classes)
    for c in classes:
        rows, cols = boundary_pairs(pred_pixels[c], gt_pixels[c], target.shape, tol)
        if mode == "fast":
            matched_pred[c], matched_gt[c] = len(np.unique(rows)), len(np.unique(cols))
        all_rows.append(rows + pred_start[c])
        all_cols.append(cols + gt_start[c])
    if mode == "exact":
        groups = np.repeat(np.arange(num_classes), n_pred)
        matched_pred = matched_gt = maximum_matching_size(
            np.concatenate(all_rows), np.concatenate(all_cols), int(pred_start[-1]), int(gt_start[-1]),
            groups, num_classes).astype(np.float64)
    scores = []
    for c in classes:
        if n_pred[c] == 0 and n_gt[c] == 0:
            scores.append(float("nan"))
            continue
        precision = matched_pred[c] / n_pred[c] if n_pred[c] else 0.0
        recall = matched_gt[c] / n_gt[c] if n_gt[c] else 0.0
        scores.append(float(2 * precision * recall / (precision + recall)) if precision + recall > 0 else 0.0)
    valid = [s for s in scores if not math.isnan(s)]
    return (float(np.mean(valid)) if valid else float("nan")), scores


class BoundaryF1:
    """Accumulates per-image BF scores; ``compute()`` gives the dataset BF and per-class means.

    With an ``executor`` (e.g. a ``ProcessPoolExecutor``) images are scored in the
    background while the caller goes on (the model's next batch); ``compute()`` waits.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None, mode: str = "exact",
                 executor: Executor | None = None, void: str = "raw") -> None:
        if mode not in MODES:
            raise ValueError(f"BF mode must be one of {MODES}, not {mode!r}")
        if void not in VOID_TREATMENTS:
            raise ValueError(f"BF void treatment must be one of {VOID_TREATMENTS}, not {void!r}")
        self.num_classes, self.ignore_index, self.mode, self.void = num_classes, ignore_index, mode, void
        self.executor = executor
        self._results: list[Future | tuple[float, list[float]]] = []

    def update(self, pred, target) -> None:
        """Add a batch ``(N, H, W)`` or one map ``(H, W)`` (tensors or arrays)."""
        pred = pred.cpu().numpy() if hasattr(pred, "cpu") else np.asarray(pred)
        target = target.cpu().numpy() if hasattr(target, "cpu") else np.asarray(target)
        if pred.ndim == 2:
            pred, target = pred[None], target[None]
        if self.executor is not None and max(pred.max(initial=0), target.max(initial=0)) < 256 and min(
                pred.min(initial=0), target.min(initial=0)) >= 0:
            pred, target = pred.astype(np.uint8), target.astype(np.uint8)  # 8x less to send to a worker
        for p, t in zip(pred, target):
            args = (p, t, self.num_classes, self.ignore_index, self.mode, self.void)
            self._results.append(self.executor.submit(image_bf_score, *args) if self.executor else image_bf_score(*args))

    @property
    def image_scores(self) -> list[float]:
        """Per-image BF, in the order the images were added (waits for pending ones)."""
        return [score for score, _ in self._resolved()]

    def _resolved(self) -> list[tuple[float, list[float]]]:
        self._results = [r.result() if isinstance(r, Future) else r for r in self._results]
        return self._results  # type: ignore[return-value]

    def compute(self) -> dict:
        resolved = self._resolved()
        images = np.array([score for score, _ in resolved], dtype=np.float64)
        classes = np.array([per_class for _, per_class in resolved], dtype=np.float64).reshape(-1, self.num_classes)
        # nanmean without "mean of empty slice" warnings: an all-NaN column stays NaN
        counts = np.isfinite(classes).sum(0)
        per_class = np.where(counts > 0, np.nansum(classes, 0) / np.maximum(counts, 1), np.nan)
        finite = images[np.isfinite(images)]
        mean = float(finite.mean()) if len(finite) else float("nan")
        return {"mean_bf_score": mean, "class_bf_score": per_class.tolist(), "bf_mode": self.mode,
                "bf_void": self.void, "bf_images": int(np.isfinite(images).sum())}
