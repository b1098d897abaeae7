"""What evaluate.py --cam-metrics measures: the checkpoint, the map methods, the images (a seeded
sample; a class-balanced subset for deletion/insertion) and their foreground masks.

    python -c "from flowercam.metrics import selection as s; \
print(s.perturb_selection([0, 0, 0, 1, 1, 2], 3, seed=0))"
    python -c "from flowercam.metrics import selection as s; print(s.select_items(range(10), 3, 0))"
"""

import dataclasses
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from flowercam.cam import methods
from flowercam.core import UserError
from flowercam.data import dataset
from flowercam.metrics import formulas
from flowercam.train import runs

# Flower-17 masks (../shared/flowers17/masks/README.txt): 1 flower; 0 unlabelled, 5 stray
FLOWERS17_MASK_VALUES = (1,)
FLOWERS17_IGNORE_VALUES = (0, 5)


def resolve_checkpoint(checkpoint=None, model_dir=None):
    """The checkpoint file, else the best checkpoint of the run folder (runs.best_checkpoint)."""
    if checkpoint:
        return Path(checkpoint)
    if model_dir:
        return runs.best_checkpoint(model_dir)
    raise UserError("--cam-metrics needs a model: pass -d RUN_DIR or --checkpoint FILE.pth")


def resolve_methods(requested, settings):
    """Requested methods (checked against the head) or every method the head supports."""
    if requested:
        for method in requested:
            methods.check_method(method, settings)
        return list(dict.fromkeys(requested))
    return methods.supported(settings.get("model_type"))


def select_items(items, limit, seed):
    """All items, or a seeded random `limit` of them in split order (every class has a chance)."""
    if limit is None or limit >= len(items):
        return list(items)
    if limit < 1:
        raise UserError(f"--limit must be positive, got {limit}")
    picked = np.random.default_rng(seed).choice(len(items), size=limit, replace=False)
    return [items[i] for i in sorted(picked)]


def with_masks(items, spec):
    """The items that have a mask in spec's folder (--masked-only); UserError without masks."""
    if spec is None:
        raise UserError("--masked-only needs masks: pass --masks-dir or run augment.py --source "
                        "with a masks/ folder")
    return [it for it in items if find_mask(spec.folder, it[0], it[1])]


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


@dataclasses.dataclass(frozen=True)
class MaskSpec:
    """Where the masks are and how to read them; exact_size: masks must already be that size."""

    folder: str
    mask_values: tuple[int, ...] | None  # foreground values; None: any nonzero
    ignore_values: tuple[int, ...]
    source: str  # "data folder" or "--masks-dir"
    exact_size: int | None = None


def resolve_masks(data_dir, masks_dir=None, mask_values=None, ignore_values=None, size=None):
    """-> MaskSpec or None: --masks-dir (resized nearest), else DATA_DIR/masks (augment.py
    --source wrote them at `size` px; Flower-17 values unless given), else no masks."""
    if masks_dir:
        if not Path(masks_dir).is_dir():
            raise UserError(f"--masks-dir {masks_dir} is not a folder: pass the masks' folder")
        return MaskSpec(str(masks_dir), mask_values, tuple(ignore_values or ()), "--masks-dir")
    record = dataset.read_index(data_dir).get("masks") or {}
    folder = Path(data_dir) / record.get("dir", "masks")
    if folder.is_dir():
        return MaskSpec(str(folder),
                        FLOWERS17_MASK_VALUES if mask_values is None else tuple(mask_values),
                        FLOWERS17_IGNORE_VALUES if ignore_values is None else tuple(ignore_values),
                        "data folder", size)
    if mask_values is not None or ignore_values is not None:
        raise UserError(f"--mask-values/--ignore-values need masks: {folder} does not exist; "
                        "pass --masks-dir or run augment.py --source with a masks/ folder")
    return None


def check_masks_match(spec, items, subset):
    """UserError when no image of the subset has a mask (wrong folder or names)."""
    if spec is not None and not any(find_mask(spec.folder, i, p) for i, p, _ in items):
        raise UserError(f"no {subset} image has a mask in {spec.folder} (looked for "
                        f"<image id>.png, e.g. {items[0][0]}.png): pass the right masks folder")


def find_mask(masks_dir, item_id, path):
    """<stem>.png for the item id, the file's stem or the original image id (without _copy)."""
    for stem in (item_id, Path(path).stem, item_id.rsplit("_", 1)[0]):
        candidate = Path(masks_dir) / f"{stem}.png"
        if candidate.is_file():
            return candidate
    return None


def read_mask(path, size, exact=False):
    """Label image [size, size] int64, nearest-neighbour resized (squashed like the images);
    exact: a mask of another size is a UserError (data-folder masks are written at data size)."""
    try:
        with Image.open(path) as im:
            labels = np.array(im)
    except (OSError, ValueError) as err:
        raise UserError(f"mask {path} is unreadable ({err}): replace or remove it") from err
    if labels.ndim == 3:
        if not (labels[..., :3] == labels[..., :1]).all():
            raise UserError(f"mask {path} is a colour image: save one label value per pixel "
                            "(grey or palette PNG)")
        labels = labels[..., 0]
    if exact and labels.shape != (size, size):
        raise UserError(f"mask {path} is {labels.shape[1]}x{labels.shape[0]} px but the images "
                        f"are {size}x{size}: rerun augment.py --source to rewrite the masks")
    if labels.shape == (size, size):
        return labels.astype(np.int64)
    t = torch.from_numpy(labels.astype(np.int64))[None, None].double()
    return F.interpolate(t, size=(size, size), mode="nearest")[0, 0].long().numpy()


def batch_masks(batch_items, spec: MaskSpec | None, size):
    """-> (fg [B,H,W], valid [B,H,W], has_mask [B] bool); images without a mask: all False."""
    fg = np.zeros((len(batch_items), size, size), bool)
    valid, has = fg.copy(), np.zeros(len(batch_items), bool)
    for i, (item_id, path, _) in enumerate(batch_items):
        found = find_mask(spec.folder, item_id, path) if spec else None
        if found is not None:
            labels = read_mask(found, size, exact=spec.exact_size is not None)
            fg[i], valid[i] = formulas.mask_arrays(labels, spec.mask_values, spec.ignore_values)
            has[i] = True
    return fg, valid, has
