"""Tiny synthetic mask folders for the --cam-metrics tests."""

import numpy as np
from PIL import Image


def write_masks(folder, ids, size=48):
    """Foreground square (255), a 128 band to ignore; one id gets a mask named like the copy."""
    folder.mkdir(parents=True, exist_ok=True)
    labels = np.zeros((size, size), np.uint8)
    labels[10:30, 12:36] = 255
    labels[:3] = 128
    for image_id in ids:
        Image.fromarray(labels).save(folder / f"{image_id}.png")
    return folder
