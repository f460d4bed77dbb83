import math

import numpy as np
import pytest
import torch

from segnet.metrics import (
    BoundaryF1,
    ConfusionMatrix,
    boundary_map,
    confusion_matrix,
    image_bf_score,
    matched_counts,
    scores_from_confusion,
    tolerance,
)


def test_confusion_matrix_by_hand_with_ignore():
    target = torch.tensor([0, 0, 1, 1, 2, 9])
    pred = torch.tensor([0, 1, 1, 1, 0, 2])  # the last pixel is void in the ground truth
    m = confusion_matrix(pred, target, 3, ignore_index=9)
    assert m.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    s = scores_from_confusion(m)
    assert s["global_accuracy"] == pytest.approx(3 / 5)
    assert s["class_accuracy"] == pytest.approx([1 / 2, 1, 0])
    assert s["mean_accuracy"] == pytest.approx(0.5)
    # IoU: c0 1/(2+2-1)=1/3, c1 2/(2+3-2)=2/3, c2 0/(1+0-0)=0
    assert s["class_iou"] == pytest.approx([1 / 3, 2 / 3, 0])
    assert s["mean_iou"] == pytest.approx(1 / 3)
    assert s["weighted_iou"] == pytest.approx((2 * 1 / 3 + 2 * 2 / 3 + 1 * 0) / 5)
    assert s["pixels"] == 5


def test_absent_classes():
    # class 2 in neither map: no accuracy, no IoU (both left out); class 1 only predicted: IoU 0, no accuracy
    m = confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 0]), 3)
    s = scores_from_confusion(m)
    assert math.isnan(s["class_accuracy"][1]) and math.isnan(s["class_accuracy"][2])
    assert s["class_iou"][1] == 0 and math.isnan(s["class_iou"][2])
    assert s["mean_accuracy"] == pytest.approx(0.5) and s["mean_iou"] == pytest.approx(0.25)


def test_dataset_level_iou_is_not_mean_of_per_image_iou():
    acc = ConfusionMatrix(2)
    # image A: 1 pixel of class 1, predicted right; image B: 99 pixels of class 1, all wrong
    acc.update(torch.tensor([1, 0]), torch.tensor([1, 0]))
    acc.update(torch.zeros(100, dtype=torch.long), torch.tensor([1] * 99 + [0]))
    s = acc.compute()
    assert s["class_iou"][1] == pytest.approx(1 / 100)  # 1 TP over 100 GT pixels, dataset level
    assert s["global_accuracy"] == pytest.approx(3 / 102)


def test_confusion_rejects_bad_input():
    with pytest.raises(ValueError, match="differ in shape"):
        confusion_matrix(torch.zeros(3), torch.zeros(4), 2)
    with pytest.raises(ValueError, match="0..1"):
        confusion_matrix(torch.tensor([5]), torch.tensor([0]), 2)


def square(size=(20, 20), top=5, left=5, side=8):
    mask = np.zeros(size, dtype=np.int64)
    mask[top : top + side, left : left + side] = 1
    return mask


def test_boundary_map_rule():
    m = square((6, 6), 2, 2, 2)
    edge = boundary_map(m == 1)
    # the 2x2 square at rows/cols 2-3: blocks with top-left in rows/cols 1..3 touch it,
    # except block (2, 2), which lies wholly inside it and is constant
    expected = np.zeros((6, 6), bool)
    expected[1:4, 1:4] = True
    expected[2, 2] = False
    assert np.array_equal(edge, expected)
    assert not boundary_map(np.ones((4, 4), bool)).any()
    assert tolerance((360, 480)) == pytest.approx(4.5)


def test_identical_maps_score_one():
    t = square()
    for mode in ("exact", "fast"):
        score, per_class = image_bf_score(t, t, 2, mode=mode)
        assert score == 1.0 and per_class == [1.0, 1.0]


def test_shifted_square_within_and_beyond_tolerance():
    t = square((200, 200), 50, 50, 60)  # tolerance 0.0075 * 282.8 = 2.12 px
    near = square((200, 200), 52, 50, 60)  # shifted 2 px down: every boundary pixel within 2.12
    far = square((200, 200), 60, 50, 60)  # shifted 10 px: only the vertical sides overlap within tolerance
    assert image_bf_score(near, t, 2, mode="exact")[0] == pytest.approx(1.0)
    gt_edge, far_edge = boundary_map(t == 1), boundary_map(far == 1)
    # far: the vertical sides overlap over 50 rows; the top/bottom rows (10 px apart) never match
    matched, _ = matched_counts(far_edge, gt_edge, tolerance(t.shape))
    assert 0 < matched < gt_edge.sum()


def test_one_to_one_matching_is_stricter_than_fast():
    # ground truth: a one-pixel-wide vertical line of class 1; prediction: a two-pixel-wide line
    t = np.zeros((40, 40), np.int64)
    t[:, 10] = 1
    p = np.zeros((40, 40), np.int64)
    p[:, 10:12] = 1
    gt_edge, pred_edge = boundary_map(t == 1), boundary_map(p == 1)
    tol = tolerance(t.shape)  # 0.42 px: only identical pixels match
    # gt boundary: columns 9 and 10 (40 rows, minus the last row's right neighbour rule)
    assert gt_edge.sum() == 80 and pred_edge.sum() == 80
    exact = matched_counts(pred_edge, gt_edge, tol, "exact")
    fast = matched_counts(pred_edge, gt_edge, tol, "fast")
    assert exact == (40, 40) and fast == (40, 40)
    # a tolerance of 1.5 px lets each predicted pixel reach two gt pixels; one-to-one still caps at 80
    exact = matched_counts(pred_edge, gt_edge, 1.5, "exact")
    assert exact == (80, 80)
    # many predicted pixels crowding one gt pixel: fast counts them all, exact only one
    crowd_pred = np.zeros((5, 5), bool)
    crowd_pred[2, 1:4] = True
    lone_gt = np.zeros((5, 5), bool)
    lone_gt[2, 2] = True
    assert matched_counts(crowd_pred, lone_gt, 1.0, "fast") == (3, 1)
    assert matched_counts(crowd_pred, lone_gt, 1.0, "exact") == (1, 1)


def test_class_only_in_prediction_scores_zero_and_counts():
    t = np.zeros((30, 30), np.int64)
    p = square((30, 30), 10, 10, 5)  # class 1 predicted, absent from ground truth
    score, per_class = image_bf_score(p, t, 3)
    # class 0: both have the square's boundary? gt class 0 is uniform (no boundary), pred class 0 has one
    assert per_class[1] == 0.0 and per_class[0] == 0.0 and math.isnan(per_class[2])
    assert score == 0.0


def test_precision_recall_by_hand():
    # gt: square; prediction: the same square plus a far-away blob of class 1
    t = square((100, 100), 10, 10, 20)
    p = t.copy()
    p[70:80, 70:80] = 1
    gt1, pred1 = boundary_map(t == 1).sum(), boundary_map(p == 1).sum()
    precision, recall = gt1 / pred1, 1.0
    f1 = 2 * precision * recall / (precision + recall)
    _, per_class = image_bf_score(p, t, 2)
    assert per_class[1] == pytest.approx(f1)


def test_empty_image_and_void():
    uniform = np.full((10, 10), 1)
    score, per_class = image_bf_score(uniform, uniform, 2)
    assert math.isnan(score) and all(math.isnan(s) for s in per_class)
    # masked, predictions on void pixels are not held against the model; raw (the default), they are
    t = square((40, 40), 10, 10, 10)
    t[:, 30:] = 9
    p = t.copy()
    p[:, 30:] = 1  # predicts class 1 on the void strip
    p = np.where(t == 9, 1, p)
    assert image_bf_score(p, t, 2, ignore_index=9, void="mask")[0] == 1.0
    assert image_bf_score(p, t, 2, ignore_index=9)[0] < 1.0
    acc = BoundaryF1(2, ignore_index=9, void="mask")
    flat = np.full((40, 40), 1)
    acc.update(torch.from_numpy(np.stack([p, flat])), torch.from_numpy(np.stack([t, flat])))
    result = acc.compute()
    assert result["mean_bf_score"] == 1.0 and result["bf_images"] == 1  # the uniform image is left out


def test_random_maps_fast_never_below_exact():
    rng = np.random.default_rng(0)
    for _ in range(5):
        t = rng.integers(0, 3, (8, 8)).repeat(6, 0).repeat(6, 1)
        p = np.roll(t, rng.integers(-3, 4), axis=1)
        exact, _ = image_bf_score(p, t, 3, mode="exact")
        fast, _ = image_bf_score(p, t, 3, mode="fast")
        assert 0 <= exact <= fast + 1e-12 <= 1 + 1e-12


def brute_force_matching(edges, n_left):
    best = 0

    def extend(u, used, size):
        nonlocal best
        if u == n_left:
            best = max(best, size)
            return
        extend(u + 1, used, size)
        for v in edges[u]:
            if v not in used:
                extend(u + 1, used | {v}, size + 1)

    extend(0, frozenset(), 0)
    return best


def test_matcher_finds_maximum_matchings():
    from segnet.metrics.boundary import maximum_matching_size

    rng = np.random.default_rng(0)
    for trial in range(60):
        n_left, n_right = int(rng.integers(1, 8)), int(rng.integers(1, 8))
        dense = rng.random((n_left, n_right)) < rng.uniform(0.1, 0.7)
        rows, cols = np.nonzero(dense)
        edges = [list(np.flatnonzero(row)) for row in dense]
        assert maximum_matching_size(rows, cols, n_left, n_right)[0] == brute_force_matching(edges, n_left)
    # a greedy start would have to be undone: left 0 takes right 0, which left 1 needs
    assert maximum_matching_size(np.array([0, 0, 1]), np.array([0, 1, 0]), 2, 2)[0] == 2
    # two independent graphs in one call: each group gets its own size
    rows, cols = np.array([0, 1, 2, 3, 4]), np.array([0, 0, 1, 2, 2])
    assert maximum_matching_size(rows, cols, 5, 3, np.array([0, 0, 1, 1, 1]), 2).tolist() == [1, 2]


def test_class_boundaries_equal_boundary_map_per_class():
    from segnet.metrics.boundary import class_boundaries

    rng = np.random.default_rng(1)
    for _ in range(10):
        label = rng.integers(0, 4, (5, 7)).repeat(3, 0).repeat(2, 1)
        label[rng.random(label.shape) < 0.05] = 9  # scattered single pixels
        pixels = class_boundaries(label, range(10))
        for c in range(10):
            assert np.array_equal(pixels[c], np.flatnonzero(boundary_map(label == c)))


def test_fast_matches_the_distance_transform_criterion():
    from scipy.ndimage import distance_transform_edt

    rng = np.random.default_rng(2)
    for _ in range(10):
        gt = rng.random((30, 41)) < 0.05
        pred = rng.random((30, 41)) < 0.05
        tol = float(rng.uniform(0.5, 4.0))
        expected = (int((distance_transform_edt(~gt)[pred] <= tol).sum()),
                    int((distance_transform_edt(~pred)[gt] <= tol).sum()))
        assert matched_counts(pred, gt, tol, "fast") == expected


def test_background_scoring_gives_the_same_result():
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(3)
    targets = rng.integers(0, 3, (4, 6, 8)).repeat(5, 1).repeat(5, 2)
    preds = np.roll(targets, 2, axis=2)
    inline = BoundaryF1(3)
    inline.update(preds, targets)
    with ThreadPoolExecutor(2) as pool:
        background = BoundaryF1(3, executor=pool)
        background.update(preds, targets)
        result = background.compute()
    assert result == inline.compute()
    assert background.image_scores == inline.image_scores


def test_bf_void_treatments_differ_where_the_ground_truth_is_void():
    from segnet.metrics.boundary import VOID_TREATMENTS

    void = 11
    # A: two classes stacked, void on the right; the prediction carries both classes on into the void
    target = np.zeros((10, 10), np.int64)
    target[5:] = 1
    target[:, 5:] = void
    pred = np.zeros((10, 10), np.int64)
    pred[5:] = 1
    scores = {v: image_bf_score(pred, target, 2, ignore_index=void, void=v)[0] for v in VOID_TREATMENTS}
    assert scores["mask"] == 1.0  # the prediction recoloured to void equals the ground truth
    assert scores["drop"] == 1.0  # away from void the two maps are identical
    assert 0.0 < scores["raw"] < 1.0  # its boundary inside void is unmatched, the void edge is missed

    # B: the model draws no boundary at all; the only boundary is the edge of the annotation
    target = np.zeros((10, 10), np.int64)
    target[:, 5:] = void
    pred = np.zeros((10, 10), np.int64)
    assert image_bf_score(pred, target, 2, ignore_index=void, void="mask")[0] == 1.0  # a free match
    assert image_bf_score(pred, target, 2, ignore_index=void, void="raw")[0] == 0.0  # a missed boundary
    assert math.isnan(image_bf_score(pred, target, 2, ignore_index=void, void="drop")[0])  # nothing to judge

    # without void in the ground truth the three agree
    target = np.zeros((10, 10), np.int64)
    target[:, 4:] = 1
    pred = np.roll(target, 1, axis=1)
    values = {image_bf_score(pred, target, 2, ignore_index=void, void=v)[0] for v in VOID_TREATMENTS}
    assert len(values) == 1
    with pytest.raises(ValueError, match="void treatment"):
        image_bf_score(pred, target, 2, ignore_index=void, void="ignore")
    metric = BoundaryF1(2, void, void="drop")
    metric.update(pred, target)
    assert metric.compute()["bf_void"] == "drop"
