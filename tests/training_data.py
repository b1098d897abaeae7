"""Tiny synthetic data folders in the contract's layout, for the training/cache/evaluate tests."""

import json
from pathlib import Path

import numpy as np
from PIL import Image

from flowercam import core

CLASSES = ("Red", "Green", "Blue")


def _image(rng, label, size):
    """A noisy image whose dominant colour is its class: learnable from random VGG features."""
    pixels = rng.integers(0, 90, size=(size, size, 3))
    pixels[..., label % 3] += 160
    half = size // 2
    pixels[:half, :half] = 255 - pixels[:half, :half]  # some structure for the convolutions
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def make_dataset(root, per_class=4, copies=2, size=64, seed=0, classes=CLASSES) -> str:
    """Write index.json, labels.txt, augment.json, splits.json, auged/ under root; -> root."""
    root = Path(root)
    (root / "auged").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images, parts = [], {"train": [], "valid": [], "test": []}
    n_train = max(1, per_class // 2)
    n_valid = max(1, per_class // 4)
    for label in range(len(classes)):
        for j in range(per_class):
            image_id = f"image_{label * per_class + j + 1:04d}"
            images.append({"id": image_id, "label": label, "source": f"jpg/{image_id}.jpg"})
            subset = "train" if j < n_train else "valid" if j < n_train + n_valid else "test"
            parts[subset].append(image_id)
            for k in range(copies):
                _image(rng, label, size).save(root / "auged" / f"{image_id}_{k}.jpg", quality=95)
    index = {"dataset": "synthetic", "source": "tests", "classes": list(classes), "images": images}
    (root / "index.json").write_text(json.dumps(index))
    (root / "labels.txt").write_text("\n".join(classes) + "\n")
    augment = {"copies": copies, "size": size, "seed": seed, "complete": True}
    (root / "augment.json").write_text(json.dumps(augment))
    splits = {"source": "generated", "seed": 0, "splits": {s: parts for s in ("1", "2", "3")}}
    (root / "splits.json").write_text(json.dumps(splits))
    return str(root)


def random_weights(path, seed=0) -> str:
    """A seeded random VGG16 features state dict saved at path (its backbone_id is a file hash)."""
    import torch

    from flowercam import models

    torch.manual_seed(seed)
    torch.save(models.Backbone().features.state_dict(), path)
    return str(path)


def run_cli(module, argv):
    """module.main through core.run_main -> (exit code or None, return value)."""

    try:
        return None, core.run_main(module.main, module.get_args_parser(), argv)
    except SystemExit as stop:
        return stop.code, None
