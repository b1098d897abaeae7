"""Segmentation masks beside the images: SOURCE/masks/<image id>.png (e.g. Flower-17's, in
../shared/flowers17/masks) copied into DATA_DIR/masks/ at the data's size and listed in index.json.

    python augment.py --source ../shared/flowers17     # copies its masks/ when it has one
    python -c "from flowercam.data import masks; print(masks.source_masks('../shared/flowers17', \
['image_0001'])"

Masks are label images (one value per pixel: a grey or palette PNG). They are resized like copy 0 of
the images (squashed to size x size) with nearest neighbour, so the labels stay labels; the values
are kept as they are (their meaning is the metrics' business: evaluate.py --cam-metrics).
"""

import dataclasses
import re
from pathlib import Path

import numpy as np
from PIL import Image

from flowercam.core import UserError, atomic_write
from flowercam.data import dataset

FOLDER = "masks"  # in the source and in the data folder

# Flower-17 masks (../shared/flowers17/masks/README.txt): 1 flower; 0 unlabelled, 5 stray;
# 2-4 the rest
FLOWERS17_MASK_VALUES = (1,)
FLOWERS17_IGNORE_VALUES = (0, 5)
FLOWERS17_BACKGROUND_VALUES = (2, 3, 4)  # leaves, background, sky


def source_masks(source_root, ids) -> dict:
    """{image id: mask path} of SOURCE/masks/<id>.png for the ids that have one."""
    folder = Path(source_root) / FOLDER
    if not folder.is_dir():
        return {}
    return {i: folder / f"{i}.png" for i in ids if (folder / f"{i}.png").is_file()}


# the lossless formats a label file may be in, by its name (a JPEG's values are not labels)
LOSSLESS = {".png": "PNG", ".bmp": "BMP", ".gif": "GIF", ".tif": "TIFF", ".tiff": "TIFF"}


def find_mask(folder, *names) -> Path | None:
    """FOLDER/<stem>.png of the first name (an image id or path) that has one, trying each name's
    stem and then the original image id of an augmented copy (image_0001_3 -> image_0001)."""
    stems = [Path(str(n)).stem for n in names]
    stems += [s.rsplit("_", 1)[0] for s in stems if re.fullmatch(r".+_\d+", s)]
    for stem in dict.fromkeys(stems):
        candidate = Path(folder) / f"{stem}.png"
        if candidate.is_file():
            return candidate
    return None


def open_labels(path) -> Image.Image:
    """A mask as a label image (mode L, P or 16-bit I); a grey image saved as RGB(A) is taken as
    grey. UserError naming the file when it is unreadable, lossy (a JPEG whatever its name) or
    colour: every reader of masks goes through here, so they all agree."""
    try:
        with Image.open(path) as im:
            im.load()
            mask, kind = im.copy(), im.format
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise UserError(f"mask {path} is unreadable ({err}): replace or remove it") from None
    expected = LOSSLESS.get(Path(path).suffix.lower())
    if kind != expected:
        raise UserError(f"mask {path} holds {kind or 'unknown'} data, not "
                        f"{expected or 'a lossless image'}: save labels losslessly (PNG)")
    if mask.mode in ("L", "P", "I", "I;16"):
        return mask
    values = np.asarray(mask.convert("RGB"))
    if not (values == values[..., :1]).all():
        raise UserError(f"mask {path} is a colour image: save one label value per pixel "
                        "(grey or palette PNG)")
    return Image.fromarray(values[..., 0])


def read_labels(path, size=None) -> np.ndarray:
    """Label values [h, w] int64 of a mask (open_labels' rules); size: resize_labels to it."""
    labels = np.array(open_labels(path)).astype(np.int64)
    return labels if size is None else resize_labels(labels, size)


def resize_labels(labels, size) -> np.ndarray:
    """[h, w] int64 -> [size, size] by nearest neighbour (PIL's, as augment.py resizes masks)."""
    if labels.shape == (size, size):
        return labels
    image = Image.fromarray(labels.astype(np.int32), mode="I")
    return np.array(image.resize((size, size), Image.NEAREST)).astype(np.int64)


def check_values(labels, allowed, path):
    """UserError when a label is outside `allowed` (the declared foreground, ignore and background
    values): e.g. a mask resaved lossily, or one of another dataset."""
    if allowed is None:
        return
    stray = np.setdiff1d(np.unique(labels), np.asarray(sorted(allowed)))
    if len(stray):
        shown = ", ".join(map(str, stray[:5])) + (" ..." if len(stray) > 5 else "")
        raise UserError(f"mask {path} has values {shown} outside the declared "
                        f"{sorted(allowed)}: fix the mask or declare its values")


def copy_masks(source_root, data_dir, ids, size) -> dict | None:
    """Write DATA_DIR/masks/<id>.png (size x size, nearest) for every id with a source mask;
    -> the index.json record {"dir", "count", "source"}, or None when the source has no masks/.
    A rerun rewrites nothing that is already there at the right size."""
    folder = Path(source_root) / FOLDER
    if not folder.is_dir():
        return None
    found = source_masks(source_root, ids)
    if not found:
        raise UserError(f"{folder} has no <image id>.png matching any image (e.g. "
                        f"{ids[0] if ids else 'image_0001'}.png): fix the names or remove it")
    out = Path(data_dir) / FOLDER
    for image_id, path in found.items():
        target = out / f"{image_id}.png"
        if _has_size(target, size):
            continue
        mask = open_labels(path).resize((size, size), Image.NEAREST)
        atomic_write(target, lambda f, m=mask: m.save(f, format="PNG"))
    return {"dir": FOLDER, "count": len(found), "source": str(folder)}


def _has_size(path, size) -> bool:
    try:
        with Image.open(path) as im:
            return im.size == (size, size)
    except (OSError, ValueError):
        return False


def mask_arrays(labels, mask_values=None, ignore_values=()):
    """Label image [..., H, W] -> (fg, valid) bool; fg = listed values (None: any nonzero)."""
    labels = np.asarray(labels)
    valid = ~np.isin(labels, list(ignore_values))
    fg = labels != 0 if mask_values is None else np.isin(labels, list(mask_values))
    return fg & valid, valid


@dataclasses.dataclass(frozen=True)
class MaskSpec:
    """Where the masks are and what their values mean; exact_size: masks must already be that
    size (the data folder's); background_values None: any value that is not foreground or ignored
    is background, else a mask with another value is refused (a lossy or foreign mask)."""

    folder: str
    mask_values: tuple[int, ...] | None  # foreground values; None: any nonzero
    ignore_values: tuple[int, ...]
    source: str  # "data folder" or "masks folder"
    exact_size: int | None = None
    background_values: tuple[int, ...] | None = None

    def allowed_values(self):
        """Every declared value, or None when any value is allowed."""
        if self.background_values is None or self.mask_values is None:
            return None
        return {*self.mask_values, *self.ignore_values, *self.background_values}

    def recorded(self) -> dict:
        """How the masks were read, as cam_metrics.json records it (--tau-from compares it)."""
        return {"masks_dir": self.folder, "mask_values": self.mask_values,
                "ignore_values": list(self.ignore_values)}


def resolve_masks(data_dir, masks_dir=None, mask_values=None, ignore_values=None, size=None):
    """-> MaskSpec or None: masks_dir (resized nearest), else DATA_DIR/masks (augment.py
    --source wrote them at `size` px; Flower-17 values unless given), else no masks."""
    if masks_dir:
        if not Path(masks_dir).is_dir():
            raise UserError(f"masks folder {masks_dir} is not a folder: name the masks' folder")
        return MaskSpec(str(masks_dir), mask_values, tuple(ignore_values or ()), "masks folder")
    record = dataset.read_index(data_dir).get("masks") or {}
    folder = Path(data_dir) / record.get("dir", "masks")
    if folder.is_dir():
        flowers17 = mask_values is None and ignore_values is None
        return MaskSpec(str(folder),
                        FLOWERS17_MASK_VALUES if mask_values is None else tuple(mask_values),
                        FLOWERS17_IGNORE_VALUES if ignore_values is None else tuple(ignore_values),
                        "data folder", size, FLOWERS17_BACKGROUND_VALUES if flowers17 else None)
    if mask_values is not None or ignore_values is not None:
        raise UserError(f"mask values were given but there are no masks ({folder} does not "
                        "exist)", topic="masks")
    return None


def batch_masks(batch_items, spec: MaskSpec | None, size):
    """-> (fg [B,H,W], valid [B,H,W], has_mask [B] bool); images without a mask: all False."""
    fg = np.zeros((len(batch_items), size, size), bool)
    valid, has = fg.copy(), np.zeros(len(batch_items), bool)
    for i, (item_id, path, _) in enumerate(batch_items):
        found = find_mask(spec.folder, item_id, path) if spec else None
        if found is not None:
            labels = read_labels(found)
            if spec.exact_size is not None and labels.shape != (size, size):
                raise UserError(f"mask {found} is {labels.shape[1]}x{labels.shape[0]} px but the "
                                f"images are {size}x{size}: prepare the data folder again",
                                topic="data")
            check_values(labels, spec.allowed_values(), found)
            labels = resize_labels(labels, size)
            fg[i], valid[i] = mask_arrays(labels, spec.mask_values, spec.ignore_values)
            has[i] = True
    return fg, valid, has
