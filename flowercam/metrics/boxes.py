"""Box metrics for weakly-supervised localization: MaxBoxAcc, MaxBoxAccV2, Top-1 / GT-known Loc.

Choe et al., CVPR 2020, "Evaluating Weakly Supervised Object Localization Methods Right"
(reference code: github.com/clovaai/wsolevaluation, evaluation.py). Pure numpy / scipy /
scikit-image functions, no torch, no global state.

Conventions:
- maps [N,H,W] float in [0,1] (min-max normalised; a constant map may be all zeros);
  fg / valid bool [N,H,W]; valid False = ignored pixel (never ground-truth foreground).
- thresholds tau in map units, default 0, 0.01, ..., 0.99; a pixel is predicted foreground
  when map >= tau (so tau = 0 always predicts the whole image as one box).
- boxes: int64 [K,4] (x0, y0, x1, y1), x = column, y = row, INCLUSIVE pixel coordinates:
  area = (x1 - x0 + 1) * (y1 - y0 + 1). Components are 8-connected (skimage connectivity=2).
- predicted boxes use every pixel of the map (ignored pixels do not cut predictions).
- a threshold at which the map gives no component scores IoU 0; images without foreground
  give a NaN row, which every figure skips.
- largest component: most pixels; ties -> the component met first in raster order.
- best threshold: highest score, lowest index among equals.
- figures in percent. The per-image [N,T] IoU tables are the only state: bootstrap intervals
  come from resampling their rows and recomputing any figure below.
"""

import numpy as np
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage.measure import label

from flowercam.metrics.config import default_thresholds


def _thresholds(thresholds, n):
    return default_thresholds(n) if thresholds is None else np.asarray(thresholds, np.float64)


# ---------------------------------------------------------------- boxes


def _components(mask):
    """Bool [H,W] -> (boxes [K,4] inclusive x0y0x1y1, areas [K]) of its 8-connected components."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if len(rows) == 0:
        return np.zeros((0, 4), np.int64), np.zeros(0, np.int64)
    y0, x0 = rows[0], cols[0]  # label only the mask's bounding crop (cheap at high tau)
    lab, n = label(mask[y0 : rows[-1] + 1, x0 : cols[-1] + 1], connectivity=2, return_num=True)
    slices = ndi.find_objects(lab, max_label=n)  # label k -> slices[k - 1]
    boxes = np.array([[c.start, r.start, c.stop - 1, r.stop - 1] for r, c in slices], np.int64)
    return boxes + [x0, y0, x0, y0], np.bincount(lab.ravel(), minlength=n + 1)[1:]


def _largest(boxes, areas):
    """[K,4], [K] -> [min(K,1),4]: the box of the largest component (first in raster on ties)."""
    return boxes[np.argmax(areas)][None] if len(boxes) else boxes


def gt_boxes(fg, valid=None):
    """Foreground [H,W] bool minus ignored pixels (valid False) -> GT boxes [K,4], per component."""
    fg = np.asarray(fg, bool) if valid is None else np.asarray(fg, bool) & np.asarray(valid, bool)
    return _components(fg)[0]


def _label_table(m, thresholds):
    """Reference path, skimage.label per tau -> (k [C], boxes [C,4], area [C]) (see below).

    Masks are nested, so an equal pixel count means an equal mask: its components are reused.
    """
    ks, boxes, areas, prev = [], [], [], -1
    for t, tau in enumerate(thresholds):
        mask = m >= tau
        count = int(np.count_nonzero(mask))
        if count != prev:
            b, a = _components(mask)
        ks.append(np.full(len(b), t, np.int64))
        boxes.append(b)
        areas.append(a)
        prev = count
    return np.concatenate(ks), np.concatenate(boxes), np.concatenate(areas)


def _expand(lo, count):
    """Integer ranges [lo, lo + count) -> (range index [S], value [S]), concatenated."""
    idx = np.repeat(np.arange(len(count)), count)
    return idx, np.arange(idx.size) - np.repeat(np.cumsum(count) - count, count) + lo[idx]


def _level_runs(q, max_runs):
    """Levels q [H,W] (mask k = q > k) -> row runs (k, y, x0, x1) [R] of all masks, sorted.

    Sorted by (k, y, x0), x1 inclusive; None when there would be more than max_runs runs.
    """
    h, w = q.shape
    s = w + 2
    p = np.zeros((h, s), np.int64)
    p[:, 1:-1] = q  # level 0 outside the image
    left, right = p[:, :-1], p[:, 1:]  # [H,W+1] levels on both sides of each column edge
    keys = []
    for lo, hi, shift in ((left, right, 0), (right, left, 1)):  # rises start runs, falls end
        y, e = np.nonzero(hi > lo)
        n = hi[y, e] - lo[y, e]  # masks k in [lo, hi) start (end) a run at this edge
        if not keys and n.sum() > max_runs:
            return None
        idx, k = _expand(lo[y, e], n)
        keys.append(np.sort((k * h + y[idx]) * s + e[idx] - shift))  # x0 = e; x1 = e - 1
    k, rest = np.divmod(keys[0], h * s)  # i-th start pairs with i-th end
    return k, rest // s, rest % s, keys[1] % s


def _run_table(k, y, x0, x1, h, w):
    """Row runs [R] -> 8-connected components (k [C], boxes [C,4], area [C]), see below."""
    n, s = len(k), w + 2
    row = (k * h + y) * s  # [R] sort key of the run's row
    # runs of the row above (same k) touching columns x0 - 1 .. x1 + 1: index range [lo, hi)
    lo = np.searchsorted(row + x1, row - s + x0 - 1, "left")
    hi = np.searchsorted(row + x0, row - s + x1 + 1, "right")
    b, a = _expand(lo, np.where(y > 0, np.clip(hi - lo, 0, None), 0))
    graph = coo_matrix((np.ones(len(a), bool), (a, b)), shape=(n, n))
    nc, lab = connected_components(graph, directed=False)  # lab [R] component of each run
    first = np.full(nc, n)
    np.minimum.at(first, lab, np.arange(n))  # first run = first pixel in raster order
    bx0, bx1, by1 = np.full(nc, w), np.full(nc, -1), np.full(nc, -1)
    np.minimum.at(bx0, lab, x0)
    np.maximum.at(bx1, lab, x1)
    np.maximum.at(by1, lab, y)
    area = np.bincount(lab, weights=x1 - x0 + 1, minlength=nc).astype(np.int64)
    order = np.argsort(first)
    boxes = np.stack([bx0, y[first], bx1, by1], 1)  # [C,4]
    return k[first][order], boxes[order], area[order]


def _component_table(m, thresholds):
    """Map [H,W] -> components of every mask (m >= tau): (k [C], boxes [C,4], area [C]).

    k = threshold index; sorted by k, then raster order of the first pixel (skimage's label
    order). Fast path: the row runs of all masks at once, linked by scipy connected_components
    (cost ~ number of level crossings: small for smooth maps); maps crossing levels too often
    (noise) fall back to skimage.label per tau. Both give identical tables.
    """
    m, thresholds = np.asarray(m, np.float64), np.asarray(thresholds, np.float64)
    if np.any(np.diff(thresholds) <= 0):
        raise ValueError("thresholds must be strictly increasing")
    q = np.searchsorted(thresholds, m, side="right")  # m >= tau_k iff k < q
    q[np.isnan(m)] = 0
    runs = _level_runs(q, len(thresholds) * (m.size // 32 + 256))
    if runs is None:
        return _label_table(m, thresholds)
    if len(runs[0]) == 0:
        return np.zeros(0, np.int64), np.zeros((0, 4), np.int64), np.zeros(0, np.int64)
    return _run_table(*runs, *m.shape)


def box_iou(a, b):
    """Inclusive boxes [A,4] x [B,4] -> IoU [A,B] = |a & b| / (|a| + |b| - |a & b|)."""
    a = np.asarray(a, np.int64).reshape(-1, 1, 4)  # [A,1,4]
    b = np.asarray(b, np.int64).reshape(1, -1, 4)  # [1,B,4]
    iw = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1
    ih = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)  # [A,B]
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    return inter / (area_a + area_b - inter)


# ---------------------------------------------------------------- per-image IoU tables


def _image_best_ious(m, gt, thresholds):
    """Map [H,W], GT boxes [G,4] -> (largest [T], all [T]) best IoU per tau; 0 if no box."""
    k, boxes, area = _component_table(m, thresholds)
    largest, every = np.zeros((2, len(thresholds)))
    if len(k) == 0:
        return largest, every
    best = box_iou(boxes, gt).max(1)  # [C] best GT match of each component
    np.maximum.at(every, k, best)
    order = np.lexsort((-area, k))  # stable: raster order among equal areas
    head = order[np.r_[True, k[order][1:] != k[order][:-1]]]  # largest component per tau
    largest[k[head]] = best[head]
    return largest, every


def box_iou_tables(maps, fg, valid, thresholds=None):
    """(largest [N,T], all [N,T]): best IoU of the predicted boxes with any GT box, per tau.

    One pass serves both: "largest" scores only the largest component (MaxBoxAcc), "all" the
    best of all components (MaxBoxAccV2). NaN row: image without foreground.
    """
    thresholds = _thresholds(thresholds, 100)
    out = np.full((2, len(maps), len(thresholds)), np.nan)  # [2,N,T]
    for i, (m, f, v) in enumerate(zip(maps, fg, valid, strict=True)):
        gt = gt_boxes(f, v)  # [G,4]
        if len(gt):
            out[:, i] = _image_best_ious(m, gt, thresholds)
    return out[0], out[1]




# ---------------------------------------------------------------- figures from IoU tables


def box_accuracy(best_ious, delta=0.5):
    """[N,T] -> BoxAcc [T] in %: share of images (NaN rows skipped) with IoU >= delta."""
    ious = np.asarray(best_ious, np.float64)
    ious = ious[~np.isnan(ious).all(1)]
    if len(ious) == 0:
        return np.full(np.shape(best_ious)[1], np.nan)
    return (ious >= delta).sum(0) * 100 / len(ious)  # counts first: 29 of 100 -> 29.0


def best_threshold(score_per_threshold):
    """Index of the highest score [T] (NaN never wins; lowest index among equals)."""
    score = np.asarray(score_per_threshold, np.float64)
    return int(np.argmax(np.where(np.isnan(score), -np.inf, score)))


def max_box_acc(best_ious_largest, delta=0.5, thresholds=None):
    """MaxBoxAcc = max_tau BoxAcc(tau, delta) on the largest-component table -> (%, tau)."""
    acc = box_accuracy(best_ious_largest, delta)
    k = best_threshold(acc)
    return float(acc[k]), float(_thresholds(thresholds, len(acc))[k])


def max_box_acc_v2(best_ious_all, deltas=(0.3, 0.5, 0.7), thresholds=None):
    """MaxBoxAccV2 = mean over delta of max_tau BoxAcc(tau, delta), all components -> (%, taus)."""
    results = [max_box_acc(best_ious_all, d, thresholds) for d in deltas]
    return float(np.mean([r[0] for r in results])), tuple(r[1] for r in results)
