"""evaluate.py --sanity: can a map be trusted? Adebayo et al. 2018's sanity checks for every map
method: its maps after model-parameter randomisation (cascading from the top, and one layer at a
time) and after data randomisation (a head trained on permuted labels), against the trained
model's maps of the same images and classes.

    python evaluate.py -d model/RUN --sanity --limit 12 --methods CAM GradCAM LayerCAM
    python evaluate.py -d model/RUN --sanity --no-independent --output-dir output/sanity

Writes sanity.json / sanity.md (tables.py) and, from evaluate.py, the figure and
the plot (figures.py). States: "cascade:<layer>" = every layer from the top down
to <layer> re-initialised (randomise.py); "independent:<layer>" = that layer only; "data" =
the permuted-label head (permuted.py). Head-only states reuse the feature cache; a
randomised backbone runs on the images. Baselines: center, full and sobel ignore the model
(similarity 1 by construction: what an edge detector scores); random is drawn anew for every
state, so its similarity is the chance level of each measure. Backbone passes: passes.py;
an interrupted run continues from OUT/sanity.partial/: metrics/resume.py.
"""

import dataclasses
import json
import time

import numpy as np
import torch
from tqdm import tqdm

from flowercam.backbones import protocol
from flowercam.cache import features
from flowercam.cam import compute, methods
from flowercam.core import UserError
from flowercam.data import dataset, masks
from flowercam.metrics import maprows, measuring, resume, selection, statistics
from flowercam.metrics.config import MetricsConfig
from flowercam.model import heads
from flowercam.sanity import passes, permuted, randomise, similarity


@dataclasses.dataclass(frozen=True)
class SanityOptions:
    """What --sanity randomises, beyond MetricsConfig's images and methods."""

    independent: bool = True  # also one layer at a time
    data: bool = True  # also the permuted-label head (needs the training split's feature cache)
    trainer: permuted.PermutedConfig = permuted.PermutedConfig()  # the permuted-label head
    figure_images: int = 3  # images kept for the figure (the first of the measured ones)


@dataclasses.dataclass(frozen=True)
class State:
    name: str
    group: str  # "cascade", "independent" or "data"
    layers: tuple = ()

    @property
    def head_only(self):
        return all(name in randomise.HEAD_LAYERS for name in self.layers)


def states(opts: SanityOptions, backbone) -> list[State]:
    """The randomised models, in the order of the tables: the cascade top-down (the head's
    layers, then the backbone's blocks), then each layer alone, then data randomisation."""
    order = randomise.cascade_layers(backbone)
    out = [State(f"cascade:{name}", "cascade", randomise.cascade(d, backbone))
           for d, name in enumerate(order, 1)]
    if opts.independent:
        out += [State(f"independent:{name}", "independent", (name,)) for name in order]
    return out + ([State("data", "data")] if opts.data else [])


def data_randomised(model, cfg: MetricsConfig, opts: SanityOptions, partial):
    """-> (Classifier with the permuted-label head on the same backbone, its facts): trained on
    the training split's feature cache, checked against chance on the validation split; saved in
    the partial run (and read back from it on resume: trained once, seeded)."""
    saved = partial.state("permuted")
    if saved is not None:
        head = heads.build_head(model.settings, model.backbone.channels)
        head.load_state_dict(saved["state_dict"])
        return (heads.Classifier(model.backbone, head.to(cfg.device)).eval(),
                json.loads(saved["facts"]))
    def cached(subset):
        items = dataset.split_items(cfg.data_dir, subset, cfg.split)
        return items, features.feature_cache(items, model.backbone, cfg.data_dir, "fp32",
                                             num_workers=cfg.num_workers, device=cfg.device,
                                             size=features.input_size(cfg.data_dir))
    (train_items, train_feats), (valid_items, valid_feats) = cached("train"), cached("valid")
    labels = permuted.permuted_labels(train_items, opts.trainer.seed)
    valid = features.CachedSource(valid_feats, features.labels_tensor(valid_items), cfg.device)
    start = time.perf_counter()
    head, history = permuted.train_permuted(model.settings, train_feats, labels, valid,
                                            opts.trainer)
    with torch.no_grad():
        right = (head(valid.feats).argmax(1) == valid.labels).float().cpu().numpy() * 100
    top1, ci, n = statistics.mean_ci(right, cfg.bootstrap, cfg.seed)
    facts = {"valid_top1": top1, "valid_top1_ci95": list(ci), "valid_images": n,
             "chance": 100 / model.settings.num_classes, "seconds": time.perf_counter() - start,
             "train_top1_permuted": history[-1]["train_top1"], "history": history,
             "config": dataclasses.asdict(opts.trainer)}
    partial.save_state("permuted", {"facts": json.dumps(facts), "state_dict": {
        k: v.detach().cpu() for k, v in head.state_dict().items()}})
    return heads.Classifier(model.backbone, head).eval(), facts


def state_model(model, state, seed, permuted_model):
    if state.group == "data":
        return permuted_model
    return randomise.randomised(model, state.layers, seed)


def class_maps_only(row, cfg, backbone):
    """True when the method reads nothing of the backbone but its output (CAM, Grad-CAM on the
    class maps, ...): FixedFeatures can stand in. Score-CAM's masked forwards need the images."""
    if row not in methods.METHODS:
        return False
    return compute.head_only(row, methods.resolve_options(row, _options(row, cfg), backbone))


def _options(row, cfg):
    return methods.layer_options(row, cfg.layers)  # as --cam-metrics (metrics/maprows.py)


def row_maps(model, row, images, pixels, feats, targets, ids, cfg, seed):
    """(raw [B,H,W], normalised [B,H,W]) numpy maps of one method or baseline; feats: the
    model's backbone output for these images (None: unknown) -> (maps, feats)."""
    if row in cfg.baselines:
        maps = maprows.baseline_maps(row, pixels, ids, seed).numpy()
        return (maps, maps), feats
    x = images.to(cfg.device)
    if class_maps_only(row, cfg, model.backbone):
        if feats is None:
            with torch.no_grad():
                feats = model.backbone(x)
        model = heads.Classifier(passes.FixedFeatures(feats, model.backbone), model.head)
    result = compute.maps_reusing(model, x, row, {} if feats is None else {"feats": feats},
                                  targets.to(cfg.device), normalize_by="minmax",
                                  **_options(row, cfg))
    maps = (result.raw.detach().float().cpu().numpy(),
            result.maps.detach().float().cpu().numpy())
    return maps, feats


@dataclasses.dataclass
class _Run:  # what every batch of one run shares
    model: object
    rows: list
    states: list
    cfg: MetricsConfig
    opts: SanityOptions
    permuted_model: object
    stages: tuple  # the backbone stages of the one pass per state (passes.planned_stages)
    batches: list  # per batch: {"per_image": {row: {state: {measure: [B]}}}, "figure", "seconds"}


def _inputs(model, images, labels, feats, target):
    """(pixels [B,3,H,W] in [0,1], targets [B]: the labels or the trained model's predictions)."""
    mean = torch.tensor(protocol.INPUT_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(protocol.INPUT_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        predicted = model.head(feats).argmax(1).cpu()
    return (images * std + mean).clamp(0, 1), predicted if target == "predicted" else labels


def _on_batch(r: _Run, model, prefix, layers):
    """The model with its backbone read through one StatePass of this batch."""
    at = passes.random_from(model.backbone, layers)
    return heads.Classifier(passes.StatePass(model.backbone, prefix, at, r.stages),
                            model.head)


def _batch(r: _Run, images, labels, feats, ids, keep):
    """Maps of every row under the trained model and every state; similarities per image
    (-> the batch's record, appended to r.batches at the end). keep: how many of the batch's
    first images the figure shows. Yields the images done after each state."""
    images = images.to(r.cfg.device)  # once: StatePass knows the batch by identity
    pixels, targets = _inputs(r.model, images.cpu(), labels, feats, r.cfg.target)
    prefix = passes.Prefix(r.model.backbone, images)
    trained = _on_batch(r, r.model, prefix, ())
    ref = {row: row_maps(trained, row, images, pixels, feats, targets, ids, r.cfg,
                         r.cfg.seed)[0] for row in r.rows}
    out = {"per_image": {row: {} for row in r.rows},
           "figure": {(row, "trained"): ref[row][1][:keep].astype(np.float16)
                      for row in r.rows if keep > 0}}
    refs = {row: similarity.Reference(*ref[row]) for row in r.rows}
    seen = {}  # layers -> the first state that randomised exactly them (its maps are these)
    for k, state in enumerate(r.states, 1):
        twin = state.name if state.group == "data" else seen.setdefault(state.layers, state.name)
        _state_rows(r, k, state, twin, (images, pixels, feats, targets, ids, prefix), refs,
                    keep, out)
        yield len(ids)
    r.batches.append(out)


def _state_rows(r: _Run, k, state, twin, batch, refs, keep, out):
    """Every row's maps under one state and their similarities with the trained maps (refs); a
    state whose twin randomised the same layers (independent:head.fc = cascade:head.fc) copies
    its methods'."""
    images, pixels, feats, targets, ids, prefix = batch
    model = None
    if twin == state.name:
        model = _on_batch(r, state_model(r.model, state, r.cfg.seed, r.permuted_model), prefix,
                          state.layers)
    known = feats if state.head_only else None  # a randomised backbone: one pass, later
    for row in r.rows:
        per = out["per_image"][row]
        if model is None and row not in r.cfg.baselines:  # the same model: the same maps
            per[state.name] = {m: v.copy() for m, v in per[twin].items()}
            continue
        got, known = row_maps(model or r.model, row, images, pixels, known, targets, ids,
                              r.cfg, r.cfg.seed + k)
        per[state.name] = refs[row].compare(*got)
        if keep > 0:
            out["figure"][(row, state.name)] = got[1][:keep].astype(np.float16)


def measure(r: _Run, items, feats, partial):
    """Loop over the items in batches (one tqdm bar: images x states), after the batches of the
    partial run; each finished batch is saved in it."""
    step = r.cfg.map_batch_size
    first = len(r.batches) * step  # the images the partial run has done
    size = features.input_size(r.cfg.data_dir)
    loader = dataset.make_loader(items[first:], step, False, 0, r.cfg.num_workers, size)
    with features.worker_errors(), tqdm(total=len(items) * len(r.states), desc="sanity",
                                        unit="map set",
                                        initial=min(first, len(items)) * len(r.states)) as bar:
        for start, (images, labels) in zip(range(first, len(items), step), loader, strict=True):
            began, batch = time.perf_counter(), items[start:start + step]
            f = (feats[start:start + step] if feats is not None
                 else r.model.backbone(images.to(r.cfg.device)).detach())
            keep = max(0, min(len(batch), r.opts.figure_images - start))
            for done in _batch(r, images, labels, f.to(r.cfg.device), [i for i, _, _ in batch],
                               keep):
                bar.update(done)
            r.batches[-1]["seconds"] = time.perf_counter() - began
            partial.save_batch(len(r.batches) - 1, r.batches[-1])


def _items(cfg):
    every = dataset.split_items(cfg.data_dir, cfg.split_name, cfg.split)
    if cfg.masked_only:
        spec = masks.resolve_masks(cfg.data_dir, cfg.masks_dir, cfg.mask_values,
                                   cfg.ignore_values, features.input_size(cfg.data_dir))
        every = selection.with_masks(every, spec)
    items = selection.select_items(every, cfg.limit, cfg.seed)
    if not items:
        raise UserError(f"split {cfg.split} of {cfg.data_dir} has no {cfg.split_name} images")
    return items


def _joined(r: _Run):
    """row -> state -> measure -> [N] over every batch."""
    return {row: {s.name: {m: np.concatenate([b["per_image"][row][s.name][m] for b in r.batches])
                           for m in similarity.MEASURES} for s in r.states} for row in r.rows}


def run(cfg: MetricsConfig, opts: SanityOptions, backbone=None):
    """-> the sanity result (plain dict; "figure": maps for figures.py)."""
    cfg.check()
    model, settings, ckpt, cfg = selection.open_model(cfg, backbone)
    out_dir = selection.output_folder(cfg, ckpt)
    methods = selection.resolve_methods(cfg.methods, settings, model.backbone)
    items, rows = _items(cfg), [*methods, *cfg.baselines]
    ids = [i for i, _, _ in items]
    key = {"backbone": model.backbone.backbone_id, "ids": ids, "rows": rows,
           "states": [s.name for s in states(opts, model.backbone)],
           "figure_images": opts.figure_images,
           "permuted": dataclasses.asdict(opts.trainer) if opts.data else None}
    partial = resume.Partial(out_dir, "sanity", resume.run_settings(cfg, ckpt, key), cfg.resume)
    start = time.perf_counter()
    permuted_model, data_facts = (data_randomised(model, cfg, opts, partial) if opts.data
                                  else (None, None))
    r = _Run(model, rows, states(opts, model.backbone), cfg, opts, permuted_model,
             passes.planned_stages(methods, lambda row: _options(row, cfg), model.backbone),
             partial.batches())
    if r.batches:
        print(f"resuming {partial.folder}: {len(r.batches)} batches done")
    earlier = sum(b["seconds"] for b in r.batches)
    measure(r, items, measuring.batch_features(model, items, cfg), partial)
    keys = dict.fromkeys(key for b in r.batches for key in b["figure"])  # the first batches'
    figure = {key: np.concatenate([b["figure"][key] for b in r.batches if key in b["figure"]])
              for key in keys}
    map_seconds = sum(b["seconds"] for b in r.batches)
    return {"checkpoint": str(ckpt), "split": cfg.split, "subset": cfg.split_name,
            "out_dir": str(out_dir), "ids": ids, "methods": methods,
            "baselines": list(cfg.baselines), "states": [dataclasses.asdict(s) for s in r.states],
            "per_image": _joined(r), "data_randomisation": data_facts,
            "seconds": time.perf_counter() - start + earlier, "map_seconds": map_seconds,
            "figure": figure, "figure_ids": ids[:opts.figure_images],
            "figure_paths": [p for _, p, _ in items[:opts.figure_images]],
            "options": {"seed": cfg.seed, "bootstrap": cfg.bootstrap, "target": cfg.target,
                        "limit": cfg.limit, "device": cfg.device, "layers": cfg.layers}}
