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
from flowercam.model import checkpoints

DEFAULT = "vgg16"  # the report's backbone
BACKBONES = {
    "vgg16": vgg16.ENTRY,
    "efficientnet_lite0": efficientnet_lite0.ENTRY,
    "resnet50": timm_models.entry("resnet50"),
    "convnext_tiny": timm_models.entry("convnext_tiny"),
    "vit_base_patch16_224": timm_models.entry("vit_base_patch16_224"),
}


def default_class() -> type[protocol.Backbone]:
    """The default backbone's class: what it tells without weights (stages, map_stages, ...)."""
    return vgg16.VGG16


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


def name_of(settings) -> str:
    """The registry name of the backbone a checkpoint's head was trained on (HeadSettings)."""
    return settings.backbone


def check_fits(name, head, backbone, source="checkpoint"):
    """A head trained on backbone `name` must meet that backbone, with as many channels as its
    input: else one UserError line (never a silent mix)."""
    if backbone.key != name:
        raise UserError(f"{source} was trained on backbone {name}, not {backbone.key}: pass "
                        f"--backbone {name} (and its --backbone-weights) or retrain")
    first = next(m for m in head.modules() if hasattr(m, "in_channels"))
    if first.in_channels != backbone.channels:
        raise UserError(f"{source} reads {first.in_channels} channels, backbone {name} gives "
                        f"{backbone.channels} at {backbone.cut}: retrain it on this backbone")


def load_model(checkpoint_path, backbone_weights=None, device="cpu", backbone=None):
    """-> (Classifier in eval mode on `device`, settings) of a checkpoint: its head on the
    backbone it was trained on, loaded here (backbone_weights: a local file; None = that
    backbone's default, see load_backbone) unless `backbone` gives one (read at the checkpoint's
    cut: backbone.at). Another backbone than the checkpoint's is one UserError line."""
    head, settings, _ = checkpoints.load_checkpoint(checkpoint_path)
    name = name_of(settings)
    if backbone is None:
        backbone = load_backbone(name, backbone_weights, device)
    view = backbone.at(checkpoints.cut_of(settings, backbone))
    check_fits(name, head, view, f"checkpoint {checkpoint_path}")
    return checkpoints.attach(head, settings, view, device)
