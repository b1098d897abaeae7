"""Segmentation masks beside the images: SOURCE/masks/<image id>.png (e.g. Flower-17's, in
../shared/flowers17/masks) copied into DATA_DIR/masks/ at the data's size and listed in index.json.

    python augment.py --source ../shared/flowers17     # copies its masks/ when it has one
    python -c "from flowercam.data import masks; print(masks.source_masks('../shared/flowers17', \
['image_0001'])"

Masks are label images (one value per pixel: a grey or palette PNG). They are resized like copy 0 of
the images (squashed to size x size) with nearest neighbour, so the labels stay labels; the values
are kept as they are (their meaning is the metrics' business: evaluate.py --cam-metrics).
"""

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


def read_labels(path) -> Image.Image:
    """A mask as an 8-bit label image (mode L or P); UserError naming a bad file."""
    try:
        with Image.open(path) as im:
            im.load()
            mask = im.copy()
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise UserError(f"mask {path} is unreadable ({err}): replace or remove it") from None
    if mask.mode in ("L", "P"):
        return mask
    values = np.asarray(mask.convert("RGB"))
    if not (values == values[..., :1]).all():
        raise UserError(f"mask {path} is a colour image: save one label value per pixel "
                        "(grey or palette PNG)")
    return Image.fromarray(values[..., 0])


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
        mask = read_labels(path).resize((size, size), Image.NEAREST)
        atomic_write(target, lambda f, m=mask: m.save(f, format="PNG"))
    return {"dir": FOLDER, "count": len(found), "source": str(folder)}


def _has_size(path, size) -> bool:
    try:
        with Image.open(path) as im:
            return im.size == (size, size)
    except (OSError, ValueError):
        return False
