"""Box metrics (flowercam/metrics/boxes.py) against hand-computed answers."""

import math

import metric_helpers as helpers
import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.measure import label, regionprops

from flowercam.metrics import boxes as B
from flowercam.metrics import config, localization, maprows, statistics

TAUS = config.default_thresholds()


def rect_mask(h, w, *rects):
    """Bool [H,W] with inclusive rectangles (x0, y0, x1, y1) set."""
    m = np.zeros((h, w), bool)
    for x0, y0, x1, y1 in rects:
        m[y0 : y1 + 1, x0 : x1 + 1] = True
    return m


def tables(maps, fg, valid=None):
    maps, fg = np.asarray(maps, float), np.asarray(fg, bool)
    valid = np.ones_like(fg) if valid is None else valid
    return B.box_iou_tables(maps, fg, valid, TAUS)


# ---------------------------------------------------------------- boxes


def test_two_disjoint_rectangles_give_two_gt_boxes():
    fg = rect_mask(10, 12, (1, 2, 3, 4), (6, 5, 10, 8))
    boxes = sorted(map(tuple, B.gt_boxes(fg).tolist()))
    assert boxes == [(1, 2, 3, 4), (6, 5, 10, 8)]


def test_diagonal_touch_is_one_component():
    fg = rect_mask(8, 8, (0, 0, 2, 2), (3, 3, 5, 6))  # corner (2,2) touches (3,3)
    assert B.gt_boxes(fg).tolist() == [[0, 0, 5, 6]]


def test_boxes_match_regionprops():
    rng = np.random.default_rng(0)
    fg = rng.random((30, 40)) > 0.7
    ours = sorted(map(tuple, B.gt_boxes(fg).tolist()))
    ref = sorted(
        (c0, r0, c1 - 1, r1 - 1)
        for r0, c0, r1, c1 in (r.bbox for r in regionprops(label(fg, connectivity=2)))
    )
    assert ours == ref


def test_ignored_foreground_makes_no_gt_box():
    fg = rect_mask(10, 10, (1, 1, 3, 3), (6, 6, 8, 8))
    valid = ~rect_mask(10, 10, (5, 5, 9, 9))  # second rectangle lies under "ignore"
    assert B.gt_boxes(fg, valid).tolist() == [[1, 1, 3, 3]]
    largest, every = tables([fg.astype(float)], [fg], valid[None])
    assert np.all(every[0, 1:] == 1.0)  # the predicted (6,6,8,8) box is not a GT box
    assert largest[0, 50] == 1.0  # equal areas: the first component in raster order wins


def test_predicted_boxes_per_threshold():
    m = np.zeros((6, 8))
    m[1, 1], m[4, 5:7] = 0.5, 1.0
    pred = helpers.predicted_boxes(m, [0.0, 0.4, 0.6, 1.0], largest_only=False)
    assert pred[0].tolist() == [[0, 0, 7, 5]]
    assert sorted(map(tuple, pred[1].tolist())) == [(1, 1, 1, 1), (5, 4, 6, 4)]
    assert pred[2].tolist() == [[5, 4, 6, 4]] and pred[3].tolist() == [[5, 4, 6, 4]]
    big = helpers.predicted_boxes(m, [0.4], largest_only=True)
    assert big[0].tolist() == [[5, 4, 6, 4]]
    assert helpers.predicted_boxes(np.zeros((3, 3)), [0.5])[0].shape == (0, 4)


def reference_boxes(m, thresholds, largest_only):
    """Independent reference: skimage label + regionprops per threshold (raster label order)."""
    out = []
    for tau in thresholds:
        regions = regionprops(label(m >= tau, connectivity=2))
        if largest_only and regions:
            regions = [max(regions, key=lambda r: r.area)]  # first among equal areas
        out.append([[r.bbox[1], r.bbox[0], r.bbox[3] - 1, r.bbox[2] - 1] for r in regions])
    return out


@pytest.mark.parametrize("kind", ["smooth", "noise", "levels", "plateaus", "big_noise"])
@pytest.mark.parametrize("largest_only", [False, True])
def test_fast_and_label_paths_match_regionprops(kind, largest_only):
    rng = np.random.default_rng(1)
    h, w = 23, 31
    m = {
        "smooth": ndi.gaussian_filter(rng.standard_normal((h, w)), 2.5),
        "noise": rng.random((h, w)),
        "levels": np.kron(rng.random((3, 4)), np.ones((8, 8)))[:h, :w],
        "plateaus": np.round(ndi.gaussian_filter(rng.random((h, w)), 1.5) * 10),
        "big_noise": rng.random((64, 64)),  # too many runs: the public path uses skimage.label
    }[kind]
    h, w = m.shape
    m = (m - m.min()) / (m.max() - m.min())
    q = np.searchsorted(TAUS, m, "right")
    assert (B._level_runs(q, 100 * (h * w // 32 + 256)) is None) == (kind == "big_noise")
    ref = reference_boxes(m, TAUS, largest_only)
    assert [b.tolist() for b in helpers.predicted_boxes(m, TAUS, largest_only)] == ref
    # both internal paths, forced, give the same component table
    fast = B._run_table(*B._level_runs(q, 10**9), h, w)
    slow = B._label_table(m, TAUS)
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_array_equal(a, b)


def test_thresholds_must_increase():
    with pytest.raises(ValueError):
        helpers.predicted_boxes(np.zeros((3, 3)), [0.5, 0.2])


def test_box_iou_hand_examples():
    a = np.array([[0, 0, 9, 9]])
    b = np.array([[0, 0, 9, 9], [20, 20, 29, 29], [5, 0, 14, 9], [0, 0, 4, 9]])
    iou = B.box_iou(a, b)  # half overlap: 50 / (100 + 100 - 50); half box inside: 50 / 100
    assert iou.shape == (1, 4)
    np.testing.assert_allclose(iou[0], [1.0, 0.0, 1 / 3, 0.5])
    assert B.box_iou(np.array([[2, 3, 2, 3]]), np.array([[2, 3, 2, 3]]))[0, 0] == 1.0  # 1 pixel
    assert B.box_iou(np.zeros((0, 4)), b).shape == (0, 4)


# ---------------------------------------------------------------- figures


def test_mask_as_map_scores_100():
    fg = np.stack(
        [rect_mask(16, 16, (2, 2, 6, 6), (10, 9, 14, 13)), rect_mask(16, 16, (3, 4, 12, 12))]
    )
    largest, every = tables(fg.astype(float), fg)
    assert B.max_box_acc_v2(every)[0] == 100.0
    assert B.max_box_acc(largest) == (100.0, 0.01)  # tau = 0 is the whole image; lowest best tau
    assert np.all(every[:, 1:] == 1.0)


def test_constant_maps_are_defined():
    fg = rect_mask(10, 10, (0, 0, 9, 4))[None]  # top half: IoU with the full image = 0.5
    largest, every = tables(np.ones((1, 10, 10)), fg)
    assert np.all(largest == 0.5) and np.all(every == 0.5)
    assert B.max_box_acc(largest) == (100.0, 0.0)
    assert B.max_box_acc_v2(every) == (pytest.approx(200 / 3), (0.0, 0.0, 0.0))  # 100, 100, 0
    largest, every = tables(np.zeros((1, 10, 10)), fg)
    assert largest[0, 0] == 0.5 and np.all(largest[0, 1:] == 0.0) and not np.isnan(every).any()
    assert B.max_box_acc(largest) == (100.0, 0.0)
    assert B.max_box_acc(largest, delta=0.7) == (0.0, 0.0)


def test_box_accuracy_skips_images_without_foreground():
    ious = np.array([[0.6, 0.2], [np.nan, np.nan], [0.4, 0.9]])
    np.testing.assert_allclose(B.box_accuracy(ious, 0.5), [50.0, 50.0])
    np.testing.assert_allclose(B.box_accuracy(ious, 0.3), [100.0, 50.0])
    fg = np.zeros((1, 5, 5), bool)
    largest, every = tables(np.ones((1, 5, 5)), fg)
    assert np.isnan(largest).all() and np.isnan(every).all()


def test_max_box_acc_v2_each_delta_its_own_tau():
    ious = np.array([[0.8, 0.4, 0.1], [0.2, 0.6, 0.6]])  # thresholds 0, 0.5, 0.9 (say)
    thr = [0.0, 0.5, 0.9]
    value, taus = B.max_box_acc_v2(ious, (0.3, 0.5, 0.7), thr)
    # delta .3: [50, 100, 50] -> 100 @ .5; delta .5: [50, 50, 50] -> 50 @ 0; .7: [50, 0, 0] @ 0
    assert taus == (0.5, 0.0, 0.0)
    assert value == pytest.approx((100 + 50 + 50) / 3)


def test_best_threshold_lowest_index_among_equals():
    assert B.best_threshold([1.0, 3.0, 2.0, 3.0]) == 1
    assert B.best_threshold([np.nan, 1.0, 1.0]) == 1


def test_loc_accuracy_mixes_class_and_box():
    """The shipped Top-1 / GT-known Loc (localization._loc) on hand-made IoUs."""
    ious = np.array([[0.6, 0.1], [0.7, 0.2], [0.3, 0.9], [np.nan, np.nan], [0.5, 0.5]])
    correct = np.array([True, False, True, True, True])
    loc = statistics.figures(localization._loc(ious, correct, 0), 0, 0)
    assert loc["gt_known_loc"]["value"] == 75.0  # 0.6, 0.7, 0.5 of 4 images with foreground
    assert loc["top1_loc"]["value"] == 50.0  # images 0 and 4 (image 1 has the wrong class)
    loc = statistics.figures(localization._loc(ious, correct, 1), 0, 0)
    assert (loc["top1_loc"]["value"], loc["gt_known_loc"]["value"]) == (50.0, 50.0)


# ---------------------------------------------------------------- baselines


def test_center_map_hand_formula():
    m = maprows.center_map(9, 9, sigma_frac=2 / 9)  # sigma = 2 px, centre (4, 4)
    g_min = math.exp(-32 / 8)  # corners: d^2 = 4^2 + 4^2
    assert m.shape == (9, 9) and m[4, 4] == 1.0 and m.max() == 1.0
    assert m[0, 0] == pytest.approx(0.0, abs=1e-12)
    expected = (math.exp(-0.5) - g_min) / (1 - g_min)  # distance sigma = 2 before min-max
    assert m[4, 6] == pytest.approx(expected) and m[2, 4] == pytest.approx(expected)
    np.testing.assert_allclose(m, m.T)
    wide = maprows.center_map(4, 8)  # even sizes: centre between pixels; sigma = 0.25 * 4 = 1
    assert wide[1, 3] == wide[2, 4] == 1.0


def test_full_map_one_box():
    m = maprows.full_map(5, 7)
    assert m.shape == (5, 7) and np.all(m == 1.0)
    assert all(b.tolist() == [[0, 0, 6, 4]] for b in helpers.predicted_boxes(m, TAUS, True))


# ---------------------------------------------------------------- real masks


@pytest.mark.real
def test_real_masks_mask_scores_100_center_in_between(shared_dir):
    from PIL import Image

    paths = sorted((shared_dir / "flowers17" / "masks").glob("*.png"))[:20]
    assert len(paths) == 20, f"{shared_dir}/flowers17/masks holds fewer than 20 masks"
    labels = np.stack([np.array(Image.open(p)) for p in paths])  # [N,H,W] palette indices
    fg, valid = labels == 1, ~np.isin(labels, (0, 5))  # README: 1 flower; 0 and 5 ignore
    largest, every = B.box_iou_tables(fg.astype(float), fg, valid)
    assert B.max_box_acc(largest)[0] == 100.0 and B.max_box_acc_v2(every)[0] == 100.0
    center = np.broadcast_to(maprows.center_map(*labels.shape[1:]), labels.shape)
    largest, every = B.box_iou_tables(center, fg, valid)
    assert not np.isnan(largest).any() and not np.isnan(every).any()
    assert 0.0 < B.max_box_acc(largest)[0] < 100.0
    assert 0.0 < B.max_box_acc_v2(every)[0] < 100.0
