"""Class activation maps from a frozen-VGG16 Classifier: CAM, ReCAM, LayerCAM, Grad-CAM, Grad-CAM++.

    python -c "from flowercam import cams; print(list(cams.METHODS))"
    .venv/bin/pytest tests/test_cams.py -q
    BACKBONE_WEIGHTS=../shared/weights/vgg16_imagenet_features.pth python -m benchmarks.cams

Notebook use:  model, settings = models.load_model("model/RUN/epoch_7.pth", "../shared/weights/...")
               res = cams.compute_maps(model, images, "LayerCAM")  # .raw .maps .logits .targets
The methods are records in flowercam/methods.py; one pass of one is run by flowercam/maps.py.
"""

import torch

from flowercam import models
from flowercam.maps import MapResult, feature_maps, fuse_layers, gradient_maps, upsample
from flowercam.methods import (
    CLASS_MAP_METHODS,
    LAYERS,
    METHODS,
    check_method,
    gradcampp,
    gradcampp_alpha,
    resolve_options,
)
from flowercam.models import NORMALIZERS, UserError, normalize

__all__ = ["CLASS_MAP_METHODS", "LAYERS", "METHODS", "NORMALIZERS", "MapResult", "check_method",
           "class_cams", "compute_maps", "compute_maps_from_features", "fuse_layers",
           "gradcampp", "gradcampp_alpha", "normalize", "postprocess", "resolve_options",
           "upsample"]


def postprocess(maps, threshold=0.3, gain=1.5):
    """The report's visual clip: values < threshold -> 0, then x gain, clamped to 1 (new tensor)."""
    return torch.where(maps < threshold, torch.zeros_like(maps), maps * gain).clamp(max=1.0)


def _head_settings(head):
    return {"model_type": "ReCAM" if isinstance(head, models.ReCAMHead) else "CAM"}


def class_cams(head, feats, method="CAM"):
    """All C class maps in one pass: feats [B,512,h,w] -> [B,C,h,w] (CAM or ReCAM)."""
    check_method(method, _head_settings(head))
    with torch.no_grad():
        rew, maps, _ = head.forward_maps(feats)
        acts = {"classmaps": maps, "reweighted": rew}
        return head.cams(acts.get(METHODS[method].default_layers[0], maps))


def compute_maps_from_features(head, feats, method, targets=None, size=(256, 256), **options):
    """CAM / ReCAM from backbone features [B,512,h,w] (e.g. the feature cache) -> MapResult."""
    check_method(method, _head_settings(head))
    if not METHODS[method].from_features:
        raise UserError(f"{method} needs gradients through the images: use compute_maps on images"
                        if METHODS[method].needs_gradients else
                        f"{method} needs the images: use compute_maps on images")
    opts = resolve_options(method, options)
    result = feature_maps(head, feats.to(head.fc.weight.device), method, targets, size, opts)
    return result.to(feats.device)


def compute_maps(model, images, method, targets=None, **options):
    """images [B,3,H,W] normalised (any device) -> MapResult on the images' device.

    targets: None = predicted class, an int for all, or one per image (other length: UserError).
    options: see methods.option_names() (normalize_by, layers, layer_weights, fusion, ...).
    """
    check_method(method, _head_settings(model.head))
    opts = resolve_options(method, options)
    x = images.to(model.head.fc.weight.device)
    record = METHODS[method]
    if record.from_features:
        with torch.no_grad():
            feats = model.backbone(x)
        result = feature_maps(model.head, feats, method, targets, x.shape[-2:], opts)
    else:
        result = gradient_maps(model, x, method, targets, opts)
    return result.to(images.device)

