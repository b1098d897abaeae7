"""Class activation maps of a Classifier (a frozen backbone + a head): CAM, ReCAM, LayerCAM,
Grad-CAM(++), ScoreCAM and the rest of flowercam/cam/methods.py.

    python -c "from flowercam.cam import methods; print(list(methods.METHODS))"
    .venv/bin/pytest tests/test_cams.py -q
    BACKBONE_WEIGHTS=../shared/weights/vgg16_imagenet_features.pth python -m benchmarks.cams

Notebook use:  from flowercam.backbones import registry  # loads a checkpoint on its backbone
               model, settings = registry.load_model("model/RUN/epoch_7.pth", "../shared/...")
               res = compute.compute_maps(model, images, "LayerCAM")  # .raw .maps .logits .targets
               compute.compute_maps(model, images, "CAM", scales=(1, 0.5, 1.5, 2), flip=True)
The methods are records in flowercam/cam/methods.py; one pass of one is run by maps.py;
this module checks, runs the pass and aggregates scales and flips.
"""

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from flowercam.cam.ablation import ablation_weights
from flowercam.cam.drivers import image_maps
from flowercam.cam.maps import FeatureInput, MapResult, check_targets, feature_maps, upsample
from flowercam.cam.methods import METHODS, check_method, layers_of, resolve_options
from flowercam.core import UserError
from flowercam.model.heads import Classifier
from flowercam.model.normalization import normalize


def postprocess(maps, threshold=0.3, gain=1.5):
    """The report's visual clip: values < threshold -> 0, then x gain, clamped to 1 (new tensor)."""
    return torch.where(maps < threshold, torch.zeros_like(maps), maps * gain).clamp(max=1.0)


IMAGE_CHANNELS = 3  # RGB: every backbone's input


def check_input(x, what, head):
    """A public function's tensor, checked before any work (one line, never a torch internal
    error): [B,K,H,W] with K = 3 for images, the head's in-channels for features (what
    "feats"), the head's dtype, every value finite (one NaN or Inf pixel makes every map and
    logit NaN)."""
    first = next(m for m in head.modules() if isinstance(m, nn.Conv2d))
    k = first.in_channels if what == "feats" else IMAGE_CHANNELS
    kind = str(first.weight.dtype).removeprefix("torch.")
    if not isinstance(x, torch.Tensor):
        raise UserError(f"{what} must be a torch tensor [B,{k},H,W], got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != k:
        fix = ": add the batch dimension, x[None]" if x.ndim == 3 and len(x) == k else ""
        raise UserError(f"{what} must be [B,{k},H,W], got shape {tuple(x.shape)}{fix}")
    if x.dtype != first.weight.dtype:
        fix = ("x.float() / 255, then ImageNet-normalise" if x.dtype == torch.uint8 else
               f"x.to(torch.{kind})")
        raise UserError(f"{what} must be {kind} like the model's weights, got "
                        f"{str(x.dtype).removeprefix('torch.')}: convert with {fix}")
    bad = int(x.numel() - torch.isfinite(x).sum())
    if bad:
        raise UserError(f"{what} hold {bad} NaN or Inf values: every map and logit would be NaN; "
                        "replace them first (e.g. torch.nan_to_num)")
    return x


def _check_call(x, what, head, targets):
    """check_input and check_targets (the head's classes) of one public call."""
    check_input(x, what, head)
    check_targets(targets, len(x), head.fc.out_features)


def compute_maps_from_features(head, feats, method, targets=None, size=(256, 256), **options):
    """CAM / ReCAM from backbone features [B,C,h,w] (e.g. the feature cache) -> MapResult."""
    check_method(method, head.model_type)
    _check_call(feats, "feats", head, targets)
    if not METHODS[method].from_features:
        raise UserError(f"{method} needs gradients through the images: use compute_maps on images"
                        if METHODS[method].needs_gradients else
                        f"{method} needs the images: use compute_maps on images")
    opts = resolve_options(method, options)
    result = feature_maps(head, feats.to(head.fc.weight.device), method, targets, size, opts)
    return result.to(feats.device)


@dataclasses.dataclass(frozen=True)
class Aggregation:
    """Multi-scale + flip aggregation (IRN / ReCAM: scales 1, 0.5, 1.5, 2 and flips); the default
    is one pass. `compute_maps(..., **agg.kwargs())`."""

    scales: tuple = (1.0,)
    flip: bool = False

    def kwargs(self):
        return {"scales": tuple(self.scales), "flip": self.flip}

    @property
    def plain(self):
        return tuple(self.scales) == (1.0,) and not self.flip


def min_size(backbone) -> int:
    """The smallest input side the backbone takes (a stand-in reading one: its .real's)."""
    return getattr(getattr(backbone, "real", backbone), "min_size", 1)


def _check_scales(scales, size, smallest=32):
    scales = tuple(float(s) for s in scales)
    if not scales or len(set(scales)) != len(scales) or not all(
            math.isfinite(s) and s > 0 for s in scales):
        raise UserError(f"scales {list(scales)} must be distinct finite numbers > 0, e.g. 1 0.5 2")
    for s in scales:
        if min(round(size[0] * s), round(size[1] * s)) < smallest:
            raise UserError(f"scale {s:g} makes {size[0]}x{size[1]} images smaller than "
                            f"{smallest} px, the backbone's minimum: use larger scales")
    return scales


def _rescale(x, s):
    """Images [B,3,H,W] resized by s (bilinear, align_corners=False; IRN resizes with PIL)."""
    if s == 1.0:
        return x
    size = (round(x.shape[-2] * s), round(x.shape[-1] * s))
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _aggregate(model, x, method, plain, opts, agg):
    """Mean of the raw maps at every scale (images resized) and, with flip, of the flipped images
    (maps flipped back), each resized to the input size, then normalised. IRN/ReCAM sum: the mean
    keeps sigmoid's scale, minmax and relu give the same maps either way. One batch per scale,
    [x_s; flip(x_s)], explaining the plain pass's targets; the plain pass is not rerun."""
    size, batch = x.shape[-2:], len(x)
    raws = []
    for s in agg.scales:
        variants = [flipped for flipped in (False, True)[: 1 + agg.flip]
                    if flipped or s != 1.0]  # the unflipped scale-1 map is `plain`
        if s == 1.0:
            raws.append(plain.raw)
        if not variants:
            continue
        xs = _rescale(x, s)
        images = torch.cat([xs.flip(-1) if flipped else xs for flipped in variants])
        res = image_maps(model, images, method, plain.targets.repeat(len(variants)), opts)
        for i, flipped in enumerate(variants):
            raw = res.raw[i * batch : (i + 1) * batch]  # [B,sH,sW]
            raw = raw.flip(-1) if flipped else raw
            raws.append(raw if raw.shape[-2:] == size else upsample(raw, size))
    raw = torch.stack(raws).mean(0)
    opts = {**opts, "scales": list(agg.scales), "flip": agg.flip}
    return MapResult(raw, normalize(raw, opts["normalize_by"]), plain.logits, plain.targets,
                     method, opts, raw)  # raw_native: the aggregate, at input size


def compute_maps(model, images, method, targets=None, scales=(1.0,), flip=False, **options):
    """images [B,3,H,W] normalised (any device) -> MapResult on the images' device.

    targets: None = predicted class, an int for all, or one per image (other length: UserError).
    scales, flip: see Aggregation (default one plain pass; else options gain scales and flip).
    options: see methods.option_names() (normalize_by, layers, layer_weights, fusion, ...).
    """
    check_method(method, model.head.model_type, model.backbone)
    _check_call(images, "images", model.head, targets)
    opts = resolve_options(method, options, model.backbone)
    agg = Aggregation(_check_scales(scales, images.shape[-2:], min_size(model.backbone)),
                      bool(flip))
    x = images.to(model.head.fc.weight.device)
    result = image_maps(model, x, method, targets, opts)
    if not agg.plain:
        result = _aggregate(model, x, method, result, opts, agg)
    return result.to(images.device)


PLAIN = Aggregation()  # one pass at the input size


def head_only(method, opts):
    """True when a plain pass needs only the head's input (cached backbone features): the
    features kind, or a one-layer method at the class maps whose passes run only the head
    (gradients, activations, Ablation-CAM's ablated class maps)."""
    record = METHODS[method]
    if record.from_features:
        return True
    return (not record.fuses and layers_of(method, opts) == ["classmaps"]
            and (record.kind in ("gradients", "activations")
                 or record.channel_weights is ablation_weights))


def maps_reusing(model, images, method, shared, targets=None, agg=PLAIN, **options):
    """compute_maps of images [B,3,H,W], reusing backbone features where they are enough.

    shared: a dict for the calls on the same images; its "feats" ([B,C,h,w]: rows of the
    feature cache, or filled here on first need) serve a features-kind method in one plain pass;
    any other method or aggregation runs compute_maps. -> MapResult on the images' device.
    """
    check_method(method, model.head.model_type, model.backbone)
    _check_call(images, "images", model.head, targets)
    if not (agg.plain and head_only(method, resolve_options(method, options, model.backbone))):
        return compute_maps(model, images, method, targets, **agg.kwargs(), **options)
    cut = model.backbone.cut
    # features of another cut (figures.py shares one dict across models) are not this model's
    if "feats" not in shared or shared.setdefault("feats_cut", cut) != cut:
        with torch.no_grad():
            shared["feats"] = model.backbone(images.to(model.head.fc.weight.device))
        shared["feats_cut"] = cut
    size = tuple(images.shape[-2:])
    if METHODS[method].from_features:
        return compute_maps_from_features(model.head, shared["feats"], method, targets,
                                          size=size, **options).to(images.device)
    return maps_from_head(model.head, shared["feats"], method, targets, size,
                          resolve_options(method, options, model.backbone)).to(images.device)


def maps_from_head(head, feats, method, targets, size, opts):
    """A head_only method on backbone features [B,C,h,w] -> MapResult at `size` (the same maps
    as on the images: the one layer's map upsampled, then normalised)."""
    _check_call(feats, "feats", head, targets)
    res = image_maps(Classifier(FeatureInput(), head), feats.to(head.fc.weight.device), method,
                     targets, opts)
    raw = upsample(res.raw_native, size)
    return MapResult(raw, normalize(raw, opts["normalize_by"]), res.logits, res.targets, method,
                     opts, res.raw_native)

