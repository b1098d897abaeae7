"""What cam_metrics.json holds: every row's figures with intervals, overall and per class, and
the paired differences between rows.

    python evaluate.py -d model/RUN --cam-metrics --limit 20 --compare LayerCAM CAM
    python -c "from flowercam.metrics import summary; help(summary.summarise)"

Figures per row, overall and per class, each {"value", "ci95": [lo, hi], "n"}: n = images used;
each metric of flowercam.metrics.registry gives its own (registry.stats).
paired: {"a - b": {"a", "b", "difference": the same nesting as a row's "overall"}} for every row
against the center baseline and for the pairs the user names (--compare): paired bootstrap
differences (flowercam.metrics.statistics).
"""

import dataclasses
import platform

import numpy as np
import torch

from flowercam.metrics import formulas, localization, registry, statistics
from flowercam.metrics.config import FEW_SHOT_BASELINES, SummaryOptions
from flowercam.model import checkpoints
from flowercam.refine import methods as refiners
from flowercam.segment import segmenter


@dataclasses.dataclass
class Context:
    """What the summary records beside the figures."""

    checkpoint: str
    split: int
    subset: str
    seconds: float
    tau_seconds: float
    class_names: list | None
    masks: object  # data.masks.MaskSpec or None
    tau_set: localization.TauSet | None
    methods: list  # the map-method rows (the other rows are baselines)
    few_shot: dict
    options: dict  # MetricsConfig.recorded()
    backbone: str | None = None  # the checkpoint's backbone id (report.html's settings)
    data_dir: str | None = None  # where the images are (report.html's gallery)
    segmenter: dict | None = None  # the segmenter row's checkpoint and settings


def row_stats(arrays, idx, taus, families, tau_arrays=None, tau_families=()):
    """Every figure of one row (a method or baseline) on the images idx, as statistics; with
    tau_arrays, its figures on the tau set's own images too (registry.tau_set_stats)."""
    out = registry.stats(arrays, idx, taus, families)
    if tau_arrays is not None:
        registry.merge(out, registry.tau_set_stats(tau_arrays, tau_families))
    return out


def _class_name(label, class_names):
    return class_names[label] if class_names and label < len(class_names) else str(label)


def row_summary(arrays, labels, class_names, taus, opts: SummaryOptions, everything):
    """One method's (or baseline's) figures overall (everything: its statistics on every image)
    and per class."""
    overall = statistics.figures(everything, opts.bootstrap, opts.seed)
    per_class = {}
    for label in sorted(set(labels.tolist())):
        idx = np.flatnonzero(labels == label)
        per_class[_class_name(label, class_names)] = statistics.figures(
            row_stats(arrays, idx, taus, opts.families), opts.bootstrap, opts.seed)
    return {"overall": overall, "per_class": per_class}


def paired(stats, pairs, opts: SummaryOptions):
    """{"a - b": paired differences of every overall figure} for the (a, b) row pairs."""
    return {f"{a} - {b}": {"a": a, "b": b,
                           "difference": statistics.differences(stats[a], stats[b],
                                                                opts.bootstrap, opts.seed)}
            for a, b in pairs}


def default_pairs(rows, methods):
    """Every row against center, and every method and segmenter row against the largest few-shot
    baseline."""
    versus = [(r, "center") for r in rows if r != "center"] if "center" in rows else []
    few = [r for r in FEW_SHOT_BASELINES if r in rows][-1:]
    learned = [r for r in rows if refiners.split_row(r)[0] == segmenter.ROW]
    return versus + [(m, few[0]) for m in [*methods, *learned] if few]


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
        source = f" (the oracle tau of {tau_set.source})" if tau_set.source else ""
        out["validated_tau"] = (f"chosen on the {tau_set.n_images} mask images of "
                                f"{tau_set.subset}{source}, applied unchanged")
        out["tau_subset"], out["tau_images"] = tau_set.subset, tau_set.n_images
    return out


def _per_image(info, rows):
    """The per-image arrays cam_metrics.json keeps (registry: each metric's per_image; iou: the
    pixel IoU of each image at the row's oracle tau, which ranks report.html's gallery)."""
    kept = registry.per_image_arrays()
    out = {**info, **{m: {k: a[k].tolist() for k in kept if k in a} for m, a in rows.items()}}
    for m, a in rows.items():
        if "tp" in a and a["has_mask"].any():
            ious = formulas.iou_per_threshold(a["tp"], a["fp"], a["n_fg"])
            ious[~a["has_mask"]] = np.nan
            k = int(np.argmax(np.nanmean(ious, 0))) if not np.isnan(ious).all() else 0
            out[m]["iou"] = (ious[:, k] * 100).tolist()
    return out


def curves(rows):
    """{row: {"deletion", "insertion": mean score per step [S+1] over the perturbed images,
    "precision", "recall": the set-level pixel PR curve behind PxAP, tau high to low}}
    (report.html's plots)."""
    out = {}
    for m, a in rows.items():
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


def summarise(measured, opts: SummaryOptions, context: Context):
    """Everything cam_metrics.json holds (plain JSON types; NaN -> null when written).

    measured: measuring.Measured; context: checkpoint, split, masks, the tau set, which rows
    are methods (the others are baselines).
    """
    info, tau_set = measured.images, context.tau_set
    labels, n = np.asarray(info["labels"]), len(info["y"])
    taus = tau_set.taus if tau_set else None
    tau_arrays = (tau_set.arrays or {}) if tau_set else {}
    everything = {r: row_stats(a, np.arange(n), taus and taus[r], opts.families,
                               tau_arrays.get(r), tau_set.families if tau_set else ())
                  for r, a in measured.rows.items()}
    rows = {r: row_summary(a, labels, context.class_names, taus and taus[r], opts, everything[r])
            for r, a in measured.rows.items()}
    pairs = list(dict.fromkeys([*default_pairs(rows, context.methods),
                                *map(tuple, opts.compare)]))
    first = next(iter(measured.rows.values()))
    return {"checkpoint": context.checkpoint, "checkpoint_sha256": checkpoints.content_sha256(
                context.checkpoint), "backbone": context.backbone,
            "data_dir": context.data_dir, "versions": versions(), "split": context.split,
            "subset": context.subset, "n_images": n, "seconds": context.seconds,
            "seconds_per_image": context.seconds / max(n, 1),
            "row_seconds_per_image": {r: float(np.mean(a["seconds"]))
                                      for r, a in measured.rows.items() if "seconds" in a},
            "few_shot": context.few_shot or {},
            **({"segmenter": context.segmenter} if context.segmenter else {}),
            "tau_seconds": context.tau_seconds,
            "torch_threads": torch.get_num_threads(), "options": context.options,
            "thresholds": 100,
            "localization": mask_counts(first, context.masks, tau_set),
            "methods": {m: rows[m] for m in context.methods},
            "baselines": {b: rows[b] for b in rows if b not in context.methods},
            "paired": paired(everything, pairs, opts),
            "per_image": _per_image(info, measured.rows), "curves": curves(measured.rows)}
