"""evaluate.py --cam-metrics: faithfulness and localization of every map method on one split.

    python evaluate.py -d model/RUN --cam-metrics --limit 20 --steps 8
    python evaluate.py --cam-metrics --checkpoint model/RUN/epoch_7.pth --methods CAM ReCAM LayerCAM
    python evaluate.py -d model/RUN --cam-metrics --split-name test   # tau validated on valid
    python evaluate.py -d model/RUN --cam-metrics --masks-dir data/trimaps --mask-values 1 \
        --ignore-values 3

Writes cam_metrics.json (figures, 95% bootstrap intervals, per class, per image) and cam_metrics.md
into --output-dir (default: the model directory). run() takes a config.MetricsConfig (evaluate.py
builds it from the flags). Rows: the map methods and the baselines (center, full, random, sobel:
maprows; few-shot-N), each plain or refined (--refine; maprows).
Masks: --masks-dir, else DATA_DIR/masks. run() is a pipeline (docs/metrics.md):
select (the checkpoint, rows, images and masks: selection) -> maps (each batch's maps of every
row: maprows) -> metrics (every metric of the registry on them: measuring, registry; an
interrupted run resumes: resume.py) -> summary (figures, intervals, paired differences: summary)
-> files (cam_metrics.json and .md: tables). Each stage reads its part of the MetricsConfig.
"""

import dataclasses
import time
from pathlib import Path

from flowercam import dist
from flowercam.cache import features
from flowercam.core import UserError
from flowercam.data import dataset, masks
from flowercam.metrics import (
    fewshot,
    localization,
    maprows,
    measuring,
    registry,
    resume,
    selection,
    summary,
    tables,
    tau_file,
)
from flowercam.metrics.config import (
    ImageChoice,
    MapOptions,
    MetricsConfig,
    ModelChoice,
    PassOptions,
    SummaryOptions,
)
from flowercam.model import heads
from flowercam.segment import segmenter


def run(cfg: MetricsConfig, backbone=None):
    """evaluate.py --cam-metrics: select -> maps -> metrics -> summary -> files.

    backbone: an already loaded protocol.Backbone to reuse (tests, notebooks). Returns the summary
    (cam_metrics.json's content) on rank 0, None on the other ranks under torchrun.
    """
    chosen = select(cfg, backbone)
    start = time.perf_counter()
    main, tau = measure_passes(chosen)  # each batch: the rows' maps, then the metrics
    if main is None:  # a rank > 0 under torchrun: rank 0 summarises and writes
        return None
    result = summarise(chosen, main, tau, start)
    tables.write(chosen.out_dir, result)
    for name in ("cam_metrics", "cam_metrics_tau"):
        resume.discard(chosen.out_dir, name)  # finished: nothing left to resume
    print(f"{len(chosen.items)} images x {len(chosen.rows)} maps in {result['seconds']:.0f} s -> "
          f"{chosen.out_dir / 'cam_metrics.md'}")
    return result


# ---------------------------------------------------------------- select


@dataclasses.dataclass
class Selected:
    """What a run measures: the model, the rows, the images, the masks, the tau's source."""

    cfg: MetricsConfig  # split, backbone weights and the tau subset resolved
    model: object
    settings: heads.HeadSettings
    ckpt: Path
    out_dir: Path
    methods: list  # the map-method rows (refined ones too)
    rows: list  # methods and baselines
    items: list  # (item id, path, label) measured
    masks: object  # data.masks.MaskSpec the figures read, or None
    few_shot: dict  # {few-shot-N or segmenter: segment.pixels.PixelMap}: the learned rows
    few_info: dict
    segmenter_info: dict | None  # the segmenter's checkpoint and settings (None: no such row)
    tau_read: localization.TauSet | None  # the validated tau read from --tau-from


def select(cfg: MetricsConfig, backbone=None) -> Selected:
    """The model, rows, images and masks of a run, every input checked before any work."""
    cfg.check()
    size = features.input_size(cfg.data_dir)
    found, masks = _masks(cfg.part(ImageChoice), cfg.families, size)
    model, settings, ckpt, chosen = selection.open_model(cfg.part(ModelChoice), backbone)
    cfg = dataclasses.replace(cfg, split=chosen.split, backbone_weights=chosen.backbone_weights)
    cfg = dataclasses.replace(cfg, validate_tau_on=tau_subset(cfg, masks))
    out_dir = selection.output_folder(cfg.part(ModelChoice), ckpt)
    methods = selection.resolve_methods(cfg.methods, settings, model.backbone)
    items = _items(cfg.part(ImageChoice), found)
    few_shot, few_info = {}, {}
    if any(b.startswith(fewshot.PREFIX) for b in cfg.baselines):  # classifiers trained on masks
        few_shot, few_info = fewshot.train_rows(cfg.baselines, model.backbone, cfg.data_dir,
                                                cfg.split, masks, size, cfg.device)
    seg_info = None
    if cfg.segmenter is not None:  # a model trained on pseudo-masks (segment.py), never a mask
        few_shot[segmenter.ROW], seg_info = open_segmenter(cfg.segmenter, model.backbone)
    rows = maprows.expand([*methods, *cfg.baselines, *([segmenter.ROW] if seg_info else [])],
                          cfg.refine, methods)
    methods = maprows.expand(methods, cfg.refine, methods)
    selection.check_pairs(cfg.compare, rows)
    read = tau_file.read_tau_set(cfg, rows, ckpt, masks) if cfg.tau_from else None
    return Selected(cfg, model, settings, ckpt, out_dir, methods, rows, items, masks, few_shot,
                    few_info, seg_info, read)


def open_segmenter(path, backbone):
    """(segment.pixels.PixelMap, {"checkpoint": path, **its settings}) of a segment.py
    checkpoint, refused when it was trained on another backbone's features."""
    pm, settings = segmenter.load(path)
    segmenter.check_backbone(settings, backbone, path)
    return pm, {"checkpoint": str(path), **settings}


def tau_subset(cfg: MetricsConfig, masks) -> str:
    """The subset whose mask images choose the validated tau: given, else valid for test; none
    when the tau comes from a file (cfg.tau_from)."""
    if cfg.tau_from is not None:
        return "none"
    if cfg.validate_tau_on is not None:
        return cfg.validate_tau_on
    return "valid" if masks is not None and cfg.split_name == "test" else "none"


def _masks(images: ImageChoice, families, size):
    """-> (the masks found, those the figures read): only localization and pseudo-masks read
    them; --masked-only still selects the images that have one (faithfulness of those)."""
    found = masks.resolve_masks(images.data_dir, images.masks_dir, images.mask_values,
                                images.ignore_values, size)
    return found, found if {"localization", "pseudo-masks"} & set(families) else None


def _items(images: ImageChoice, masks):
    """The measured items: the subset's (with a mask: --masked-only), --limit sampled."""
    every = dataset.split_items(images.data_dir, images.split_name, images.split)
    selection.check_masks_match(masks, every, images.split_name)
    every = selection.with_masks(every, masks) if images.masked_only else every
    items = selection.select_items(every, images.limit, images.seed)
    if not items:
        raise UserError(f"split {images.split} of {images.data_dir} has no {images.split_name} "
                        "images")
    return items


# ---------------------------------------------------------------- maps -> metrics


def _partial(chosen: Selected, name, cfg, items):
    """The resume.Partial OUT/NAME.partial/ of one pass over items (None under torchrun, where
    every rank would write it)."""
    if dist.world() > 1:
        return None
    key = {"backbone": chosen.model.backbone.backbone_id, "rows": chosen.rows,
           "ids": [item_id for item_id, _, _ in items],
           "metrics_version": registry.METRICS_VERSION}  # a changed metric: not resumed
    return resume.Partial(chosen.out_dir, name, resume.run_settings(cfg, chosen.ckpt, key),
                          cfg.resume)


def _pass(chosen: Selected, cfg, items, faithful, name):
    return measuring.measure(chosen.model, chosen.settings, items, chosen.rows,
                             cfg.part(PassOptions), cfg.part(MapOptions), chosen.masks,
                             faithful, chosen.few_shot, _partial(chosen, name, cfg, items))


def measure_passes(chosen: Selected):
    """(the measured images: measuring.Measured, the tau set: localization.TauSet or None); the
    first None on a rank > 0 under torchrun."""
    cfg = chosen.cfg
    begun = time.perf_counter()
    main = _pass(chosen, cfg, chosen.items, "faithfulness" in cfg.families, "cam_metrics")
    seconds = time.perf_counter() - begun
    tau = chosen.tau_read or tau_set(chosen)
    if main is not None:
        main.seconds = seconds + main.resumed_seconds
    return main, tau


def tau_set(chosen: Selected) -> localization.TauSet | None:
    """The localization tables of every mask image of cfg.validate_tau_on, and the tau each
    row chooses there (None: no such set)."""
    cfg, masks = chosen.cfg, chosen.masks
    if masks is None or cfg.validate_tau_on in (None, "none"):
        return None
    items = selection.with_masks(
        dataset.split_items(cfg.data_dir, cfg.validate_tau_on, cfg.split), masks)
    if not items:
        raise UserError(f"no {cfg.validate_tau_on} image has a mask in {masks.folder}: "
                        "validate tau on another subset, or add masks", topic="masks")
    tau_cfg = dataclasses.replace(cfg, split_name=cfg.validate_tau_on, families=tuple(
        f for f in cfg.families if f in ("localization", "pseudo-masks")))
    measured = _pass(chosen, tau_cfg, items, False, "cam_metrics_tau")
    if measured is None:  # a rank > 0 under torchrun
        return None
    return localization.TauSet(cfg.validate_tau_on, len(items),
                          {row: localization.choose_taus(a) for row, a in measured.rows.items()},
                          measured.rows, tau_cfg.families, measured.resumed_seconds)


# ---------------------------------------------------------------- summary


def summarise(chosen: Selected, main: measuring.Measured, tau, start):
    """cam_metrics.json's content: the figures, their intervals and the run's record."""
    cfg, measured_until = chosen.cfg, time.perf_counter()
    tau_seconds = measured_until - start - main.seconds + main.resumed_seconds + (
        tau.resumed_seconds if tau else 0)
    context = summary.Context(str(chosen.ckpt), cfg.split, cfg.split_name, main.seconds,
                              tau_seconds, chosen.settings.class_names, chosen.masks,
                              tau, chosen.methods, chosen.few_info, cfg.recorded(),
                              chosen.settings.backbone_id, str(cfg.data_dir),
                              chosen.segmenter_info)
    result = summary.summarise(main, cfg.part(SummaryOptions), context)
    result["summary_seconds"] = time.perf_counter() - measured_until  # bootstrap etc.
    return result
