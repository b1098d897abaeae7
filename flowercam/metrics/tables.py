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
from flowercam.metrics import formulas, localization

# key, table header, format, show its tau; AD/IC/pointing/PxAP/IoU/box figures in %, AUCs in
# probability units
FAITHFULNESS = (("average_drop", "AD % ↓", "{:.1f}", False),
                ("increase_in_confidence", "IC % ↑", "{:.1f}", False),
                ("deletion_auc", "deletion AUC ↓", "{:.3f}", False),
                ("insertion_auc", "insertion AUC ↑", "{:.3f}", False),
                ("road_morf", "ROAD MoRF ↓", "{:.3f}", False),
                ("road_lerf", "ROAD LeRF ↑", "{:.3f}", False),
                ("road_combined", "ROAD (LeRF-MoRF)/2 ↑", "{:.3f}", False))
ROAD = ("road_morf", "road_lerf", "road_combined")  # per-image arrays when road was measured
TAU_FREE = (("pointing_game", "pointing % ↑", "{:.1f}", False),
            ("pxap", "PxAP % ↑", "{:.1f}", False))
AT_TAU = (("miou", "IoU % ↑", "{:.1f}", True), ("max_box_acc", "MaxBoxAcc % ↑", "{:.1f}", True),
          ("max_box_acc_v2", "MaxBoxAccV2 % ↑", "{:.1f}", False),
          ("top1_loc", "Top-1 Loc % ↑", "{:.1f}", False),
          ("gt_known_loc", "GT-known Loc % ↑", "{:.1f}", False))
COLUMNS = FAITHFULNESS + TAU_FREE + AT_TAU
BASELINE = " (baseline)"  # label suffix of the baseline rows


def faithfulness(arrays, y, idx, n_boot, seed):
    """AD, IC, deletion and insertion AUC of the images idx (per-image means)."""
    per_image = {"average_drop": formulas.drop_per_image(y[idx], arrays["o"][idx]),
                 "increase_in_confidence": formulas.increase_per_image(y[idx], arrays["o"][idx]),
                 "deletion_auc": arrays["deletion"][idx], "insertion_auc": arrays["insertion"][idx],
                 **{k: arrays[k][idx] for k in ROAD if k in arrays}}
    return {k: localization.figure(*formulas.mean_ci(v, n_boot, seed))
            for k, v in per_image.items()}


def localize(arrays, idx, taus, n_boot, seed):
    """Pointing, PxAP, and the tau figures at the oracle tau and (taus given) a validated tau."""
    idx = idx[arrays["has_mask"][idx]]
    if len(idx) == 0:
        return {}
    out = {**localization.threshold_free(arrays, idx, n_boot, seed),
           "oracle_tau": localization.oracle(arrays, idx, n_boot, seed)}
    if taus is not None:
        out["validated_tau"] = localization.validated(arrays, idx, taus, n_boot, seed)
    return out


def row_summary(arrays, y, labels, class_names, taus, n_boot, seed):
    """One method's (or baseline's) figures overall and per class."""
    everything = np.arange(len(y))
    overall = {**faithfulness(arrays, y, everything, n_boot, seed),
               **localize(arrays, everything, taus, n_boot, seed)}
    per_class = {}
    for label in sorted(set(labels.tolist())):
        idx = np.flatnonzero(labels == label)
        name = class_names[label] if class_names and label < len(class_names) else str(label)
        per_class[name] = {**faithfulness(arrays, y, idx, n_boot, seed),
                           **localize(arrays, idx, taus, n_boot, seed)}
    return {"overall": overall, "per_class": per_class}


def mask_counts(arrays, spec, tau_set):
    """How many images had a mask; where the masks came from and how they were read."""
    has = arrays["has_mask"]
    out = {"masks_dir": spec.folder if spec else None, "masks_from": spec.source if spec else None,
           "mask_values": spec.mask_values if spec else None,
           "ignore_values": list(spec.ignore_values) if spec else [],
           "images_with_mask": int(has.sum()),
           "images_missing_mask": int((~has).sum()) if spec else None,
           "images_without_foreground": int((has & (arrays["n_fg"] == 0)).sum()),
           "thresholds": "tau = 0, 0.01, ..., 0.99 of the min-max normalised map",
           "boxes": "8-connected components; MaxBoxAcc: largest, IoU >= 0.5; MaxBoxAccV2: all "
                    "components, mean over IoU >= 0.3/0.5/0.7 (Choe et al. 2020)",
           "oracle_tau": "chosen on the images it scores (best-threshold figures)"}
    if tau_set is not None:
        out["validated_tau"] = (f"chosen on the {tau_set['n_images']} mask images of "
                                f"{tau_set['subset']}, applied unchanged")
        out["tau_subset"], out["tau_images"] = tau_set["subset"], tau_set["n_images"]
    return out


def summarise(measured, cfg, context):
    """Everything cam_metrics.json holds (plain JSON types; NaN -> null when written).

    cfg: the run's config.MetricsConfig; context: checkpoint, split, masks (MaskSpec), tau_set
    (runner.tau_set: validated tau indices per row), methods (the map methods; the other rows of
    measured are baselines).
    """
    info = measured["images"]
    y, labels = np.asarray(info["y"], np.float64), np.asarray(info["labels"])
    n, tau_set = len(y), context["tau_set"]
    options = {k: getattr(cfg, k) for k in ("steps", "precision", "target", "deletion_baseline",
                                            "bootstrap", "limit", "perturb_limit", "seed",
                                            "device", "baselines", "validate_tau_on",
                                            "scales", "flip", "layers")}
    rows = {r: row_summary(a, y, labels, context["class_names"],
                           tau_set["taus"][r] if tau_set else None, cfg.bootstrap, cfg.seed)
            for r, a in measured["methods"].items()}
    first = next(iter(measured["methods"].values()))
    kept = ("o", "deletion", "insertion", "hit", *ROAD)
    per_image = {**info, **{m: {k: a[k].tolist() for k in kept if k in a}
                            for m, a in measured["methods"].items()}}
    return {"checkpoint": context["checkpoint"], "split": context["split"],
            "subset": context["subset"], "n_images": n, "seconds": context["seconds"],
            "seconds_per_image": context["seconds"] / max(n, 1),
            "tau_seconds": context.get("tau_seconds", 0.0),
            "torch_threads": torch.get_num_threads(), "options": options, "thresholds": 100,
            "localization": mask_counts(first, context["masks"], tau_set),
            "methods": {m: rows[m] for m in context["methods"]},
            "baselines": {b: rows[b] for b in rows if b not in context["methods"]},
            "per_image": per_image}


def _isnan(x):
    return isinstance(x, float) and math.isnan(x)


def _cell(figure, fmt, show_tau, with_ci=True):
    if not figure or figure["value"] is None or _isnan(figure["value"]):
        return "-"
    text = fmt.format(figure["value"])
    lo, hi = figure["ci95"]
    if with_ci and lo is not None and not _isnan(lo):
        text += f" [{fmt.format(lo)}, {fmt.format(hi)}]"
    if show_tau and isinstance(figure.get("tau"), float):
        text += f" @{figure['tau']:.2f}"
    return text


def _worse(figure, reference, header):
    """True when figure does not beat reference (higher is better for ↑, lower for ↓)."""
    if not figure or not reference or figure["value"] is None or reference["value"] is None:
        return False
    if "↓" in header:
        return figure["value"] >= reference["value"]
    return figure["value"] <= reference["value"]


def _table(rows, columns, with_ci=True, center=None):
    """rows: [(label, figures)]; center: figures the non-baseline rows must beat (else a †)."""
    columns = [c for c in columns if any(c[0] in figs for _, figs in rows)]
    if not columns:
        return []
    head = ["", "images"] + [c[1] for c in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, figs in rows:
        n = next(figs[c[0]]["n"] for c in columns if c[0] in figs)
        cells = []
        for key, header, fmt, show_tau in columns:
            cell = _cell(figs.get(key), fmt, show_tau, with_ci)
            mark = (center is not None and not label.endswith(BASELINE)
                    and _worse(figs.get(key), center.get(key), header))
            cells.append(cell + (" †" if mark and cell != "-" else ""))
        lines.append("| " + " | ".join([label, str(n), *cells]) + " |")
    return lines


def _rows(summary, pick):
    """[(label, figures)] of the methods, then the baselines (labelled), via pick(row dict)."""
    return ([(m, pick(f)) for m, f in summary["methods"].items()]
            + [(f"{b}{BASELINE}", pick(f)) for b, f in summary.get("baselines", {}).items()])


def _header(summary):
    opts = summary["options"]
    first = next(iter(summary["methods"].values()))["overall"]
    return [f"`{summary['checkpoint']}`, split {summary['split']} {summary['subset']}, "
            f"{summary['n_images']} images ({first['deletion_auc']['n']} of them with "
            f"deletion/insertion, --perturb-limit), {opts['steps']} deletion/insertion steps "
            f"(deleted pixels -> {opts['deletion_baseline']}), maps of the {opts['target']} "
            f"class, scoring in {opts['precision']}, {summary['seconds']:.0f} s "
            f"({summary['seconds_per_image']:.2f} s/image, {opts['device']}).",
            f"Values [95% bootstrap interval, {opts['bootstrap']} resamples of the images]. "
            "Baselines are maps without a model: center = Gaussian at the image centre, "
            "sigma = side/4; full = all ones; random = seeded uniform noise; sobel = the image's "
            "edge magnitude. † = does not beat the center baseline."
            + _aggregation(opts)]


def _aggregation(opts):
    scales, flip = opts.get("scales") or [1.0], opts.get("flip")
    if list(scales) == [1.0] and not flip:
        return ""
    return (f" Every map is aggregated over scales {', '.join(f'{s:g}' for s in scales)}"
            f"{' and flips' if flip else ''} (averaged at input size, then normalised).")


def _oracle_figures(row):
    """Overall pointing, PxAP and the oracle-tau figures of one row, flat."""
    overall = row["overall"]
    return {**{k: overall[k] for k in ("pointing_game", "pxap") if k in overall},
            **overall.get("oracle_tau", {})}


def _localization_lines(summary):
    loc = summary["localization"]
    center = summary.get("baselines", {}).get("center", {}).get("overall")
    lines = ["", "## Localization", "",
             f"Masks from `{loc['masks_dir']}` ({loc['masks_from']}; foreground "
             f"{loc['mask_values'] or 'any nonzero'}, ignored {loc['ignore_values']}): "
             f"{loc['images_with_mask']} images with a mask, {loc['images_missing_mask']} without "
             f"(skipped), {loc['images_without_foreground']} with no foreground pixel. Thresholds "
             f"{loc['thresholds']}; boxes: {loc['boxes']}. Top-1 / GT-known Loc at MaxBoxAcc's "
             "tau.", "", f"### Oracle tau: {loc['oracle_tau']}", ""]
    oracle = _oracle_figures
    center_row = summary.get("baselines", {}).get("center")
    lines += _table(_rows(summary, oracle), TAU_FREE + AT_TAU,
                    center=oracle(center_row) if center_row else None)
    if "validated_tau" in loc:
        rows = _rows(summary, lambda f: f["overall"].get("validated_tau", {}))
        lines += ["", f"### Validated tau: {loc['validated_tau']}", ""]
        lines += _table(rows, AT_TAU, center=(center or {}).get("validated_tau"))
    return lines


def markdown(summary):
    """cam_metrics.md: faithfulness and localization tables with 95% intervals, per class."""
    center = summary.get("baselines", {}).get("center", {}).get("overall")
    lines = ["# CAM metrics", "", *_header(summary), "", "## Faithfulness", ""]
    lines += _table(_rows(summary, lambda f: f["overall"]), FAITHFULNESS, center=center)
    if summary["localization"]["masks_dir"]:
        lines += _localization_lines(summary)
    for label, figs in _rows(summary, lambda f: f["per_class"]):
        lines += ["", f"## {label} per class (oracle tau)", ""]
        lines += _table([(c, {**f, **f.get("oracle_tau", {})}) for c, f in figs.items()],
                        COLUMNS, with_ci=False)
    return "\n".join(lines) + "\n"


def clean(obj):
    """NaN / numpy scalars -> JSON (null, int, float)."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [clean(v) for v in obj]
    if isinstance(obj, (np.integer, np.bool_)):
        return obj.item()
    if isinstance(obj, (float, np.floating)):
        return None if math.isnan(obj) else float(obj)
    return obj


def write(out_dir, summary):
    """Atomic cam_metrics.json + cam_metrics.md in out_dir."""
    summary = clean(summary)
    text = json.dumps(summary, indent=1, allow_nan=False)
    os.makedirs(out_dir, exist_ok=True)
    atomic_write(Path(out_dir) / "cam_metrics.json", lambda f: f.write(text), mode="w")
    atomic_write(Path(out_dir) / "cam_metrics.md", lambda f: f.write(markdown(summary)), mode="w")
    return summary
