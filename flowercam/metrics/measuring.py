"""The batch loop of evaluate.py --cam-metrics: every row's per-image figures on each batch
(faithfulness, localization tables, ROAD), each rank its batches under torchrun, the finished
batches of a partial run read back (resume.py).

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
from flowercam.cache import features
from flowercam.data import dataset, masks
from flowercam.metrics import baselines, formulas, localization, maprows, road, selection
from flowercam.metrics.config import MetricsConfig
from flowercam.model import vgg


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
    """Deletion and insertion AUC [B] and curves [B,steps+1] of the images `keep` (bool [B]);
    NaN for the others."""
    dele, ins = np.full(len(maps), np.nan), np.full(len(maps), np.nan)
    curves = np.full((2, len(maps), cfg.steps + 1), np.nan)  # deletion, insertion
    if keep.any():
        idx = torch.from_numpy(np.flatnonzero(keep))
        s = {k: v[idx] for k, v in shared.items() if torch.is_tensor(v) and k != "feats"}
        d = formulas.deletion_curve(score_fn, s["pixels"], maps[idx], s["targets"], cfg.steps,
                                   s["baseline"], generator, ends=(s["y"], s["y_base"]))
        i = formulas.insertion_curve(score_fn, s["pixels"], maps[idx], s["targets"], cfg.steps,
                                    s["blurred"], generator, ends=(s["y_blur"], s["y"]))
        dele[keep], ins[keep] = formulas.auc(d.numpy()), formulas.auc(i.numpy())
        curves[0, keep], curves[1, keep] = d.numpy(), i.numpy()
    return dele, ins, curves


def measure_method(maps, shared, masks, keep, score_fn, cfg, generator, faithful=True):
    """Per-image figures of one method on one batch (dict of numpy arrays); ROAD (road.py) on
    the images `keep` when cfg.families has it."""
    nan = np.full(len(maps), np.nan)
    o = score_fn(shared["pixels"] * maps[:, None], shared["targets"]).numpy() if faithful else nan
    dele, ins, curves = perturbation_aucs(maps, shared, keep & faithful, score_fn, cfg, generator)
    roads = road.per_image(score_fn, maps, shared, keep, cfg.seed) if "road" in cfg.families else {}
    return {"o": o, "deletion": dele, "insertion": ins, **roads,
            "deletion_curve": curves[0], "insertion_curve": curves[1],
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
    mask_arrays = masks.batch_masks(batch, p.masks, p.size)

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


def _drawn(p, start):  # pixel-rank draws of one batch's deletion and insertion curves
    return 2 * len(p.rows) * int(p.perturb[start:start + p.cfg.map_batch_size].sum()) * p.faithful


def measure(model, settings, items, rows, cfg, masks, faithful=True, few_shot=None, partial=None):
    """Loop over the items in batches -> {"images": per-image info, "methods": {row: arrays},
    "resumed_seconds"}.

    rows: map methods and baselines (config.MAP_BASELINES); masks: data.masks.MaskSpec or None;
    faithful False: localization only (no scoring forwards, AD/IC/AUCs NaN); few_shot: the
    trained few-shot-N rows (fewshot.train_rows); partial: a resume.Partial whose batches are
    read back (their measuring time is resumed_seconds) and which gets each new one. Under
    torchrun each rank measures every world()-th batch; rank 0 returns them all in order, the
    others None.
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
    mine = dist.shard(list(range(0, len(items), step)))
    saved = _saved(partial, mine, step)
    done = _loop(p, saved, [s for s in mine if s not in saved], partial)
    ordered = dist.gather_ordered(done)
    if ordered is None:
        return None
    return {**_join(ordered), "resumed_seconds": sum(b[2] for b in saved.values())}


def _saved(partial, mine, step):  # {start: the batch read back} of this rank's batches
    saved = {s: partial.batch(s // step) for s in mine} if partial is not None else {}
    saved = {s: b for s, b in saved.items() if b is not None}
    if saved:
        print(f"resuming {partial.folder}: {len(saved)} of {len(mine)} batches done")
    return saved


def _loop(p, saved, todo, partial):
    """[(start, (figures, facts, seconds))] of this rank's batches: those saved, and those of
    todo measured (and saved in partial)."""
    step, items = p.cfg.map_batch_size, p.items
    loader = dataset.make_loader([it for s in todo for it in items[s:s + step]], step, False,
                                 0, p.cfg.num_workers, p.size)
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


def _join(batches):  # [(per-row figures, facts, s)] of consecutive batches -> images, methods
    info = {k: [v for _, facts, _ in batches for v in facts[k]] for k in batches[0][1]}
    joined = {m: {k: np.concatenate([b[0][m][k] for b in batches]) for k in batches[0][0][m]}
              for m in batches[0][0]}
    correct = np.asarray(info["predicted"]) == np.asarray(info["labels"])
    for arrays in joined.values():
        arrays["correct"] = correct
    return {"images": info, "methods": joined}
