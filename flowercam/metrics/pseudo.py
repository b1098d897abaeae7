"""Pseudo-mask figures of --cam-metrics --figures pseudo-masks: the binary mask map >= tau against
the ground truth (ignored pixels left out), per image, at an oracle and a validated tau.

    python evaluate.py -d model/RUN --cam-metrics --figures pseudo-masks --split-name test
    python -c "from flowercam.metrics import pseudo; print(pseudo.FIGURES)"

Per image and tau (tp, fp, n_fg, n_valid of localization.image_tables; fn = n_fg - tp,
tn = n_valid - n_fg - fp): foreground IoU tp / (tp + fp + fn), background IoU tn / (tn + fn + fp),
mIoU their mean (the segmentation convention for two classes), precision tp / (tp + fp) (1 when
nothing is predicted), recall tp / n_fg, F1 2tp / (2tp + fp + fn); images without foreground are
left out. Figures are per-image means in %. One tau for all six: the one that maximises the mean
foreground IoU (localization's IoU tau, so the validated tau is localization.choose_taus's),
re-chosen in every bootstrap resample at the oracle tau, fixed at the validated tau.
"""

import math

import numpy as np

from flowercam.metrics.config import FEW_SHOT_BASELINES, default_thresholds

THRESHOLDS = default_thresholds()
FIGURES = ("fg_iou", "bg_iou", "miou", "precision", "recall", "f1")
HEADERS = ("fg IoU % ↑", "bg IoU % ↑", "mIoU % ↑", "precision % ↑", "recall % ↑", "F1 % ↑")


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


def _at_best(tables):
    """[6,n,T] -> ([6] means at the tau index that maximises the mean fg IoU, that index)."""
    with np.errstate(all="ignore"):
        means = np.nanmean(tables, axis=1)  # [6,T]
    if np.isnan(means[0]).all():
        return np.full(len(FIGURES), math.nan), None
    k = int(np.argmax(np.where(np.isnan(means[0]), -np.inf, means[0])))
    return means[:, k], k


def _resamples(tables, n_boot, seed, pick):
    """[n_boot,6] statistic pick(tables[:, r]) over formulas.bootstrap_ci's resamples (same
    seed, same resamples: paired across rows)."""
    n = tables.shape[1]
    if n == 0 or n_boot <= 0:
        return np.full((0, len(FIGURES)), math.nan)
    rng = np.random.default_rng(seed)
    return np.array([pick(tables[:, rng.integers(0, n, n)]) for _ in range(n_boot)])


def _figures(values, boots, n, k):
    out = {}
    for i, name in enumerate(FIGURES):
        b = boots[:, i][~np.isnan(boots[:, i])] if len(boots) else boots[:, i]
        ci = list(np.percentile(b, [2.5, 97.5])) if len(b) else [math.nan, math.nan]
        out[name] = {"value": float(values[i]), "ci95": [float(c) for c in ci], "n": int(n),
                     "tau": None if k is None else float(THRESHOLDS[k])}
    return out


def oracle(a, idx, n_boot, seed):
    """The six figures at the best tau of the rows idx (re-chosen in every resample)."""
    tables = per_tau(a, idx)
    tables = tables[:, ~np.isnan(tables[0]).all(1)]  # images with foreground
    values, k = _at_best(tables)
    return _figures(values, _resamples(tables, n_boot, seed, lambda t: _at_best(t)[0]),
                    tables.shape[1], k)


def validated(a, idx, k, n_boot, seed):
    """The six figures of the rows idx at tau index k chosen elsewhere; {} without one."""
    if k is None:
        return {}
    column = per_tau(a, idx)[:, :, k]
    column = column[:, ~np.isnan(column[0])]  # [6,n]
    with np.errstate(all="ignore"):
        values = column.mean(1) if column.shape[1] else np.full(len(FIGURES), math.nan)
    return _figures(values, _resamples(column, n_boot, seed, lambda c: c.mean(1)),
                    column.shape[1], k)


def summary(a, idx, taus, n_boot, seed):
    """{"oracle_tau": figures, "validated_tau": figures} of the mask images among idx; taus:
    localization.choose_taus of the tau set (its IoU index is this tau) or None."""
    idx = idx[a["has_mask"][idx]]
    if len(idx) == 0:
        return {}
    out = {"oracle_tau": oracle(a, idx, n_boot, seed)}
    if taus is not None:
        out["validated_tau"] = validated(a, idx, taus[0], n_boot, seed)
    return out


def on_tau_set(tau_set, n_boot, seed):
    """{row: oracle figures} on the tau set's own mask images (runner.tau_set; there its
    oracle tau is the validated tau); {} without a tau set."""
    if not tau_set or "arrays" not in tau_set:
        return {}
    return {row: oracle(a, np.flatnonzero(a["has_mask"]), n_boot, seed)
            for row, a in tau_set["arrays"].items() if "n_valid" in a}


# ---------------------------------------------------------------- cam_metrics.md

TAU_KINDS = (("tau_set_oracle", "The tau set's mask images at their own oracle tau (the "
                               "validated tau)"),
             ("oracle_tau", "Oracle tau (chosen on the images scored)"),
             ("validated_tau", "Validated tau (chosen on the tau set's mask images)"))


def _cell(fig, mark):
    if not fig or fig["value"] is None or math.isnan(fig["value"]):
        return "-"
    lo, hi = fig["ci95"]
    ci = "" if lo is None or math.isnan(lo) else f" [{lo:.1f}, {hi:.1f}]"
    return f"{fig['value']:.1f}{ci}{mark}"


def _marks(figs, refs):
    """† not above the center baseline, ‡ not above the largest few-shot baseline."""
    return "".join(sign for sign, ref in zip("†‡", refs, strict=True)
                   if ref and figs and ref.get("value") is not None
                   and figs["value"] is not None and figs["value"] <= ref["value"])


def markdown_lines(rows, seconds, suffix):
    """The pseudo-mask tables; rows [(label, overall figures)], baselines labelled with suffix;
    seconds {row: s/image}."""
    rows = [(label, figs["pseudo_masks"]) for label, figs in rows if figs.get("pseudo_masks")]
    if not rows:
        return []
    by = dict(rows)
    few = [f"{n}{suffix}" for n in FEW_SHOT_BASELINES if f"{n}{suffix}" in by]  # 1, 2, 5
    lines = ["", "## Pseudo-masks (map >= tau against the mask; ignored pixels left out)", "",
             "Per-image means in % [95% bootstrap interval]; one tau per row, the one that "
             "maximises the mean foreground IoU. Rows METHOD+REFINER: the map refined from the "
             "image (flowercam.refine). † = not above center, ‡ = not above the largest "
             "few-shot baseline (trained on training-split masks)."]
    for kind, title in TAU_KINDS:
        if not any(kind in p for _, p in rows):
            continue
        lines += ["", f"### {title}", "", "| | images | tau | " + " | ".join(HEADERS)
                  + " | s/image |", "|" + "---|" * (len(HEADERS) + 4)]
        refs = [by.get(f"center{suffix}", {}).get(kind), by[few[-1]].get(kind) if few else None]
        for label, p in rows:
            figs = p.get(kind, {})
            first = figs.get(FIGURES[0], {})
            tau = "-" if first.get("tau") is None else f"{first['tau']:.2f}"
            cells = [_cell(figs.get(f), "" if label.endswith(suffix)
                           else _marks(figs.get(f), [r and r.get(f) for r in refs]))
                     for f in FIGURES]
            s = seconds.get(label.removesuffix(suffix))
            lines.append(f"| {label} | {first.get('n', 0)} | {tau} | " + " | ".join(cells)
                         + f" | {'-' if s is None else f'{s:.2f}'} |")
    return lines
