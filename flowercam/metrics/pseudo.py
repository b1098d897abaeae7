"""Pseudo-mask figures of --cam-metrics --figures pseudo-masks: the binary mask map >= tau against
the ground truth (ignored pixels left out), per image, at an oracle and a validated tau.

    python evaluate.py -d model/RUN --cam-metrics --figures pseudo-masks --split-name test
    python -c "from flowercam.metrics import pseudo; print(pseudo.FIGURES)"

The columns are the registry's (flowercam.metrics.registry: pseudo_masks), the summary
flowercam.metrics.summary's.

Per image and tau (tp, fp, n_fg, n_valid of localization.mask_tables; fn = n_fg - tp,
tn = n_valid - n_fg - fp): foreground IoU tp / (tp + fp + fn), background IoU tn / (tn + fn + fp),
mIoU their mean (the segmentation convention for two classes), precision tp / (tp + fp) (1 when
nothing is predicted), recall tp / n_fg, F1 2tp / (2tp + fp + fn); images without foreground are
left out. Figures are per-image means in %. One tau for all six: the one that maximises the mean
foreground IoU (localization's IoU tau, so the validated tau is localization.choose_taus's),
re-chosen in every bootstrap resample at the oracle tau, fixed at the validated tau.
"""

import math

import numpy as np

from flowercam.metrics.config import default_thresholds
from flowercam.metrics.statistics import Mean, OverRows

THRESHOLDS = default_thresholds()
FIGURES = ("fg_iou", "bg_iou", "miou", "precision", "recall", "f1")


def _ratio(num, den, empty):
    return np.where(den > 0, num / np.maximum(den, 1), empty)


def per_tau(a, idx):
    """[6,n,T] figures in % (FIGURES order) of the rows idx; NaN rows: no foreground."""
    tp, fp = a["tp"][idx].astype(np.float64), a["fp"][idx].astype(np.float64)
    n_fg = a["n_fg"][idx][:, None].astype(np.float64)
    n_valid = a["n_valid"][idx][:, None].astype(np.float64)
    fn, tn = n_fg - tp, n_valid - n_fg - fp
    fg = _ratio(tp, tp + fp + fn, 1.0)
    bg = _ratio(tn, tn + fn + fp, 1.0)
    out = np.stack([fg, bg, (fg + bg) / 2, _ratio(tp, tp + fp, 1.0), _ratio(tp, n_fg, 1.0),
                    _ratio(2 * tp, 2 * tp + fp + fn, 1.0)]) * 100
    out[:, a["n_fg"][idx] == 0] = np.nan
    return out


def _mean_at_best(tables, i, rows):
    """Mean of figure i over the rows at the tau index that maximises their mean fg IoU."""
    sub = tables[:, rows]  # [6,n,T], every row with foreground (no NaN)
    if sub.shape[1] == 0:
        return math.nan
    return float(sub[i][:, int(np.argmax(sub[0].mean(0)))].mean())


def oracle_stats(a, idx):
    """The six figures at the best tau of the rows idx (chosen again on every resample), as
    statistics (flowercam.metrics.statistics)."""
    tables = per_tau(a, idx)
    tables = tables[:, ~np.isnan(tables[0]).all(1)]  # [6,n,T] images with foreground
    n = tables.shape[1]
    tau = float(THRESHOLDS[int(np.argmax(tables[0].mean(0)))]) if n else None
    return {name: OverRows(lambda r, i=i: _mean_at_best(tables, i, r), n, n, {"tau": tau})
            for i, name in enumerate(FIGURES)}


def validated_stats(a, idx, k):
    """The six figures of the rows idx at tau index k chosen elsewhere; {} without one."""
    if k is None or len(idx) == 0:
        return {}
    column = per_tau(a, idx)[:, :, k]  # [6,n], NaN: no foreground
    return {name: Mean(column[i], {"tau": float(THRESHOLDS[k])})
            for i, name in enumerate(FIGURES)}


def stats(a, idx, taus):
    """{"oracle_tau", "validated_tau"} statistics of the mask images among idx; taus:
    localization.choose_taus of the tau set (its IoU index is this tau) or None."""
    idx = idx[a["has_mask"][idx]]
    if len(idx) == 0:
        return {}
    out = {"oracle_tau": oracle_stats(a, idx)}
    if taus is not None:
        out["validated_tau"] = validated_stats(a, idx, taus[0])
    return out
