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
in flowercam.metrics.selection, the maths is in formulas / boxes / localization, the tables in
tables. Maps are computed in fp32; --precision only changes the scoring forwards.
"""

import dataclasses
import time

import numpy as np
import torch
from tqdm import tqdm

from flowercam import dist
from flowercam.core import UserError
from flowercam.data import dataset
from flowercam.metrics import (
    baselines,
    fewshot,
    formulas,
    localization,
    maprows,
    road,
    selection,
    summary,
    tables,
    tau_file,
)
from flowercam.metrics.config import MetricsConfig
from flowercam.model import vgg
from flowercam.train import features

# ---------------------------------------------------------------- measuring


def shared_inputs(model, images, labels, feats, keep, cfg, score_fn):
    """Per batch, method-independent: pixel-space images, targets, baselines and their scores.

    feats [B,512,7,7]: the backbone's output (feature cache), shared by the CAM / ReCAM maps,
    the targets and, in fp32, the original scores. Baselines are scored only for `keep` images.
    """
    mean = torch.tensor(vgg.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(vgg.IMAGENET_STD).view(1, 3, 1, 1)
    pixels = (images * std + mean).clamp(0, 1)  # [B,3,H,W] in [0,1]
    with torch.no_grad():
        probs = model.head(feats).float().softmax(1).cpu()
    predicted = probs.argmax(1)
    targets = predicted.clone() if cfg.target == "predicted" else labels.clone()
    if cfg.precision == "fp32":  # the original image's score is already known
        y = probs.gather(1, targets[:, None])[:, 0]
    else:  # score it as the perturbed images will be, for a like-for-like drop
        y = score_fn(pixels, targets)
    blurred = formulas.blur(pixels)
    baseline = {"zeros": mean.expand_as(pixels), "black": torch.zeros_like(pixels),
                "blur": blurred}[cfg.deletion_baseline].contiguous()
    y_blur, y_base = torch.full_like(y, float("nan")), torch.full_like(y, float("nan"))
    if keep.any():  # the ends of the deletion / insertion curves
        idx = torch.from_numpy(np.flatnonzero(keep))
        ends = score_fn(torch.cat([blurred[idx], baseline[idx]]), targets[idx].repeat(2))
        y_blur[idx], y_base[idx] = ends.view(2, -1)
    return {"pixels": pixels, "feats": feats, "targets": targets, "predicted": predicted,
            "blurred": blurred,
            "baseline": baseline, "y": y, "y_blur": y_blur, "y_base": y_base}


def batch_features(model, items, cfg):
    """[N,512,7,7] backbone output of the items, from the feature cache of their whole split
    (the one main.py and evaluate.py use, so a --limit sample builds nothing new); None with
    --no-cache."""
    if cfg.no_cache:
        return None
    full = dataset.split_items(cfg.data_dir, cfg.split_name, cfg.split)
    feats = features.feature_cache(full, model.backbone, cfg.data_dir, "fp32",
                                num_workers=cfg.num_workers, device=cfg.device,
                                size=features.input_size(cfg.data_dir))
    row = {item_id: i for i, (item_id, _, _) in enumerate(full)}
    # [N,512,h,w] float32 copy of N rows (a conv5_3 cache stores float16)
    return feats[[row[item_id] for item_id, _, _ in items]].float()


def perturbation_aucs(maps, shared, keep, score_fn, cfg, generator):
    """Deletion and insertion AUC [B] of the images `keep` (bool [B]); NaN for the others."""
    dele, ins = np.full(len(maps), np.nan), np.full(len(maps), np.nan)
    if keep.any():
        idx = torch.from_numpy(np.flatnonzero(keep))
        s = {k: v[idx] for k, v in shared.items() if torch.is_tensor(v) and k != "feats"}
        d = formulas.deletion_curve(score_fn, s["pixels"], maps[idx], s["targets"], cfg.steps,
                                   s["baseline"], generator, ends=(s["y"], s["y_base"]))
        i = formulas.insertion_curve(score_fn, s["pixels"], maps[idx], s["targets"], cfg.steps,
                                    s["blurred"], generator, ends=(s["y_blur"], s["y"]))
        dele[keep], ins[keep] = formulas.auc(d.numpy()), formulas.auc(i.numpy())
    return dele, ins


def measure_method(maps, shared, masks, keep, score_fn, cfg, generator, faithful=True):
    """Per-image figures of one method on one batch (dict of numpy arrays); ROAD (road.py) on
    the images `keep` when cfg.families has it."""
    nan = np.full(len(maps), np.nan)
    o = score_fn(shared["pixels"] * maps[:, None], shared["targets"]).numpy() if faithful else nan
    dele, ins = perturbation_aucs(maps, shared, keep & faithful, score_fn, cfg, generator)
    roads = road.per_image(score_fn, maps, shared, keep, cfg.seed) if "road" in cfg.families else {}
    return {"o": o, "deletion": dele, "insertion": ins, **roads,
            **localization.image_tables(maps.numpy(), masks, "localization" in cfg.families)}


def _batch_feats(model, all_feats, images, start, cfg):
    """[B,512,7,7] of the batch: rows of the feature cache, else a backbone pass."""
    if all_feats is None:
        with torch.no_grad():
            return model.backbone(images.to(cfg.device))
    return all_feats[start:start + len(images)].to(cfg.device)


def _facts(batch, labels, shared) -> dict:
    """The batch's per-image facts: ids, labels, targets, predictions, Y."""
    return {"ids": [item_id for item_id, _, _ in batch], "labels": labels.tolist(),
            **{key: shared[key].tolist() for key in ("targets", "predicted", "y")}}


@dataclasses.dataclass
class _Pass:  # what every batch of one measure() call shares
    model: object
    items: list
    rows: list
    cfg: MetricsConfig
    masks: object
    size: int
    score_fn: object
    generator: torch.Generator
    perturb: np.ndarray
    all_feats: object
    faithful: bool
    few_shot: dict  # {few-shot-N: fewshot.FewShotMap}


def _measure_batch(p, start, images, labels):
    """(per-row figures, per-image facts) of the batch of p.items starting at start."""
    batch, step = p.items[start:start + p.cfg.map_batch_size], p.cfg.map_batch_size
    keep = p.perturb[start:start + step]
    feats = _batch_feats(p.model, p.all_feats, images, start, p.cfg)
    shared = shared_inputs(p.model, images, labels, feats, keep, p.cfg, p.score_fn)
    mask_arrays = selection.batch_masks(batch, p.masks, p.size)

    def base(name):  # [B,H,W]: a few-shot classifier's, a class-agnostic or a method's map
        if name in p.few_shot:
            return p.few_shot[name].maps(p.model.backbone, images.to(p.cfg.device))
        if name in p.cfg.baselines:
            return baselines.baseline_maps(name, shared["pixels"], [b[0] for b in batch],
                                           p.cfg.seed)
        return maprows.method_maps(p.model, name, images, shared, p.cfg)
    figures = {}
    made = maprows.batch_maps(p.rows, base, shared["pixels"], p.cfg.refine_workers)
    for row, (maps, seconds) in made.items():
        figures[row] = measure_method(maps, shared, mask_arrays, keep, p.score_fn, p.cfg,
                                      p.generator, p.faithful)
        figures[row]["seconds"] = np.full(len(batch), seconds)
    return figures, _facts(batch, labels, shared)


def measure(model, settings, items, rows, cfg, masks, faithful=True, few_shot=None):
    """Loop over the items in batches -> {"images": per-image info, "methods": {row: arrays}}.

    rows: map methods and baselines (config.MAP_BASELINES); masks: selection.MaskSpec or None;
    faithful False: localization only (no scoring forwards, AD/IC/AUCs NaN); few_shot: the
    trained few-shot-N rows (fewshot.train_rows). Under torchrun each
    rank measures every world()-th batch; rank 0 returns them all in order, the others None.
    """
    size = int(settings.get("input_size", vgg.INPUT_SIZE))
    step = cfg.map_batch_size
    p = _Pass(model, items, rows, cfg, masks, size,
              formulas.make_score_fn(model, vgg.IMAGENET_MEAN, vgg.IMAGENET_STD, cfg.precision,
                                     cfg.metrics_batch_size, cfg.device),
              torch.Generator().manual_seed(cfg.seed),
              selection.perturb_selection([label for _, _, label in items], cfg.perturb_limit,
                                          cfg.seed) & (faithful or "road" in cfg.families),
              batch_features(model, items, cfg), faithful, few_shot or {})
    starts = list(range(0, len(items), step))
    mine = dist.shard(starts)
    loader = dataset.make_loader([it for s in mine for it in items[s:s + step]], step, False,
                                 0, cfg.num_workers, size)
    done = []
    with features.worker_errors(), tqdm(total=len(items), desc="cam metrics", unit="img",
                                        disable=not dist.is_root()) as bar:
        batches = iter(loader)
        for start in starts:
            if start not in mine:
                n = 2 * len(rows) * int(p.perturb[start:start + step].sum()) * p.faithful
                formulas.skip_pixel_ranks(p.generator, n, size * size)  # another rank's batch
                continue
            images, labels = next(batches)
            done.append((start, _measure_batch(p, start, images, labels)))
            bar.update(len(labels) * dist.world())
    ordered = dist.gather_ordered(done)
    return None if ordered is None else _join(ordered)


def _join(batches):  # [(per-row figures, facts)] of consecutive batches -> measure()'s result
    info = {k: [v for _, facts in batches for v in facts[k]] for k in batches[0][1]}
    joined = {m: {k: np.concatenate([b[0][m][k] for b in batches]) for k in batches[0][0][m]}
              for m in batches[0][0]}
    correct = np.asarray(info["predicted"]) == np.asarray(info["labels"])
    for arrays in joined.values():
        arrays["correct"] = correct
    return {"images": info, "methods": joined}


def tau_set(model, settings, rows, cfg, masks, few_shot=None):
    """Localization tables of every mask image of cfg.validate_tau_on (None: no such set)."""
    if masks is None or cfg.validate_tau_on in (None, "none"):
        return None
    items = selection.with_masks(
        dataset.split_items(cfg.data_dir, cfg.validate_tau_on, cfg.split), masks)
    if not items:
        raise UserError(f"no {cfg.validate_tau_on} image has a mask in {masks.folder}: "
                        "validate tau on another subset, or add masks", topic="masks")
    tau_cfg = dataclasses.replace(cfg, split_name=cfg.validate_tau_on, families=tuple(
        f for f in cfg.families if f in ("localization", "pseudo-masks")))
    measured = measure(model, settings, items, rows, tau_cfg, masks, False, few_shot)
    if measured is None:  # a rank > 0 under torchrun
        return None
    return {"subset": cfg.validate_tau_on, "n_images": len(items),
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


def run(cfg: MetricsConfig, backbone=None):
    """evaluate.py --cam-metrics: measure, then write cam_metrics.json and cam_metrics.md.

    backbone: an already loaded vgg.Backbone to reuse (tests, notebooks).
    """
    cfg.check()
    size = features.input_size(cfg.data_dir)
    found = selection.resolve_masks(cfg.data_dir, cfg.masks_dir, cfg.mask_values,
                                    cfg.ignore_values, size)
    # the figures read masks only for localization and pseudo-masks; --masked-only still
    # selects the images that have one (faithfulness of the mask images)
    masks = found if {"localization", "pseudo-masks"} & set(cfg.families) else None
    model, settings, ckpt, cfg = selection.open_model(cfg, backbone)
    cfg = dataclasses.replace(cfg, validate_tau_on=tau_subset(cfg, masks))
    out_dir = selection.output_folder(cfg, ckpt)
    methods = selection.resolve_methods(cfg.methods, settings)
    subset, split = cfg.split_name, cfg.split
    items = _items(cfg, found)
    few_shot, few_info = fewshot.train_rows(cfg.baselines, model.backbone, cfg.data_dir, split,
                                            masks, size, cfg.device)
    rows = maprows.expand([*methods, *cfg.baselines], cfg.refine, methods)
    methods, start = maprows.expand(methods, cfg.refine, methods), time.perf_counter()
    selection.check_pairs(cfg.compare, rows)
    read = tau_file.read_tau_set(cfg, rows, ckpt, masks) if cfg.tau_from else None  # first
    measured = measure(model, settings, items, rows, cfg, masks,
                       "faithfulness" in cfg.families, few_shot)
    seconds = time.perf_counter() - start
    taus = read or tau_set(model, settings, rows, cfg, masks, few_shot)
    if measured is None:  # a rank > 0 under torchrun: rank 0 summarises and writes
        return None
    context = {"checkpoint": str(ckpt), "split": split, "subset": subset, "seconds": seconds,
               "tau_seconds": time.perf_counter() - start - seconds, "settings": settings,
               "class_names": settings.get("class_names"), "masks": masks, "tau_set": taus,
               "methods": methods, "few_shot": few_info}
    result = summary.summarise(measured, cfg, context)
    result["summary_seconds"] = time.perf_counter() - start - seconds  # bootstrap etc.
    tables.write(out_dir, result)
    print(f"{len(items)} images x {len(rows)} maps in {seconds:.0f} s -> "
          f"{out_dir / 'cam_metrics.md'}")
    return result
