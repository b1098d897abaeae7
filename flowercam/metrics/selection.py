"""What evaluate.py --cam-metrics measures: the model (open_model), the map methods, the images (a
sample; a class-balanced subset for deletion/insertion; those with a mask), and where the results
go (output_folder). The masks and what their values mean: flowercam/data/masks.py.

    python -c "from flowercam.metrics import selection as s; \
print(s.perturb_selection([0, 0, 0, 1, 1, 2], 3, seed=0))"
    python -c "from flowercam.metrics import selection as s; print(s.select_items(range(10), 3, 0))"
"""

import dataclasses
from pathlib import Path

import numpy as np

from flowercam import core
from flowercam.backbones import registry
from flowercam.cam import methods
from flowercam.core import UserError
from flowercam.data import dataset, masks
from flowercam.train import evaluation, records, runs


def resolve_checkpoint(checkpoint=None, model_dir=None):
    """The checkpoint file, else the best checkpoint of the run folder (runs.resolve_checkpoint)."""
    if not (checkpoint or model_dir):
        raise UserError("the map metrics need a model: name a run folder or a checkpoint",
                        topic="model")
    return runs.resolve_checkpoint(checkpoint or model_dir)


def resolve_methods(requested, settings, backbone=None):
    """Requested methods (checked against the head and the backbone) or the report's methods
    the head and backbone support (the rest of the CAM family costs up to 600 forwards per
    image: by name only)."""
    if requested:
        for method in requested:
            methods.check_method(method, settings.model_type, backbone)
        return list(dict.fromkeys(requested))
    return methods.supported(settings.model_type, methods.REPORT_METHODS, backbone)


def select_items(items, limit, seed):
    """All items, or a seeded random `limit` of them in split order (every class has a chance)."""
    return dataset.sample_items(items, limit, seed, in_order=True)


def with_masks(items, spec):
    """The items that have a mask in spec's folder (--masked-only); UserError without masks."""
    if spec is None:
        raise UserError("measuring only the images with a mask needs masks", topic="masks")
    return [it for it in items if masks.find_mask(spec.folder, it[0], it[1])]


def perturb_selection(labels, limit, seed):
    """Boolean [N]: which images get deletion/insertion curves, round-robin over the classes."""
    labels = np.asarray(labels)
    if not limit or limit >= len(labels):
        return np.ones(len(labels), dtype=bool)
    order = np.random.default_rng([seed, 1]).permutation(len(labels))
    rank = np.zeros(len(labels), dtype=int)  # position of each image within its class's order
    for label in np.unique(labels):
        members = order[labels[order] == label]
        rank[members] = np.arange(len(members))
    chosen = order[np.argsort(rank[order], kind="stable")[:limit]]
    keep = np.zeros(len(labels), dtype=bool)
    keep[chosen] = True
    return keep


def check_masks_match(spec, items, subset):
    """UserError when no image of the subset has a mask (wrong folder or names)."""
    if spec is not None and not any(masks.find_mask(spec.folder, i, p) for i, p, _ in items):
        raise UserError(f"no {subset} image has a mask in {spec.folder} (looked for "
                        f"<image id>.png, e.g. {items[0][0]}.png): pass the right masks folder")


def check_pairs(pairs, rows):
    """UserError when a pair to compare names a map that is not measured, or the same map twice."""
    for pair in pairs:
        missing = [name for name in pair if name not in rows]
        if missing:
            raise UserError(f"cannot compare {missing[0]}: it is not among the maps measured "
                            f"({', '.join(rows)}); add it to the methods or baselines")
        if len(pair) != 2 or pair[0] == pair[1]:
            raise UserError(f"compare needs two different maps, got {list(pair)}")


def open_model(cfg, backbone=None):
    """-> (model, settings, ckpt, cfg with split and backbone_weights resolved from the run)."""
    ckpt = resolve_checkpoint(cfg.checkpoint, cfg.model_dir)
    split, weights = records.run_defaults(ckpt, cfg.split, cfg.backbone_weights)
    cfg = dataclasses.replace(cfg, split=split, backbone_weights=weights)
    model, settings = registry.load_model(ckpt, weights, cfg.device, backbone)
    evaluation.check_data(settings, cfg.data_dir, model.backbone)
    return model, settings, ckpt, cfg


def output_folder(cfg, ckpt) -> Path:
    """Where cam_metrics.json/.md go: cfg.output_dir, else the checkpoint's folder (checked now,
    before the work)."""
    if cfg.output_dir is not None:
        core.check_writable_dir(cfg.output_dir)
        return Path(cfg.output_dir)
    core.check_writable_dir(Path(ckpt).parent, "the checkpoint's folder", "pass --output-dir DIR")
    return Path(ckpt).parent
