"""The few-shot baseline rows few-shot-N of --cam-metrics (Choe et al. 2020: a few fully
annotated images beat weakly supervised localization): a per-pixel foreground classifier (logistic
regression = a 1x1 conv) on the frozen backbone's activations, trained on the masks of N
training-split images per class, never on a validation or test mask.

    python evaluate.py -d model/RUN --cam-metrics --baselines center full few-shot-1 few-shot-5
    python -c "from flowercam.metrics import fewshot; print(fewshot.DEFAULT)"

The classifier is flowercam.segment.pixels' (the backbone's pixel_stages, VGG16's conv3_3, conv4_3
and conv5_3: 256 + 512 + 512 channels, upsampled and standardised; its P(flower) at the input
size is the row's map).
Training pixels: a seeded sample of each mask image's non-ignored pixels.
"""

import numpy as np
import torch

from flowercam.core import UserError
from flowercam.data import dataset, masks
from flowercam.segment import pixels

PREFIX = "few-shot-"  # few-shot-N: N training masks per class
DEFAULT = pixels.PixelSettings()


def shots(name):
    """few-shot-5 -> 5; None for another row name."""
    tail = name[len(PREFIX):] if name.startswith(PREFIX) else ""
    return int(tail) if tail.isdigit() and int(tail) > 0 else None


def masked_train_items(data_dir, split, spec):
    """{label: [(item id, path, label)]} of the training images (copy 0: the unaugmented one)
    that have a mask, in split order."""
    out = {}
    for item in dataset.split_items(data_dir, "train", split):
        if item[0].endswith("_0") and masks.find_mask(spec.folder, item[0], item[1]):
            out.setdefault(item[2], []).append(item)
    return out


def check_train_only(items, data_dir, split):
    """UserError when an item is not a training image of the split (the guard that keeps
    validation and test masks out of the classifier)."""
    train = set(dataset.load_split(data_dir, split)["train"])
    outside = [i for i, _, _ in items if i.rsplit("_", 1)[0] not in train]
    if outside:
        raise UserError(f"the few-shot classifier may learn only from training masks, got "
                        f"{outside[:3]}: pick training images")


def pick(by_class, n, seed):
    """n seeded items per class (all of a class that has fewer)."""
    return [it for label in sorted(by_class)
            for it in dataset.sample_items(by_class[label], n, seed + label, in_order=True)]


def _training_pixels(backbone, items, spec, size, s: pixels.PixelSettings, device):
    """(x [P,C], y [P] float) sampled from the non-ignored pixels of the items' masks."""
    rng = np.random.default_rng(s.seed)
    xs, ys = [], []
    for item_id, path, _ in items:
        image = dataset.load_image(path, size)[0][None].to(device)
        feats = pixels.pixel_features(backbone, image, s)[0].flatten(1).T.cpu()  # [side*side, C]
        labels = masks.resize_labels(masks.read_labels(masks.find_mask(spec.folder, item_id,
                                                                       path)), s.side)
        fg, valid = masks.mask_arrays(labels, spec.mask_values, spec.ignore_values)
        where = np.flatnonzero(valid.ravel())
        where = rng.choice(where, min(s.pixels_per_image, len(where)), replace=False)
        xs.append(feats[torch.from_numpy(where)])
        ys.append(torch.from_numpy(fg.ravel()[where]).float())
    return torch.cat(xs), torch.cat(ys)


def train(backbone, items, spec, size, s: pixels.PixelSettings = DEFAULT, device="cpu"):
    """The pixel classifier on the items' mask pixels (flowercam.segment.pixels.fit), on s's
    layers (None: the backbone's pixel_stages)."""
    s = pixels.resolve(s, backbone)
    x, y = _training_pixels(backbone, items, spec, size, s, device)
    return pixels.fit(x, y, s, [i for i, _, _ in items])


def train_rows(names, backbone, data_dir, split, spec, size, device="cpu"):
    """{few-shot-N: pixels.PixelMap} of the names, trained on training-split masks only, and
    {"masked_train_images_per_class": ..., "shots": {name: images used}}."""
    wanted = [n for n in names if shots(n)]
    if not wanted:
        return {}, {}
    if spec is None:
        raise UserError("the few-shot baselines need masks of training images", topic="masks")
    by_class = masked_train_items(data_dir, split, spec)
    info = {"masked_train_images_per_class": {int(k): len(v) for k, v in by_class.items()},
            "shots": {}}
    models = {}
    for name in wanted:
        items = pick(by_class, shots(name), DEFAULT.seed)
        check_train_only(items, data_dir, split)
        models[name] = train(backbone, items, spec, size, DEFAULT, device)
        info["shots"][name] = [i for i, _, _ in items]
    return models, info
