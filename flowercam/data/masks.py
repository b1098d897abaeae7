"""Segmentation masks beside the images: SOURCE/masks/<image id>.png (e.g. Flower-17's, in
../shared/flowers17/masks) copied into DATA_DIR/masks/ at the data's size and listed in index.json.

    python augment.py --source ../shared/flowers17     # copies its masks/ when it has one
    python -c "from flowercam.data import masks; print(masks.source_masks('../shared/flowers17', \
['image_0001'])"

Masks are label images (one value per pixel: a grey or palette PNG). They are resized like copy 0 of
the images (squashed to size x size) with nearest neighbour, so the labels stay labels; the values
are kept as they are (their meaning is the metrics' business: evaluate.py --cam-metrics).
"""

import re
from pathlib import Path

import numpy as np
from PIL import Image

from flowercam.core import UserError, atomic_write

FOLDER = "masks"  # in the source and in the data folder


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
