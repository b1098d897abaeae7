"""inference.py's files: your own images listed, checked and loaded; figures, raw maps (.npz) and
pseudo-masks (.png) written atomically, an unwritable path as a one-line error.

    python -c "import inference_io as iio; print(iio.expand_images(['photos/']))"
    python -c "import inference_io as iio; print(iio.load_items(['photos/my.jpg'], 224)[0].shape)"
    python -c "import numpy as np; d = np.load('maps.npz'); print(d['maps'].shape, d['settings'])"
"""

import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from flowercam import dataset, render
from flowercam.core import UserError, atomic_write

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def expand_images(paths):
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
            dataset.load_image(path, 32)
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


def load_items(paths, size):
    """-> (images [B,3,size,size] normalised, [PIL RGB originals])."""
    tensors, originals = zip(*(dataset.load_image(path, size) for path in paths), strict=True)
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


def save_extras(args, paths, sizes, arrays, info):
    """--save-maps npz (raw, raw_native, maps, logits, targets, settings JSON) and --masks-dir."""
    if args.save_maps:
        meta = json.dumps(info, default=str)
        write(args.save_maps, lambda f: np.savez_compressed(
            f, paths=np.array(paths), settings=np.array(meta), **arrays))
        print(f"wrote {args.save_maps}")
    if args.masks_dir:
        for path, size, heat in zip(paths, sizes, arrays["maps"], strict=True):
            mask = render.resize_map(heat, size) >= args.mask_threshold  # [H, W] at image size
            image = Image.fromarray(mask.astype(np.uint8) * 255, mode="L")
            write(Path(args.masks_dir) / f"{Path(path).stem}.png",
                  lambda f, im=image: im.save(f, format="PNG"))
        print(f"wrote {len(paths)} masks to {args.masks_dir}")
