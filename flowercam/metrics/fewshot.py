"""The few-shot baseline rows few-shot-N of --cam-metrics (Choe et al. 2020: a few fully
annotated images beat weakly supervised localization): a per-pixel foreground classifier (logistic
regression = a 1x1 conv) on the frozen backbone's activations, trained on the masks of N
training-split images per class, never on a validation or test mask.

    python evaluate.py -d model/RUN --cam-metrics --baselines center full few-shot-1 few-shot-5
    python -c "from flowercam.metrics import fewshot; print(fewshot.DEFAULT)"

Features: the backbone's pixel_stages (VGG16: conv3_3, conv4_3 and conv5_3, ReLU outputs,
256 + 512 + 512 channels; timm: its last three stages) upsampled
(bilinear) to side x side and standardised; the classifier's P(flower) is upsampled to the input
size and is the row's map (not min-max normalised: a probability). Training pixels: a seeded
sample of each mask image's non-ignored pixels, classes weighted equally, L-BFGS.
"""

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from flowercam.core import UserError
from flowercam.data import dataset, masks

PREFIX = "few-shot-"  # few-shot-N: N training masks per class


@dataclasses.dataclass(frozen=True)
class FewShotSettings:
    layers: tuple[str, ...] | None = None  # None: the backbone's pixel_stages
    side: int = 64  # activations upsampled to side x side
    pixels_per_image: int = 1024  # sampled training pixels of each mask image
    iterations: int = 100  # L-BFGS
    weight_decay: float = 1e-3
    seed: int = 0


DEFAULT = FewShotSettings()


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


def with_layers(backbone, s: FewShotSettings) -> FewShotSettings:
    """s with its layers named: the backbone's pixel_stages when s gives none."""
    return s if s.layers else dataclasses.replace(s, layers=tuple(backbone.pixel_stages))


def pixel_features(backbone, images, s: FewShotSettings = DEFAULT):
    """images [B,3,H,W] ImageNet-normalised -> [B,C,side,side] activations of s.layers."""
    s = with_layers(backbone, s)
    with torch.no_grad():
        _, acts = backbone.forward_with(images, s.layers, graph=None)
        return torch.cat([F.interpolate(acts[name], size=(s.side, s.side), mode="bilinear",
                                        align_corners=False) for name in s.layers], 1)


def _training_pixels(backbone, items, spec, size, s, device):
    """(x [P,C], y [P] float) sampled from the non-ignored pixels of the items' masks."""
    rng = np.random.default_rng(s.seed)
    xs, ys = [], []
    for item_id, path, _ in items:
        image = dataset.load_image(path, size)[0][None].to(device)
        feats = pixel_features(backbone, image, s)[0].flatten(1).T.cpu()  # [side*side, C]
        labels = masks.resize_labels(masks.read_labels(masks.find_mask(spec.folder, item_id,
                                                                       path)), s.side)
        fg, valid = masks.mask_arrays(labels, spec.mask_values, spec.ignore_values)
        where = np.flatnonzero(valid.ravel())
        where = rng.choice(where, min(s.pixels_per_image, len(where)), replace=False)
        xs.append(feats[torch.from_numpy(where)])
        ys.append(torch.from_numpy(fg.ravel()[where]).float())
    return torch.cat(xs), torch.cat(ys)


@dataclasses.dataclass
class FewShotMap:
    """A trained classifier: standardisation and the 1x1 conv's weights."""

    mean: torch.Tensor  # [C]
    std: torch.Tensor  # [C]
    weight: torch.Tensor  # [C]
    bias: torch.Tensor  # []
    settings: FewShotSettings
    images: list  # the training item ids

    def maps(self, backbone, images):
        """images [B,3,H,W] -> P(flower) [B,H,W] at the input size (cpu float)."""
        feats = pixel_features(backbone, images, self.settings).cpu()  # [B,C,s,s]
        z = (feats - self.mean[:, None, None]) / self.std[:, None, None]
        logits = torch.einsum("bchw,c->bhw", z, self.weight) + self.bias
        up = F.interpolate(logits[:, None], size=images.shape[-2:], mode="bilinear",
                           align_corners=False)[:, 0]
        return up.sigmoid()


def train(backbone, items, spec, size, s: FewShotSettings = DEFAULT, device="cpu"):
    """Logistic regression on the items' mask pixels (both classes weighted equally)."""
    s = with_layers(backbone, s)
    x, y = _training_pixels(backbone, items, spec, size, s, device)
    if y.sum() == 0 or y.sum() == len(y):
        raise UserError("the few-shot training masks hold one class only: add masks")
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / std
    weights = torch.where(y > 0, 0.5 / y.mean(), 0.5 / (1 - y.mean()))
    torch.manual_seed(s.seed)
    w, b = torch.zeros(z.shape[1], requires_grad=True), torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=s.iterations, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(z @ w + b, y, weight=weights)
        loss = loss + s.weight_decay * (w * w).sum()
        loss.backward()
        return loss
    opt.step(closure)
    return FewShotMap(mean, std, w.detach(), b.detach(), s, [i for i, _, _ in items])


def train_rows(names, backbone, data_dir, split, spec, size, device="cpu"):
    """{few-shot-N: FewShotMap} of the names, trained on training-split masks only, and
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
