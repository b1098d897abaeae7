"""The backbones by name: one line per backbone (its file's Entry), as timm's registry does.

    python -c "from flowercam.backbones import registry; print(registry.names())"
    python -c "from flowercam.backbones import registry; b = registry.load_backbone('resnet50',
        seed=0); print(b.backbone_id, b.shapes(64))"

Adding a backbone: a file in flowercam/backbones/ with a protocol.Backbone subclass and an
ENTRY = protocol.Entry(load, random), plus its line here (docs/backbones.md).
"""

import timm

from flowercam.backbones import efficientnet_lite0, protocol, timm_models, vgg16
from flowercam.core import UserError

DEFAULT = "vgg16"  # the report's backbone
BACKBONES = {
    "vgg16": vgg16.ENTRY,
    "efficientnet_lite0": efficientnet_lite0.ENTRY,
    "resnet50": timm_models.entry("resnet50"),
    "convnext_tiny": timm_models.entry("convnext_tiny"),
    "vit_base_patch16_224": timm_models.entry("vit_base_patch16_224"),
}


def names() -> tuple[str, ...]:
    return tuple(BACKBONES)


def entry(name) -> protocol.Entry:
    """The registry's line for `name`; another timm model name gets the generic timm entry."""
    if name in BACKBONES:
        return BACKBONES[name]
    if timm.is_model(name):
        return timm_models.entry(name)
    raise UserError(f"unknown backbone {name!r}: use one of {', '.join(BACKBONES)} (or another "
                    "timm model name)")


def load_backbone(name=DEFAULT, weights=None, device="cpu", seed=None) -> protocol.Backbone:
    """The backbone `name` with ImageNet weights (weights: a local state dict file; None = the
    library's own download, offline = one UserError line), or seeded random ones when seed is
    given (tests)."""
    line = entry(name)
    if seed is not None:
        return line.random(seed, device)
    return line.load(weights, device)
