"""The segmenter: a per-pixel foreground model trained from image-level labels alone. The second
stage of weakly supervised segmentation (IRN, ReCAM, PSA): the class maps of every training
image (LayerCAM by default, of its labelled class), refined from the image (dense CRF), give
confident pixel labels (flowercam.segment.labels); the pixel classifier of the few-shot rows
(flowercam.segment.pixels) learns from them; each self-training round relabels the images with
the model's own refined maps and fits again. No mask file is ever read.

    python segment.py --checkpoint model/reference/CAM_lr0.0001_epoch6.pth --data-dir data
    python -c "from flowercam.segment import segmenter; print(segmenter.DEFAULT)"

The checkpoint (save / load) holds the classifier's tensors and the settings (backbone name and
weights id, the stages it reads, the CAM checkpoint, the label thresholds, the rounds and their
seconds); it loads with weights_only=True and is validated on read. Any backbone: its features
are the backbone's pixel_stages (flowercam.segment.pixels), and a segmenter meets only the
backbone it was trained on (check_backbone).
"""

import dataclasses
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from flowercam.cam import compute, methods
from flowercam.core import UserError, atomic_write, load_torch
from flowercam.data import dataset
from flowercam.model import vgg
from flowercam.refine import methods as refiners
from flowercam.segment import labels, pixels

FORMAT = "flowercam-segmenter"
VERSION = 1
ROW = "segmenter"  # its row in evaluate.py --cam-metrics (segmenter+crf refined)


@dataclasses.dataclass(frozen=True)
class SegmenterSettings:
    classifier: pixels.PixelSettings = pixels.PixelSettings(pixels_per_image=256)
    thresholds: labels.LabelSettings = labels.DEFAULT
    method: str = "LayerCAM"  # the seeds' class maps (of the image's label)
    refiner: str = "crf"  # flowercam.refine.methods.REFINERS
    rounds: int = 0  # self-training rounds after the fit on the seeds (0: chosen on validation)
    batch_size: int = 8

    def check(self):
        self.thresholds.check()
        refiners.check([self.refiner])
        if self.rounds < 0:
            raise UserError(f"rounds must be >= 0 (0: the fit on the seeds only), got "
                            f"{self.rounds}")
        if self.batch_size < 1 or self.classifier.pixels_per_image < 2:
            raise UserError("batch_size must be >= 1 and pixels_per_image >= 2")


DEFAULT = SegmenterSettings()


def default_refiner(backbone_name) -> str:
    """The seeds' refiner when none is given: IRN's crf on vgg16, whose maps it was set for (and
    whose kept segmenter it made); crf-mean on any other backbone, where crf's undecided point at
    0.5 need not fit the maps (EfficientNet-Lite0's segmenter: 62.1% from crf's seeds, 89.4% from
    crf-mean's; docs/refinement.md)."""
    return "crf" if backbone_name == "vgg16" else "crf-mean"


def backbone_name(backbone) -> str:
    """The registry name of a backbone (its key; vgg16 for model/vgg.py's, whose ids are
    vgg16-...)."""
    return getattr(backbone, "key", None) or backbone.backbone_id.split("-", 1)[0]


def _pixels01(images):
    """ImageNet-normalised [B,3,H,W] -> [B,3,H,W] in [0,1] (what the refiners read)."""
    mean = torch.tensor(vgg.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(vgg.IMAGENET_STD).view(1, 3, 1, 1)
    return (images.cpu() * std + mean).clamp(0, 1)


def seed_maps(model, method, images, targets):
    """The class maps [B,H,W] in [0,1] (min-max) of targets [B] on images [B,3,H,W], as
    evaluate.py's rows make them (the method's default layers)."""
    opts = methods.layer_options(method, None)
    result = compute.maps_reusing(model, images, method, {}, targets, normalize_by="minmax",
                                  **opts)
    return result.maps.detach().float().cpu()


def seed_maps_of(model, method):
    """The default seeds: (images, targets, items) -> seed_maps of the method."""
    return lambda images, targets, items: seed_maps(model, method, images, targets)


def _batches(items, n):
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _at_side(fmap, side) -> np.ndarray:
    """A float map [H,W] -> [side,side] by nearest neighbour: the pixels labels.at_side keeps,
    so labels.confident of the small maps = labels.at_side of the full-size labels."""
    fmap = np.asarray(fmap, np.float32)
    if fmap.shape == (side, side):
        return fmap
    return np.array(Image.fromarray(fmap, mode="F").resize((side, side), Image.NEAREST))


def _round_pixels(model, items, size, s: SegmenterSettings, current, device, desc, seed_fn,
                  seeds=None):
    """(x [P,C] float16, y [P]) of one round: each image's confident labels (from the seeds'
    maps when current is None, else from current's maps), sampled (s.thresholds.sampling).
    seeds: {item id: [2,side,side] float32 (map, refined map)} of the seeds' round; the
    images found there skip the class maps and the refiner, the others are added to it."""
    rng = np.random.default_rng(s.classifier.seed)
    side = s.classifier.side
    xs, ys = [], []
    bar = tqdm(total=len(items), desc=desc, unit="img")
    for batch in _batches(items, s.batch_size):
        images = torch.stack([dataset.load_image(p, size)[0] for _, p, _ in batch]).to(device)
        feats = pixels.pixel_features(model.backbone, images, s.classifier).cpu()  # [B,C,s,s]
        if current is None and seeds is not None and all(i in seeds for i, _, _ in batch):
            small = [seeds[i].numpy() for i, _, _ in batch]  # [2,side,side] each
        else:
            if current is None:
                targets = torch.tensor([label for _, _, label in batch], device=device)
                maps = (seed_fn or seed_maps_of(model, s.method))(images, targets, batch)
            else:
                maps = F.interpolate(current.logits(feats)[:, None], size=images.shape[-2:],
                                     mode="bilinear", align_corners=False)[:, 0].sigmoid()
            refined = refiners.refine_batch(s.refiner, _pixels01(images), maps)
            small = [np.stack([_at_side(m, side), _at_side(r, side)])
                     for m, r in zip(maps.numpy(), refined.numpy(), strict=True)]
            if current is None and seeds is not None:
                seeds.update({i: torch.from_numpy(m) for (i, _, _), m in
                              zip(batch, small, strict=True)})
        for f, (m, r) in zip(feats, small, strict=True):
            confident = labels.confident(m, r, s.thresholds)
            where, y = labels.sample(confident, s.classifier.pixels_per_image, rng,
                                     s.thresholds.sampling)
            xs.append(f.flatten(1).T[torch.from_numpy(where)].half())  # [n,C]
            ys.append(torch.from_numpy(y))
        bar.update(len(batch))
    bar.close()
    return torch.cat(xs), torch.cat(ys)


def train(model, items, size, s: SegmenterSettings = DEFAULT, device="cpu", seed_fn=None,
          seeds=None):
    """(pixels.PixelMap, {"round_seconds": [...], "flower_fraction_of_labels": [...]}) trained
    on the items (id, path, label) with their labels only: round 0 on the seeds, then s.rounds
    self-training rounds. seed_fn: (images [B,3,H,W], targets [B], items) -> the seeds' maps
    [B,H,W] in [0,1] instead of s.method's (tests: seeds of a known noise). seeds: a dict of
    the seeds' maps at the classifier's side to reuse and fill (load_seeds / save_seeds)."""
    s.check()
    s = dataclasses.replace(s, classifier=pixels.resolve(s.classifier, model.backbone))
    if not items:
        raise UserError("the segmenter has no training images: check the data folder's split")
    current, seconds, fractions = None, [], []
    for r in range(s.rounds + 1):
        start = time.perf_counter()
        x, y = _round_pixels(model, items, size, s, current, device,
                             "segmenter seeds" if r == 0 else f"self-training {r}", seed_fn,
                             seeds)
        current = pixels.fit(x, y, s.classifier, [i for i, _, _ in items],
                             balanced=s.thresholds.sampling == "half")
        seconds.append(time.perf_counter() - start)
        fractions.append(float(y.mean()) if len(y) else float("nan"))
    return current, {"round_seconds": seconds, "flower_fraction_of_labels": fractions}


# ---------------------------------------------------------------- the seeds' cache

SEEDS_FORMAT = "flowercam-segmenter-seeds"


def seeds_key(s: SegmenterSettings, backbone, cam_checkpoint, data_dir, input_size) -> dict:
    """What the seeds' maps depend on: a cache made under another key is not reused."""
    return {"method": s.method, "refiner": s.refiner, "side": s.classifier.side,
            "backbone": backbone.backbone_id, "cam_checkpoint": os.fspath(cam_checkpoint),
            "data_dir": os.fspath(data_dir), "input_size": int(input_size)}


def load_seeds(path, key) -> dict:
    """{item id: [2,side,side] float32} of a seeds cache written under the same key; {} when
    the file does not exist; UserError when it is unreadable or made under another key."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        return {}
    blob = load_torch(path, "seeds cache", "delete it or pass another file")
    if not isinstance(blob, dict) or blob.get("format") != SEEDS_FORMAT:
        raise UserError(f"{path} is not a segmenter seeds cache: pass another file")
    if blob.get("key") != key:
        other = {k: v for k, v in (blob.get("key") or {}).items() if key.get(k) != v}
        raise UserError(f"seeds cache {path} was made with {other}, this run differs: pass "
                        "another file or delete it")
    side = key["side"]
    maps = blob.get("maps")
    if not isinstance(maps, dict) or not all(
            isinstance(t, torch.Tensor) and t.shape == (2, side, side) for t in maps.values()):
        raise UserError(f"seeds cache {path} holds maps of other shapes: delete it")
    return {k: t.float() for k, t in maps.items()}


def save_seeds(path, key, seeds):
    """Atomic torch.save of the seeds' maps and their key."""
    blob = {"format": SEEDS_FORMAT, "key": key, "maps": dict(seeds)}
    atomic_write(path, lambda f: torch.save(blob, f))


# ---------------------------------------------------------------- checkpoint


def _settings_record(s: SegmenterSettings) -> dict:
    out = dataclasses.asdict(s)
    out["classifier"]["layers"] = list(s.classifier.layers)
    return out


def save(path, pm: pixels.PixelMap, s: SegmenterSettings, backbone, **extra):
    """Atomic torch.save of the classifier's tensors and its settings (backbone name and id, and
    the stages pm was trained on)."""
    layers = pixels.resolve(pm.settings, backbone).layers
    s = dataclasses.replace(s, classifier=dataclasses.replace(s.classifier, layers=layers))
    ckpt = {"format": FORMAT, "version": VERSION,
            "settings": {**_settings_record(s), "backbone_name": backbone_name(backbone),
                         "backbone": backbone.backbone_id, **extra},
            "state": {"mean": pm.mean.clone(), "std": pm.std.clone(),
                      "weight": pm.weight.clone(), "bias": pm.bias.clone()},
            "images": list(pm.images)}
    atomic_write(path, lambda f: torch.save(ckpt, f))


def _pixel_settings(record, path):
    try:
        s = pixels.PixelSettings(**{**record, "layers": tuple(record["layers"])})
    except (TypeError, KeyError):
        raise UserError(f"{path}: its pixel settings {record!r} are not a segmenter's: train it "
                        "again with segment.py") from None
    if not (s.layers and all(isinstance(n, str) for n in s.layers) and isinstance(s.side, int)
            and s.side > 0):
        raise UserError(f"{path}: layers {s.layers!r} / side {s.side!r} are not valid: train it "
                        "again with segment.py")
    return s


def load(path) -> tuple[pixels.PixelMap, dict]:
    """-> (pixels.PixelMap, settings); UserError when missing, unreadable or not a segmenter."""
    path = os.fspath(path)
    again = "pass a .pth written by segment.py"
    ckpt = load_torch(path, "segmenter", again)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path} is not a segmenter checkpoint: {again}")
    if ckpt.get("version") != VERSION:
        raise UserError(f"segmenter {path} has version {ckpt.get('version')!r}, expected "
                        f"{VERSION}: train it again with this segment.py")
    settings, state = ckpt.get("settings"), ckpt.get("state")
    if not isinstance(settings, dict) or not isinstance(state, dict):
        raise UserError(f"{path} has no settings or weights: {again}")
    if not isinstance(settings.get("backbone_name"), str) or not settings["backbone_name"]:
        raise UserError(f"{path} does not name its backbone: {again}")
    s = _pixel_settings(settings.get("classifier") or {}, path)
    tensors = [state.get(k) for k in ("mean", "std", "weight", "bias")]
    if not all(isinstance(t, torch.Tensor) for t in tensors):
        raise UserError(f"{path} lacks some of mean, std, weight, bias: {again}")
    mean, std, weight, bias = (t.float() for t in tensors)
    c = weight.shape[0] if weight.ndim == 1 else -1
    if c < 1 or mean.shape != (c,) or std.shape != (c,) or bias.shape != ():
        raise UserError(f"{path}: weights of shapes {[tuple(t.shape) for t in tensors]} do not "
                        "make one classifier: train it again with segment.py")
    if not all(torch.isfinite(t).all() for t in (mean, std, weight, bias)) or (std <= 0).any():
        raise UserError(f"{path} holds NaN, Inf or non-positive spreads: train it again")
    return pixels.PixelMap(mean, std, weight, bias, s, list(ckpt.get("images") or [])), settings


def check_backbone(settings, backbone, path):
    """UserError (one line) when the segmenter was trained on another backbone (name) or other
    weights than backbone's."""
    trained, here = settings.get("backbone_name"), backbone_name(backbone)
    if trained != here:
        raise UserError(f"segmenter {path} was trained on backbone {trained}, this model's is "
                        f"{here}: pass a segmenter that segment.py trained on a {here} "
                        "checkpoint, or train one")
    if settings.get("backbone") != backbone.backbone_id:
        raise UserError(f"segmenter {path} was trained on backbone {settings.get('backbone')}, "
                        f"this run reads {backbone.backbone_id}: pass the backbone weights it "
                        "was trained with, or train it on these")
