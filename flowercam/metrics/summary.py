"""What cam_metrics.json holds: every row's figures with intervals, overall and per class, and
the paired differences between rows.

    python evaluate.py -d model/RUN --cam-metrics --limit 20 --compare LayerCAM CAM
    python -c "from flowercam.metrics import summary; help(summary.summarise)"

Figures per row, overall and per class, each {"value", "ci95": [lo, hi], "n"}: n = images used.
paired: {"a - b": {"a", "b", "difference": the same nesting as a row's "overall"}} for every row
against the center baseline and for the pairs the user names (--compare): paired bootstrap
differences (flowercam.metrics.statistics).
"""

import platform

import numpy as np
import torch

from flowercam.metrics import formulas, localization, pseudo, road, statistics
from flowercam.metrics.config import FEW_SHOT_BASELINES


def faithfulness_stats(arrays, y, idx):
    """AD, IC, deletion and insertion AUC of the images idx (per-image means), as statistics."""
    per_image = {"average_drop": formulas.drop_per_image(y[idx], arrays["o"][idx]),
                 "increase_in_confidence": np.where(np.isnan(arrays["o"][idx]), np.nan,  # unscored
                                                    formulas.increase_per_image(y[idx],
                                                                                arrays["o"][idx])),
                 "deletion_auc": arrays["deletion"][idx], "insertion_auc": arrays["insertion"][idx],
                 **{k: arrays[k][idx] for k in road.FIGURES if k in arrays}}
    return {k: statistics.Mean(v) for k, v in per_image.items()}


def localize_stats(arrays, idx, taus):
    """Pointing, PxAP, and the tau figures at the oracle tau and (taus given) a validated tau."""
    idx, out = idx[arrays["has_mask"][idx]], {}
    if len(idx) == 0:
        return out
    if "box_largest" in arrays:  # --figures localization
        out = {**localization.threshold_free_stats(arrays, idx),
               "oracle_tau": localization.oracle_stats(arrays, idx)}
        if taus is not None:
            out["validated_tau"] = localization.validated_stats(arrays, idx, taus)
    if "n_valid" in arrays:  # --figures pseudo-masks
        out["pseudo_masks"] = pseudo.stats(arrays, idx, taus)
    return out


def row_stats(arrays, y, idx, taus):
    """Every figure of one row (a method or baseline) on the images idx, as statistics."""
    return {**faithfulness_stats(arrays, y, idx), **localize_stats(arrays, idx, taus)}


def row_summary(arrays, y, labels, class_names, taus, n_boot, seed):
    """One method's (or baseline's) figures overall and per class."""
    overall = statistics.figures(row_stats(arrays, y, np.arange(len(y)), taus), n_boot, seed)
    per_class = {}
    for label in sorted(set(labels.tolist())):
        idx = np.flatnonzero(labels == label)
        name = class_names[label] if class_names and label < len(class_names) else str(label)
        per_class[name] = statistics.figures(row_stats(arrays, y, idx, taus), n_boot, seed)
    return {"overall": overall, "per_class": per_class}


def paired(measured, y, taus, pairs, n_boot, seed):
    """{"a - b": paired differences of every overall figure} for the (a, b) row pairs."""
    everything = np.arange(len(y))
    stats = {r: row_stats(measured[r], y, everything, taus[r] if taus else None)
             for r in {name for pair in pairs for name in pair}}
    return {f"{a} - {b}": {"a": a, "b": b,
                           "difference": statistics.differences(stats[a], stats[b], n_boot, seed)}
            for a, b in pairs}


def default_pairs(rows, methods):
    """Every row against center, and every method row against the largest few-shot baseline."""
    versus = [(r, "center") for r in rows if r != "center"] if "center" in rows else []
    few = [r for r in FEW_SHOT_BASELINES if r in rows][-1:]
    return versus + [(m, few[0]) for m in methods if few]


def mask_counts(arrays, spec, tau_set):
    """How many images had a mask; where the masks came from and how they were read."""
    has = arrays["has_mask"]
    read = spec.recorded() if spec else {"masks_dir": None, "mask_values": None,
                                         "ignore_values": []}
    out = {**read, "masks_from": spec.source if spec else None,
           "images_with_mask": int(has.sum()),
           "images_missing_mask": int((~has).sum()) if spec else None,
           "images_without_foreground": int((has & (arrays["n_fg"] == 0)).sum()),
           "thresholds": "tau = 0, 0.01, ..., 0.99 of the min-max normalised map",
           "boxes": "8-connected components; MaxBoxAcc: largest, IoU >= 0.5; MaxBoxAccV2: all "
                    "components, mean over IoU >= 0.3/0.5/0.7 (Choe et al. 2020)",
           "oracle_tau": "chosen on the images it scores (best-threshold figures)"}
    if tau_set is not None:
        source = f" (the oracle tau of {tau_set['from']})" if "from" in tau_set else ""
        out["validated_tau"] = (f"chosen on the {tau_set['n_images']} mask images of "
                                f"{tau_set['subset']}{source}, applied unchanged")
        out["tau_subset"], out["tau_images"] = tau_set["subset"], tau_set["n_images"]
    return out


def _pseudo_or_not(measured, cfg):
    """measured, without the pixel counts that make pseudo-mask figures unless they are asked."""
    if "pseudo-masks" in cfg.families:
        return measured
    return {**measured, "methods": {r: {k: v for k, v in a.items() if k != "n_valid"}
                                    for r, a in measured["methods"].items()}}


def tau_set_localization(tau_set):
    """{row: pointing, PxAP and the oracle-tau figures (flat Stats)} on the tau set's own mask
    images, where its oracle tau is the validated tau: a test run's tau set is a valid run
    already made (--figures localization); {} without one."""
    arrays = (tau_set or {}).get("arrays") or {}
    out = {}
    for row, a in arrays.items():
        if "box_largest" in a:
            idx = np.flatnonzero(a["has_mask"])
            out[row] = {**localization.threshold_free_stats(a, idx),
                        **localization.oracle_stats(a, idx)}
    return out


def _add_tau_set_figures(rows, tau_set, cfg):
    """Each row's localization and pseudo-mask figures on the tau set's own images."""
    for r, stats in tau_set_localization(tau_set).items():
        rows[r]["overall"]["tau_set_oracle"] = statistics.figures(stats, cfg.bootstrap, cfg.seed)
    for r, figs in pseudo.on_tau_set(tau_set, cfg.bootstrap, cfg.seed).items():
        if "pseudo_masks" in rows[r]["overall"]:
            rows[r]["overall"]["pseudo_masks"]["tau_set_oracle"] = figs


def _with_tau_set_pairs(pairs_out, tau_set, pairs, cfg):
    """pairs_out with each pair's differences on the tau set's own images added (localization
    and pseudo.paired_on_tau_set): the verdicts of those tables rest on them."""
    extra = pseudo.paired_on_tau_set(tau_set, pairs, cfg.bootstrap, cfg.seed)
    located = tau_set_localization(tau_set)
    out = {}
    for label, p in pairs_out.items():
        difference = dict(p["difference"])
        if p["a"] in located and p["b"] in located:
            difference["tau_set_oracle"] = statistics.differences(
                located[p["a"]], located[p["b"]], cfg.bootstrap, cfg.seed)
        if label in extra and "pseudo_masks" in difference:
            difference["pseudo_masks"] = {**difference["pseudo_masks"],
                                          "tau_set_oracle": extra[label]}
        out[label] = {**p, "difference": difference}
    return out


def _per_image(info, measured):
    """The per-image arrays cam_metrics.json keeps (scores, AUCs, pointing hits, ROAD; iou: the
    pixel IoU at the row's oracle tau, which ranks the report's gallery)."""
    kept = ("o", "deletion", "insertion", "hit", *road.FIGURES)
    out = {**info}
    for m, a in measured["methods"].items():
        out[m] = {k: a[k].tolist() for k in kept if k in a}
        if "tp" in a and a["has_mask"].any():
            ious = formulas.iou_per_threshold(a["tp"], a["fp"], a["n_fg"])
            ious[~a["has_mask"]] = np.nan
            k = int(np.argmax(np.nanmean(ious, 0))) if not np.isnan(ious).all() else 0
            out[m]["iou"] = (ious[:, k] * 100).tolist()
    return out


def curves(measured):
    """{row: {"deletion", "insertion": mean score per step [S+1] over the perturbed images,
    "precision", "recall": the set-level pixel PR curve behind PxAP, tau high to low}} (the
    report's plots)."""
    out = {}
    for m, a in measured["methods"].items():
        row = {}
        for k in ("deletion", "insertion"):
            c = a.get(f"{k}_curve")
            if c is not None and np.isfinite(c).all(1).any():
                row[k] = c[np.isfinite(c).all(1)].mean(0).tolist()
        if "tp" in a and a["has_mask"].any():
            has = a["has_mask"]
            pr = formulas.pr_curve(a["tp"][has], a["fp"][has], a["n_fg"][has])
            if pr is not None:
                row["precision"], row["recall"] = pr[0].tolist(), pr[1].tolist()
        out[m] = row
    return out


def versions():
    """What wrote the figures (report.html shows it beside the run's settings)."""
    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__}


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
                                            "device", "baselines", "validate_tau_on", "tau_from",
                                            "scales", "flip", "layers", "compare", "refine",
                                            "refine_workers", "families")}
    taus = tau_set["taus"] if tau_set else None
    measured = _pseudo_or_not(measured, cfg)
    rows = {r: row_summary(a, y, labels, context["class_names"], taus and taus[r],
                           cfg.bootstrap, cfg.seed)
            for r, a in measured["methods"].items()}
    _add_tau_set_figures(rows, tau_set, cfg)
    pairs = list(dict.fromkeys([*default_pairs(rows, context["methods"]),
                                *map(tuple, cfg.compare)]))
    first = next(iter(measured["methods"].values()))
    per_image = _per_image(info, measured)
    return {"checkpoint": context["checkpoint"], "backbone": context["settings"].get("backbone"),
            "data_dir": str(cfg.data_dir), "versions": versions(), "split": context["split"],
            "subset": context["subset"], "n_images": n, "seconds": context["seconds"],
            "seconds_per_image": context["seconds"] / max(n, 1),
            "row_seconds_per_image": {r: float(np.mean(a["seconds"]))
                                      for r, a in measured["methods"].items() if "seconds" in a},
            "few_shot": context.get("few_shot") or {},
            "tau_seconds": context.get("tau_seconds", 0.0),
            "torch_threads": torch.get_num_threads(), "options": options, "thresholds": 100,
            "localization": mask_counts(first, context["masks"], tau_set),
            "methods": {m: rows[m] for m in context["methods"]},
            "baselines": {b: rows[b] for b in rows if b not in context["methods"]},
            "paired": _with_tau_set_pairs(paired(measured["methods"], y, taus, pairs,
                                                 cfg.bootstrap, cfg.seed), tau_set, pairs, cfg),
            "per_image": per_image, "curves": curves(measured)}


