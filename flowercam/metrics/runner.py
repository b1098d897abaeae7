"""evaluate.py --cam-metrics: faithfulness and localization of every map method on one split.

    python evaluate.py -d model/RUN --cam-metrics --limit 20 --steps 8
    python evaluate.py --cam-metrics --checkpoint model/RUN/epoch_7.pth --methods CAM ReCAM LayerCAM
    python evaluate.py -d model/RUN --cam-metrics --split-name test   # tau validated on valid
    python evaluate.py -d model/RUN --cam-metrics --masks-dir data/trimaps --mask-values 1 \
        --ignore-values 3

Writes cam_metrics.json (figures, 95% bootstrap intervals, per class, per image) and cam_metrics.md
into --output-dir (default: the model directory). run() takes a config.MetricsConfig (evaluate.py
builds it from the flags). Rows: the map methods and the baselines (center, full, random, sobel:
metrics/baselines.py; few-shot-N), each plain or refined (--refine; maprows).
Masks: --masks-dir, else DATA_DIR/masks. The inputs (checkpoint, methods, images, masks) are chosen
in flowercam.metrics.selection, the batches are measured in measuring (an interrupted run resumes:
resume.py), the tables are in tables.
"""

import dataclasses
import time

from flowercam import dist
from flowercam.cache import features
from flowercam.core import UserError
from flowercam.data import dataset, masks
from flowercam.metrics import (
    fewshot,
    localization,
    maprows,
    measuring,
    resume,
    selection,
    summary,
    tables,
    tau_file,
)
from flowercam.metrics.config import MetricsConfig


def tau_set(model, settings, rows, cfg, masks, few_shot=None, resumable=None):
    """Localization tables of every mask image of cfg.validate_tau_on (None: no such set);
    resumable: _resumable()'s opener of the pass's partial run."""
    if masks is None or cfg.validate_tau_on in (None, "none"):
        return None
    items = selection.with_masks(
        dataset.split_items(cfg.data_dir, cfg.validate_tau_on, cfg.split), masks)
    if not items:
        raise UserError(f"no {cfg.validate_tau_on} image has a mask in {masks.folder}: "
                        "validate tau on another subset, or add masks", topic="masks")
    tau_cfg = dataclasses.replace(cfg, split_name=cfg.validate_tau_on, families=tuple(
        f for f in cfg.families if f in ("localization", "pseudo-masks")))
    partial = resumable("cam_metrics_tau", tau_cfg, items) if resumable else None
    measured = measuring.measure(model, settings, items, rows, tau_cfg, masks, False, few_shot,
                                 partial)
    if measured is None:  # a rank > 0 under torchrun
        return None
    return {"subset": cfg.validate_tau_on, "n_images": len(items),
            "resumed_seconds": measured["resumed_seconds"],
            "taus": {row: localization.choose_taus(a) for row, a in measured["methods"].items()},
            "arrays": measured["methods"]}  # the tau set's own figures (pseudo.on_tau_set)


# ---------------------------------------------------------------- entry point


def tau_subset(cfg: MetricsConfig, masks) -> str:
    """The subset whose mask images choose the validated tau: given, else valid for test; none
    when the tau comes from a file (cfg.tau_from)."""
    if cfg.tau_from is not None:
        return "none"
    if cfg.validate_tau_on is not None:
        return cfg.validate_tau_on
    return "valid" if masks is not None and cfg.split_name == "test" else "none"


def _items(cfg, masks):
    """The measured items: cfg.split_name's (with a mask: --masked-only), --limit sampled."""
    every = dataset.split_items(cfg.data_dir, cfg.split_name, cfg.split)
    selection.check_masks_match(masks, every, cfg.split_name)
    every = selection.with_masks(every, masks) if cfg.masked_only else every
    items = selection.select_items(every, cfg.limit, cfg.seed)
    if not items:
        raise UserError(f"split {cfg.split} of {cfg.data_dir} has no {cfg.split_name} images")
    return items


def _resumable(model, ckpt, rows, out_dir):
    """-> open(name, cfg, items): the resume.Partial OUT/NAME.partial/ of one pass over items
    (None under torchrun, where every rank would write it)."""
    def open_partial(name, cfg, items):
        if dist.world() > 1:
            return None
        key = {"backbone": model.backbone.backbone_id, "rows": rows,
               "ids": [item_id for item_id, _, _ in items]}
        return resume.Partial(out_dir, name, resume.run_settings(cfg, ckpt, key), cfg.resume)
    return open_partial


def run(cfg: MetricsConfig, backbone=None):
    """evaluate.py --cam-metrics: measure, then write cam_metrics.json and cam_metrics.md.

    backbone: an already loaded vgg.Backbone to reuse (tests, notebooks).
    """
    cfg.check()
    size, (found, masks) = features.input_size(cfg.data_dir), _masks(cfg)
    model, settings, ckpt, cfg = selection.open_model(cfg, backbone)
    cfg = dataclasses.replace(cfg, validate_tau_on=tau_subset(cfg, masks))
    out_dir = selection.output_folder(cfg, ckpt)
    methods = selection.resolve_methods(cfg.methods, settings)
    items = _items(cfg, found)
    few_shot, few_info = fewshot.train_rows(cfg.baselines, model.backbone, cfg.data_dir,
                                            cfg.split, masks, size, cfg.device)
    rows = maprows.expand([*methods, *cfg.baselines], cfg.refine, methods)
    methods, start = maprows.expand(methods, cfg.refine, methods), time.perf_counter()
    selection.check_pairs(cfg.compare, rows)
    read = tau_file.read_tau_set(cfg, rows, ckpt, masks) if cfg.tau_from else None  # first
    resumable = _resumable(model, ckpt, rows, out_dir)
    measured = measuring.measure(model, settings, items, rows, cfg, masks,
                                 "faithfulness" in cfg.families, few_shot,
                                 resumable("cam_metrics", cfg, items))
    seconds = time.perf_counter() - start
    taus = read or tau_set(model, settings, rows, cfg, masks, few_shot, resumable)
    if measured is None:  # a rank > 0 under torchrun: rank 0 summarises and writes
        return None
    measured_until = time.perf_counter()
    tau_seconds = measured_until - start - seconds + (taus or {}).get("resumed_seconds", 0)
    context = {"checkpoint": str(ckpt), "split": cfg.split, "subset": cfg.split_name,
               "seconds": seconds + measured["resumed_seconds"], "tau_seconds": tau_seconds,
               "settings": settings, "class_names": settings.get("class_names"), "masks": masks,
               "tau_set": taus, "methods": methods, "few_shot": few_info}
    result = summary.summarise(measured, cfg, context)
    result["summary_seconds"] = time.perf_counter() - measured_until  # bootstrap etc., no tau pass
    tables.write(out_dir, result)
    for name in ("cam_metrics", "cam_metrics_tau"):
        resume.discard(out_dir, name)  # finished: nothing left to resume
    print(f"{len(items)} images x {len(rows)} maps in {context['seconds']:.0f} s -> "
          f"{out_dir / 'cam_metrics.md'}")
    return result


def _masks(cfg):
    """-> (the masks found, those the figures read): only localization and pseudo-masks read
    them; --masked-only still selects the images that have one (faithfulness of those)."""
    found = masks.resolve_masks(cfg.data_dir, cfg.masks_dir, cfg.mask_values,
                                cfg.ignore_values, features.input_size(cfg.data_dir))
    return found, found if {"localization", "pseudo-masks"} & set(cfg.families) else None
