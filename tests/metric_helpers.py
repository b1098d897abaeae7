"""Test-only helpers of the map metrics: set-level wrappers and oracles the library does not use
(it works from per-image tables, flowercam.metrics.registry)."""

import numpy as np

from flowercam.metrics import boxes, formulas, localization
from flowercam.metrics.config import default_thresholds
from flowercam.metrics.statistics import figures


def predicted_boxes(m, thresholds=None, largest_only=False):
    """Map [H,W] -> list over thresholds of boxes [K,4] of the components of (m >= tau)."""
    thresholds = default_thresholds() if thresholds is None else np.asarray(thresholds,
                                                                            np.float64)
    k, found, area = boxes._component_table(m, thresholds)
    cut = np.searchsorted(k, np.arange(len(thresholds) + 1))  # [T+1] slice of each tau
    per_tau = [(found[a:b], area[a:b]) for a, b in zip(cut[:-1], cut[1:], strict=True)]
    return [boxes._largest(*c) if largest_only else c[0] for c in per_tau]


def best_iou(maps, fg, valid, thresholds=None):
    """(mean IoU in %, threshold) of maps [N,H,W] at the threshold best for their mean."""
    thresholds = default_thresholds() if thresholds is None else thresholds
    tp, fp, n_fg = formulas.threshold_counts(maps, fg, valid, thresholds)
    return formulas.best_iou_from_ious(formulas.iou_per_threshold(tp, fp, n_fg), thresholds)


def pxap(maps, fg, valid, thresholds=None):
    thresholds = default_thresholds() if thresholds is None else thresholds
    return formulas.pxap_from_counts(*formulas.threshold_counts(maps, fg, valid, thresholds))


def pointing_game(maps, fg, valid, **kwargs):
    """The published pointing game over maps [N,H,W] in % (NaN images skipped)."""
    return float(np.nanmean(formulas.pointing_game_per_image(maps, fg, valid, **kwargs)) * 100)


def average_drop(y, o):
    return float(formulas.drop_per_image(y, o).mean())


def increase_in_confidence(y, o):
    return float(formulas.increase_per_image(y, o).mean())


def oracle(a, idx, n_boot, seed):
    """Localization figures at the oracle tau, with their intervals."""
    return figures(localization.oracle_stats(a, idx), n_boot, seed)


def validated(a, idx, taus, n_boot, seed):
    """Localization figures at a tau chosen elsewhere, with their intervals."""
    return figures(localization.validated_stats(a, idx, taus), n_boot, seed)
