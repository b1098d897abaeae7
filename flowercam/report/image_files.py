"""inference.py's files: your own images listed, checked and loaded; figures, raw maps (.npz) and
pseudo-masks (.png) written atomically, an unwritable path as a one-line error; masks to outline.

    python -c "from flowercam.report import image_files as f; print(f.expand_images(['photos/']))"
    python -c "from flowercam.report import image_files as f; \
print(f.load_items(['a.jpg'], 224)[0])"
    python -c "import numpy as np; d = np.load('maps.npz'); print(d['maps'].shape, d['settings'])"
"""

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from flowercam.core import UserError, atomic_write
from flowercam.data import dataset, masks
from flowercam.refine import methods as refiners
from flowercam.report import render

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def expand_images(paths, max_pixels=dataset.MAX_PIXELS):
    """Files as given, folders -> their image files (sorted); every file is read first and all
    missing or unreadable ones are named in one line."""
    out, bad = [], []
    for path in paths:
        found = [path] if not os.path.isdir(path) else [
            str(p) for p in sorted(Path(path).iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS]
        if not found:
            raise UserError(f"folder {path} has no image files ({', '.join(IMAGE_EXTENSIONS)})")
        out += found
    for path in out:
        try:
            dataset.load_image(path, 32, max_pixels)
        except UserError:
            bad.append(path if os.path.exists(path) else f"{path} (missing)")
    if bad:
        raise UserError(f"cannot read {len(bad)} image(s): {', '.join(bad)}: fix or remove them")
    stems = [Path(p).stem for p in out]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise UserError(f"several images named {', '.join(twice)}: outputs are named by stem, "
                        "rename them or run them separately")
    return out


def load_items(paths, size, max_pixels=dataset.MAX_PIXELS):
    """-> (images [B,3,size,size] normalised, [PIL RGB originals])."""
    tensors, originals = zip(*(dataset.load_image(path, size, max_pixels) for path in paths),
                             strict=True)
    return torch.stack(tensors), list(originals)


def write(path, write_fn):
    """atomic_write, with an unwritable destination as a one-line error."""
    try:
        atomic_write(path, write_fn)
    except OSError as err:
        raise UserError(f"cannot write {path} ({err.strerror or err}): check the path") from None


def save_png(image, path):
    write(path, lambda f: image.save(f, format="PNG"))
    print(f"wrote {path}")


def arrays_of(results):
    """MapResults of consecutive batches -> one dict of numpy arrays."""
    keys = ("raw", "raw_native", "maps", "logits", "targets")
    return {k: torch.cat([getattr(r, k) for r in results]).numpy() for k in keys}


@dataclasses.dataclass(frozen=True)
class MapFiles:
    """Optional outputs beside the figures: raw maps (.npz) and binary pseudo-masks (.png)."""

    save_maps: str | None = None  # npz path
    masks_dir: str | None = None  # <image stem>.png written here
    mask_threshold: float = 0.5  # on the normalised map
    refine: str = "none"  # the masks' map refined from the image first (refine.methods)


def refined(name, path, heat):
    """heat [h,w] in [0,1] refined from the image at path, resized to the map's size."""
    if name == "none":
        return heat
    h, w = heat.shape
    image = np.asarray(dataset.open_rgb(path).resize((w, h), Image.BILINEAR))
    return refiners.REFINERS[name](image, heat)


def save_extras(files, paths, sizes, arrays, info):
    """files.save_maps npz (raw, raw_native, maps, logits, targets, settings JSON) and
    files.masks_dir PNGs (map >= threshold, at each image's own size `sizes` (W, H))."""
    if files.save_maps:
        meta = json.dumps(info, default=str)
        write(files.save_maps, lambda f: np.savez_compressed(
            f, paths=np.array(paths), settings=np.array(meta), **arrays))
        print(f"wrote {files.save_maps}")
    if files.masks_dir:
        for path, size, heat in zip(paths, sizes, arrays["maps"], strict=True):
            heat = refined(files.refine, path, heat)
            mask = render.resize_map(heat, size) >= files.mask_threshold  # [H, W] at image size
            image = Image.fromarray(mask.astype(np.uint8) * 255, mode="L")
            write(Path(files.masks_dir) / f"{Path(path).stem}.png",
                  lambda f, im=image: im.save(f, format="PNG"))
        how = "" if files.refine == "none" else f" (refined: {files.refine})"
        print(f"wrote {len(paths)} masks{how} to {files.masks_dir}")


def load_masks(folder, paths, value=None):
    """Foreground of each image's mask, read by the one mask reader (flowercam/data/masks.py)
    -> [bool [h, w] or None when the image has no mask]. value: the foreground label; None:
    what the folder's record says (masks.resolve_masks), as evaluate.py reads it."""
    if not os.path.isdir(folder):
        raise UserError(f"mask folder {folder} not found: name a folder of <image stem>.png masks")
    spec = masks.resolve_masks(None, folder, None if value is None else (value,))
    found = [masks.find_mask(folder, path) for path in paths]
    out = [None if f is None else masks.mask_arrays(masks.read_labels(f), spec.mask_values)[0]
           for f in found]
    if all(m is None for m in out):
        print(f"no masks in {folder} for these images: no outlines drawn")
    return out
