"""Localization figures of --cam-metrics from per-image tables, at an oracle and a validated tau.

    python -c "from flowercam.metrics import localization as L; help(L.oracle_stats)"

The registry's localization metrics (flowercam.metrics.registry: pointing_game, pxap, boxes) read
these tables.

Per image i (tau_k = 0, 0.01, ..., 0.99 of the min-max map, T = 100): tp, fp [N,T] pixel counts,
n_fg [N]; box_largest / box_all [N,T] best box IoU (largest / any
component, flowercam.metrics.boxes, Choe et al. 2020); correct [N] top-1 class right.
Oracle tau: chosen on the images it scores (Choe's Max*; optimistic). Validated tau: chosen on
another set's mask images (the validation split) and applied unchanged. Every figure is
{"value", "ci95", "n", "tau"} in %: 95% bootstrap over the scored images (rows); an oracle tau is
chosen again in every resample, a validated tau stays fixed. The *_stats functions give each
figure as a statistic of the resampled rows (flowercam.metrics.statistics), so that two maps can be
compared on the same resamples (paired differences).
"""

import dataclasses

import numpy as np

from flowercam.metrics import boxes, formulas
from flowercam.metrics.config import default_thresholds
from flowercam.metrics.statistics import Mean, OverRows

THRESHOLDS = default_thresholds()
DELTA = 0.5  # MaxBoxAcc, Top-1 / GT-known Loc
DELTAS = (0.3, 0.5, 0.7)  # MaxBoxAccV2


@dataclasses.dataclass
class TauSet:
    """The subset whose mask images chose the validated tau (runner.tau_set; tau_file)."""

    subset: str
    n_images: int
    taus: dict  # {row: localization.choose_taus of the row on that subset}
    arrays: dict | None = None  # {row: per-image arrays} (None: read from a file)
    families: tuple[str, ...] = ()  # the figures measured on it
    resumed_seconds: float = 0.0
    source: str | None = None  # the cam_metrics.json it was read from (--tau-from)


def pixel_ious(a, idx):
    """[n,T] per-image pixel IoU of the rows idx (NaN rows: no foreground)."""
    return formulas.iou_per_threshold(a["tp"][idx], a["fp"][idx], a["n_fg"][idx])


def _at(table, k, delta=DELTA):
    """[N,T] IoU table -> per-image hit (IoU >= delta) at tau index k, in %; NaN rows stay NaN."""
    column = table[:, k]
    return np.where(np.isnan(column), np.nan, (column >= delta) * 100.0)


def _loc(largest, correct, k):
    """Top-1 Loc (class right and box IoU >= 0.5) and GT-known Loc at tau index k."""
    hit = _at(largest, k)
    top1 = np.where(np.isnan(hit), np.nan, hit * correct)
    tau = {"tau": float(THRESHOLDS[k])}
    return {"top1_loc": Mean(top1, tau), "gt_known_loc": Mean(hit, tau)}


def oracle_stats(a, idx):
    """Best-tau figures of the rows idx (the tau chosen again on every resample), as statistics;
    Top-1 / GT-known Loc at MaxBoxAcc's tau on all the rows."""
    ious, big, every = pixel_ious(a, idx), a["box_largest"][idx], a["box_all"][idx]
    n, n_fg = len(idx), int((a["n_fg"][idx] > 0).sum())
    t_iou = formulas.best_iou_from_ious(ious, THRESHOLDS)[1]
    t_acc = boxes.max_box_acc(big, DELTA, THRESHOLDS)[1]
    t_v2 = boxes.max_box_acc_v2(every, DELTAS, THRESHOLDS)[1]
    k = boxes.best_threshold(boxes.box_accuracy(big, DELTA))
    return {"miou": OverRows(lambda r: formulas.best_iou_from_ious(ious[r], THRESHOLDS)[0], n,
                             n_fg, {"tau": t_iou}),
            "max_box_acc": OverRows(lambda r: boxes.max_box_acc(big[r], DELTA)[0], n, n_fg,
                                    {"tau": t_acc}),
            "max_box_acc_v2": OverRows(lambda r: boxes.max_box_acc_v2(every[r], DELTAS)[0], n,
                                       n_fg, {"tau": list(t_v2)}),
            **_loc(big, a["correct"][idx], k)}


def validated_stats(a, idx, taus):
    """Figures of the rows idx at tau indices chosen elsewhere (choose_taus), as statistics;
    {} without taus."""
    if taus is None or len(idx) == 0:
        return {}
    k_iou, k_acc, k_v2 = taus
    ious, big, every = pixel_ious(a, idx), a["box_largest"][idx], a["box_all"][idx]
    v2 = np.mean([_at(every, k, d) for k, d in zip(k_v2, DELTAS, strict=True)], 0)
    return {"miou": Mean(ious[:, k_iou] * 100, {"tau": float(THRESHOLDS[k_iou])}),
            "max_box_acc": Mean(_at(big, k_acc), {"tau": float(THRESHOLDS[k_acc])}),
            "max_box_acc_v2": Mean(v2, {"tau": [float(THRESHOLDS[k]) for k in k_v2]}),
            **_loc(big, a["correct"][idx], k_acc)}


def choose_taus(t):
    """Tau indices chosen on a set's tables t: (IoU, MaxBoxAcc, MaxBoxAccV2 per delta); None if
    the set has no foreground."""
    ious = formulas.iou_per_threshold(t["tp"], t["fp"], t["n_fg"])
    if np.isnan(ious).all():
        return None
    k_iou = boxes.best_threshold(np.nanmean(ious[~np.isnan(ious).all(1)], 0))
    if "box_largest" not in t:  # pixel tables only (--figures pseudo-masks)
        return k_iou, None, None
    k_acc = boxes.best_threshold(boxes.box_accuracy(t["box_largest"], DELTA))
    k_v2 = [boxes.best_threshold(boxes.box_accuracy(t["box_all"], d)) for d in DELTAS]
    return k_iou, k_acc, k_v2


def mask_tables(np_maps, masks):
    """Per-image pixel tables of one batch of maps (masks = (fg, valid, has_mask) [B,H,W], [B]):
    tp, fp [B,T] per tau, n_fg, n_valid [B], has_mask [B] (what PxAP, the IoU figures and the
    pseudo-masks are computed from)."""
    fg, valid, has = masks
    tp, fp, n_fg = formulas.threshold_counts(np_maps, fg, valid, THRESHOLDS)
    return {"tp": tp, "fp": fp, "n_fg": n_fg, "has_mask": has, "n_valid": valid.sum((1, 2))}


def box_tables(np_maps, fg, valid):
    """(largest [B,T], all [B,T]) best box IoU per tau (boxes.box_iou_tables)."""
    return boxes.box_iou_tables(np_maps, fg, valid, THRESHOLDS)
