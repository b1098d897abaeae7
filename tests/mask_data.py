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


def flowers17_masks(folder, ids, size=32):
    """Flower-17 style labels: flower (1) a 16x16 square, background 3, bands of 0 and 5."""
    folder.mkdir(parents=True, exist_ok=True)
    labels = np.full((size, size), 3, np.uint8)
    labels[8:24, 10:26] = 1
    labels[:2], labels[-2:] = 5, 0
    for image_id in ids:
        Image.fromarray(labels).save(folder / f"{image_id}.png")
