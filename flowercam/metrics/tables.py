"""Summaries and tables of evaluate.py --cam-metrics (cam_metrics.json, cam_metrics.md).

    python evaluate.py -d model/RUN --cam-metrics --limit 20
    python -c "from flowercam.metrics import tables as t; import json; \
print(t.markdown(json.load(open('model/RUN/cam_metrics.json'))))"

Figures per method, overall and per class, each {"value", "ci95": [lo, hi], "n"}: n = images used.
"""

import json
import math
import os
from pathlib import Path

import numpy as np
import torch

from flowercam.core import atomic_write
from flowercam.metrics import formulas

# key, table header, format; AD/IC/pointing/PxAP/mIoU in %, AUCs in probability units
COLUMNS = (("average_drop", "AD % ↓", "{:.1f}"), ("increase_in_confidence", "IC % ↑", "{:.1f}"),
           ("deletion_auc", "deletion AUC ↓", "{:.3f}"), ("insertion_auc", "insertion AUC ↑",
                                                          "{:.3f}"),
           ("pointing_game", "pointing % ↑", "{:.1f}"), ("pxap", "PxAP % ↑", "{:.1f}"),
           ("miou", "mIoU % ↑", "{:.1f}"))


def _figure(value, ci, n):
    return {"value": value, "ci95": list(ci), "n": int(n)}


def faithfulness(arrays, y, idx, n_boot, seed):
    """AD, IC, deletion and insertion AUC of the images idx (per-image means)."""
    per_image = {"average_drop": formulas.drop_per_image(y[idx], arrays["o"][idx]),
                 "increase_in_confidence": formulas.increase_per_image(y[idx], arrays["o"][idx]),
                 "deletion_auc": arrays["deletion"][idx], "insertion_auc": arrays["insertion"][idx]}
    return {k: _figure(*formulas.mean_ci(v, n_boot, seed)) for k, v in per_image.items()}


def localization(arrays, idx, n_boot, seed):
    """Pointing game (per image), PxAP and best-threshold mIoU (set-level) of the masked images."""
    idx = idx[arrays["has_mask"][idx]]
    if len(idx) == 0:
        return {}
    thresholds = formulas.default_thresholds()
    tp, fp, n_fg = arrays["tp"][idx], arrays["fp"][idx], arrays["n_fg"][idx]
    out = {"pointing_game": _figure(*formulas.mean_ci(arrays["hit"][idx] * 100, n_boot, seed))}
    pxap_ci = formulas.bootstrap_ci(lambda r: formulas.pxap_from_counts(tp[r], fp[r], n_fg[r]),
                                   len(idx), n_boot, seed)
    out["pxap"] = _figure(formulas.pxap_from_counts(tp, fp, n_fg), pxap_ci, len(idx))
    ious = formulas.iou_per_threshold(tp, fp, n_fg)
    miou, threshold = formulas.best_iou_from_ious(ious, thresholds)
    # the threshold is chosen again in every resample: its choice is part of the figure
    ci = formulas.bootstrap_ci(lambda r: formulas.best_iou_from_ious(ious[r], thresholds)[0],
                              len(idx), n_boot, seed)
    out["miou"] = {**_figure(miou, ci, (n_fg > 0).sum()), "threshold": threshold}
    return out


def method_summary(arrays, y, labels, class_names, n_boot, seed):
    everything = np.arange(len(y))
    overall = {**faithfulness(arrays, y, everything, n_boot, seed),
               **localization(arrays, everything, n_boot, seed)}
    per_class = {}
    for label in sorted(set(labels.tolist())):
        idx = np.flatnonzero(labels == label)
        name = class_names[label] if class_names and label < len(class_names) else str(label)
        per_class[name] = {**faithfulness(arrays, y, idx, n_boot, seed),
                           **localization(arrays, idx, n_boot, seed)}
    return {"overall": overall, "per_class": per_class}


def mask_counts(arrays, cfg):
    has = arrays["has_mask"]
    return {"masks_dir": cfg.masks_dir, "mask_values": cfg.mask_values,
            "ignore_values": list(cfg.ignore_values or ()), "images_with_mask": int(has.sum()),
            "images_missing_mask": int((~has).sum()) if cfg.masks_dir else None,
            "images_without_foreground": int((has & (arrays["n_fg"] == 0)).sum())}


def summarise(measured, cfg, context):
    """Everything cam_metrics.json holds (plain JSON types; NaN -> null when written).

    cfg: the run's config.MetricsConfig (options, mask settings); context: checkpoint, split, ...
    """
    info = measured["images"]
    y, labels = np.asarray(info["y"], np.float64), np.asarray(info["labels"])
    n = len(y)
    options = {k: getattr(cfg, k) for k in ("steps", "precision", "target", "deletion_baseline",
                                             "bootstrap", "limit", "perturb_limit", "seed",
                                             "device")}
    methods = {m: method_summary(a, y, labels, context["class_names"], cfg.bootstrap, cfg.seed)
               for m, a in measured["methods"].items()}
    first = next(iter(measured["methods"].values()))
    per_image = {**info, **{m: {k: a[k].tolist() for k in ("o", "deletion", "insertion", "hit")}
                            for m, a in measured["methods"].items()}}
    return {"checkpoint": context["checkpoint"], "split": context["split"],
            "subset": context["subset"], "n_images": n, "seconds": context["seconds"],
            "seconds_per_image": context["seconds"] / max(n, 1), "torch_threads":
            torch.get_num_threads(), "options": options, "thresholds": 100,
            "localization": mask_counts(first, cfg), "methods": methods,
            "per_image": per_image}


def _cell(figure, fmt):
    if not figure or figure["value"] is None or _isnan(figure["value"]):
        return "-"
    text = fmt.format(figure["value"])
    lo, hi = figure["ci95"]
    if lo is not None and not _isnan(lo):
        text += f" [{fmt.format(lo)}, {fmt.format(hi)}]"
    if "threshold" in figure and figure["threshold"] is not None:
        text += f" @{figure['threshold']:.2f}"
    return text


def _n_perturbed(summary):
    first = next(iter(summary["methods"].values()))["overall"]
    return first["deletion_auc"]["n"]


def _isnan(x):
    return isinstance(x, float) and math.isnan(x)


def _table(rows, first, figures_of, with_ci=True):
    head = [first, "images"] + [h for k, h, _ in COLUMNS if any(k in figures_of(r) for r in rows)]
    keys = [k for k, _, _ in COLUMNS if any(k in figures_of(r) for r in rows)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        figs = figures_of(row)
        n = figs["average_drop"]["n"]
        cells = []
        for key, _, fmt in COLUMNS:
            if key in keys:
                fig = figs.get(key)
                cells.append(_cell(fig if with_ci or not fig else {**fig, "ci95": [None, None]},
                                   fmt))
        lines.append("| " + " | ".join([str(row), str(n), *cells]) + " |")
    return lines


def markdown(summary):
    """cam_metrics.md: overall table with 95% intervals, mask counts, per-class tables."""
    opts, loc = summary["options"], summary["localization"]
    lines = ["# CAM metrics", "",
             f"`{summary['checkpoint']}`, split {summary['split']} {summary['subset']}, "
             f"{summary['n_images']} images ({_n_perturbed(summary)} of them with "
             f"deletion/insertion, --perturb-limit), {opts['steps']} deletion/insertion steps "
             f"(deleted pixels -> {opts['deletion_baseline']}), maps of the {opts['target']} "
             f"class, scoring in {opts['precision']}, {summary['seconds']:.0f} s "
             f"({summary['seconds_per_image']:.2f} s/image, {opts['device']}).",
             f"Values [95% bootstrap interval, {opts['bootstrap']} resamples of the images]; "
             "mIoU @ its best threshold.", ""]
    methods = summary["methods"]
    lines += _table(list(methods), "method", lambda m: methods[m]["overall"])
    if loc["masks_dir"]:
        lines += ["", f"Masks from `{loc['masks_dir']}`: {loc['images_with_mask']} images with a "
                      f"mask, {loc['images_missing_mask']} without (skipped), "
                      f"{loc['images_without_foreground']} with no foreground pixel."]
    for method, figs in methods.items():
        classes = figs["per_class"]
        lines += ["", f"## {method} per class", ""]
        lines += _table(list(classes), "class", lambda c, cl=classes: cl[c], with_ci=False)
    return "\n".join(lines) + "\n"


def _clean(obj):
    """NaN / numpy scalars -> JSON (null, int, float)."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.integer, np.bool_)):
        return obj.item()
    if isinstance(obj, (float, np.floating)):
        return None if math.isnan(obj) else float(obj)
    return obj


def write(out_dir, summary):
    """Atomic cam_metrics.json + cam_metrics.md in out_dir."""
    summary = _clean(summary)
    text = json.dumps(summary, indent=1, allow_nan=False)
    os.makedirs(out_dir, exist_ok=True)
    atomic_write(Path(out_dir) / "cam_metrics.json", lambda f: f.write(text), mode="w")
    atomic_write(Path(out_dir) / "cam_metrics.md", lambda f: f.write(markdown(summary)), mode="w")
    return summary
