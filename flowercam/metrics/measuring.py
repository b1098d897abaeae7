"""The batch loop of evaluate.py --cam-metrics: the maps of every row on each batch (maprows),
then every metric of the registry on them (registry.measure), each rank its batches under
torchrun, the finished batches of a partial run read back (resume.py).

    python -c "from flowercam.metrics import measuring; help(measuring.measure)"
    .venv/bin/pytest tests/test_runner.py tests/test_resume.py -q

runner.py chooses the inputs and writes the files; the maths is in formulas / boxes /
localization; maps are computed in fp32 (maprows), --precision only changes the scoring forwards.
"""

import dataclasses
import time

import numpy as np
import torch
from tqdm import tqdm

from flowercam import dist
from flowercam.backbones import protocol
from flowercam.cache import features
from flowercam.data import dataset, masks
from flowercam.metrics import formulas, localization, maprows, registry, selection
from flowercam.metrics.config import MapOptions, PassOptions


@dataclasses.dataclass
class Inputs:
    """Per batch, method-independent: pixel-space images, targets, the curves' ends."""

    pixels: torch.Tensor  # [B,3,H,W] in [0,1]
    targets: torch.Tensor  # [B]
    predicted: torch.Tensor  # [B]
    y: torch.Tensor  # [B] the target's probability on the image
    y_blur: torch.Tensor  # [B] on the blurred image (NaN: no curve)
    y_base: torch.Tensor  # [B] on the deletion baseline (NaN: no curve)
    blurred: torch.Tensor  # [B,3,H,W]
    baseline: torch.Tensor  # [B,3,H,W]
    cam_cache: dict  # compute.maps_reusing's: "feats" [B,C,h,w] shared by the maps


def shared_inputs(model, images, labels, feats, keep, opts: PassOptions, score_fn) -> Inputs:
    """Per batch, method-independent: pixel-space images, targets, baselines and their scores.

    feats [B,C,h,w]: the backbone's output (feature cache), shared by the CAM / ReCAM maps,
    the targets and, in fp32, the original scores. Baselines are scored only for `keep` images.
    """
    mean = torch.tensor(protocol.INPUT_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(protocol.INPUT_STD).view(1, 3, 1, 1)
    pixels = (images * std + mean).clamp(0, 1)  # [B,3,H,W] in [0,1]
    with torch.no_grad():
        probs = model.head(feats).float().softmax(1).cpu()
    predicted = probs.argmax(1)
    targets = predicted.clone() if opts.target == "predicted" else labels.clone()
    if opts.precision == "fp32":  # the original image's score is already known
        y = probs.gather(1, targets[:, None])[:, 0]
    else:  # score it as the perturbed images will be, for a like-for-like drop
        y = score_fn(pixels, targets)
    blurred = formulas.blur(pixels)
    baseline = {"zeros": mean.expand_as(pixels), "black": torch.zeros_like(pixels),
                "blur": blurred}[opts.deletion_baseline].contiguous()
    y_blur, y_base = torch.full_like(y, float("nan")), torch.full_like(y, float("nan"))
    if keep.any():  # the ends of the deletion / insertion curves
        idx = torch.from_numpy(np.flatnonzero(keep))
        ends = score_fn(torch.cat([blurred[idx], baseline[idx]]), targets[idx].repeat(2))
        y_blur[idx], y_base[idx] = ends.view(2, -1)
    return Inputs(pixels, targets, predicted, y, y_blur, y_base, blurred, baseline,
                  {"feats": feats})


def batch_features(model, items, cfg: PassOptions):
    """[N,C,h,w] backbone output of the items, from the feature cache of their whole split
    (the one main.py and evaluate.py use, so a --limit sample builds nothing new); None with
    --no-cache."""
    if cfg.no_cache:
        return None
    full = dataset.split_items(cfg.data_dir, cfg.split_name, cfg.split)
    feats = features.feature_cache(full, model.backbone, cfg.data_dir, "fp32",
                                num_workers=cfg.num_workers, device=cfg.device,
                                size=features.input_size(cfg.data_dir))
    row = {item_id: i for i, (item_id, _, _) in enumerate(full)}
    # [N,C,h,w] float32 copy of N rows (a conv5_3 cache stores float16)
    return feats[[row[item_id] for item_id, _, _ in items]].float()


def measure_row(maps, inputs: Inputs, mask_arrays, keep, p) -> dict:
    """Per-image arrays of one row on one batch: every metric of the registry that the pass's
    figures ask for (registry.measure) and the mask tables (localization.mask_tables)."""
    fg, valid, _ = mask_arrays  # [B,H,W], [B,H,W], [B]
    batch = registry.Batch(maps, inputs.pixels, inputs.targets, inputs.y, inputs.y_blur,
                           inputs.y_base, inputs.blurred, inputs.baseline, fg, valid, keep,
                           p.faithful, p.score_fn, p.generator,
                           registry.Scoring(p.opts.steps, p.opts.seed))
    return {**registry.measure(batch, p.opts.families),
            **localization.mask_tables(batch.np_maps, mask_arrays)}


def _batch_feats(model, all_feats, images, start, device):
    """[B,C,h,w] of the batch: rows of the feature cache, else a backbone pass."""
    if all_feats is None:
        with torch.no_grad():
            return model.backbone(images.to(device))
    return all_feats[start:start + len(images)].to(device)


def _facts(batch, labels, inputs: Inputs) -> dict:
    """The batch's per-image facts: ids, labels, targets, predictions, Y."""
    return {"ids": [item_id for item_id, _, _ in batch], "labels": labels.tolist(),
            "targets": inputs.targets.tolist(), "predicted": inputs.predicted.tolist(),
            "y": inputs.y.tolist()}


@dataclasses.dataclass
class _Pass:  # what every batch of one measure() call shares
    model: object
    items: list
    rows: list
    opts: PassOptions
    map_options: MapOptions
    masks: object
    size: int
    score_fn: object
    generator: torch.Generator
    perturb: np.ndarray
    all_feats: object
    faithful: bool
    few_shot: dict  # {few-shot-N: segment.pixels.PixelMap}


def _measure_batch(p, start, images, labels):
    """(per-row arrays, per-image facts) of the batch of p.items starting at start: the maps of
    every row (maprows), then the metrics on them (measure_row)."""
    batch, step = p.items[start:start + p.opts.map_batch_size], p.opts.map_batch_size
    keep = p.perturb[start:start + step]
    feats = _batch_feats(p.model, p.all_feats, images, start, p.opts.device)
    inputs = shared_inputs(p.model, images, labels, feats, keep, p.opts, p.score_fn)
    mask_arrays = masks.batch_masks(batch, p.masks, p.size)
    made = maprows.batch_maps(p.model, p.rows, p.few_shot, images, [b[0] for b in batch],
                              inputs.pixels, inputs.targets, inputs.cam_cache, p.map_options)
    figures = {}
    for row, (maps, seconds) in made.items():
        figures[row] = measure_row(maps, inputs, mask_arrays, keep, p)
        figures[row]["seconds"] = np.full(len(batch), seconds)
    return figures, _facts(batch, labels, inputs)


def _drawn(p, start):  # pixel-rank draws of one batch's deletion and insertion curves
    step = p.opts.map_batch_size
    return 2 * len(p.rows) * int(p.perturb[start:start + step].sum()) * p.faithful


@dataclasses.dataclass
class Measured:
    """What one pass over the images measured."""

    images: dict  # per-image facts: ids, labels, targets, predicted, y (lists, item order)
    rows: dict  # {row: {array: [N, ...]}}: the metrics' arrays, y and correct
    resumed_seconds: float  # measuring time of the batches read back from a partial run
    seconds: float = 0.0  # measuring time of the whole pass (runner), resumed batches included


def measure(model, settings, items, rows, opts: PassOptions, map_options: MapOptions, masks,
            faithful=True, few_shot=None, partial=None) -> Measured | None:
    """Loop over the items in batches -> Measured (rank 0; None on the other ranks).

    rows: map methods and baselines (config.MAP_BASELINES); masks: data.masks.MaskSpec or None;
    faithful False: localization only (no scoring forwards, AD/IC/AUCs NaN); few_shot: the
    trained few-shot-N rows (fewshot.train_rows); partial: a resume.Partial whose batches are
    read back (their measuring time is resumed_seconds) and which gets each new one. Under
    torchrun each rank measures every world()-th batch; rank 0 returns them all in order, the
    others None.
    """
    size = settings.input_size
    step = opts.map_batch_size
    p = _Pass(model, items, rows, opts, map_options, masks, size,
              formulas.make_score_fn(model, protocol.INPUT_MEAN, protocol.INPUT_STD, opts.precision,
                                     opts.metrics_batch_size, opts.device),
              torch.Generator().manual_seed(opts.seed),
              selection.perturb_selection([label for _, _, label in items], opts.perturb_limit,
                                          opts.seed) & (faithful or "road" in opts.families),
              batch_features(model, items, opts), faithful, few_shot or {})
    mine = dist.shard(list(range(0, len(items), step)))
    saved = _saved(partial, mine, step)
    done = _loop(p, saved, [s for s in mine if s not in saved], partial)
    ordered = dist.gather_ordered(done)
    if ordered is None:
        return None
    return Measured(*_join(ordered), sum(b[2] for b in saved.values()))


def _saved(partial, mine, step):  # {start: the batch read back} of this rank's batches
    saved = {s: partial.batch(s // step) for s in mine} if partial is not None else {}
    saved = {s: b for s, b in saved.items() if b is not None}
    if saved:
        print(f"resuming {partial.folder}: {len(saved)} of {len(mine)} batches done")
    return saved


def _loop(p, saved, todo, partial):
    """[(start, (figures, facts, seconds))] of this rank's batches: those saved, and those of
    todo measured (and saved in partial)."""
    step, items = p.opts.map_batch_size, p.items
    loader = dataset.make_loader([it for s in todo for it in items[s:s + step]], step, False,
                                 0, p.opts.num_workers, p.size)
    done = []
    with features.worker_errors(), tqdm(total=len(items), desc="cam metrics", unit="img",
                                        initial=sum(len(items[s:s + step]) for s in saved),
                                        disable=not dist.is_root()) as bar:
        batches = iter(loader)
        for start in range(0, len(items), step):
            if start not in todo:  # another rank's batch, or one measured before: skip its draws
                formulas.skip_pixel_ranks(p.generator, _drawn(p, start), p.size * p.size)
                done += [(start, saved[start])] if start in saved else []
                continue
            images, labels = next(batches)
            began = time.perf_counter()
            figures, facts = _measure_batch(p, start, images, labels)
            done.append((start, (figures, facts, time.perf_counter() - began)))
            if partial is not None:
                partial.save_batch(start // step, done[-1][1])
            bar.update(len(labels) * dist.world())
    return done


def _join(batches):  # [(per-row arrays, facts, s)] of consecutive batches -> (images, rows)
    info = {k: [v for _, facts, _ in batches for v in facts[k]] for k in batches[0][1]}
    joined = {m: {k: np.concatenate([b[0][m][k] for b in batches]) for k in batches[0][0][m]}
              for m in batches[0][0]}
    correct = np.asarray(info["predicted"]) == np.asarray(info["labels"])
    y = np.asarray(info["y"], np.float64)
    for arrays in joined.values():  # the facts every row's figures read
        arrays["correct"], arrays["y"] = correct, y
    return info, joined
