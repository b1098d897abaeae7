"""Tiny synthetic mask folders for the --cam-metrics tests."""

import json

import numpy as np
from PIL import Image

from flowercam.data import masks


def write_masks(folder, ids, size=48):
    """Foreground square (255), a 128 band to ignore; one id gets a mask named like the copy."""
    folder.mkdir(parents=True, exist_ok=True)
    labels = np.zeros((size, size), np.uint8)
    labels[10:30, 12:36] = 255
    labels[:3] = 128
    for image_id in ids:
        Image.fromarray(labels).save(folder / f"{image_id}.png")
    if (folder.parent / "index.json").is_file():
        record_values(folder.parent)
    return folder


def record_values(data_dir, values=masks.FLOWERS17):
    """Record in DATA_DIR/index.json what its masks/ values mean, as augment.py does."""
    index_path = data_dir / "index.json"
    index = json.loads(index_path.read_text())
    index["masks"] = {"dir": masks.FOLDER, "count": len(list((data_dir / masks.FOLDER).iterdir())),
                      "source": "tests", "values": values.as_record()}
    index_path.write_text(json.dumps(index))


def flowers17_masks(folder, ids, size=32):
    """Flower-17 style labels: flower (1) a 16x16 square, background 3, bands of 0 and 5; in a
    data folder (index.json beside folder), Flower-17's values recorded as augment.py does."""
    folder.mkdir(parents=True, exist_ok=True)
    labels = np.full((size, size), 3, np.uint8)
    labels[8:24, 10:26] = 1
    labels[:2], labels[-2:] = 5, 0
    for image_id in ids:
        Image.fromarray(labels).save(folder / f"{image_id}.png")
    if (folder.parent / "index.json").is_file():
        record_values(folder.parent)
