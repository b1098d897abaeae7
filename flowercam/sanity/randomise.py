"""Model-parameter randomisation (Adebayo et al. 2018, "Sanity Checks for Saliency Maps"): a copy
of a classifier with some layers re-initialised, the caller's model (and any checkpoint) untouched.

    python -c "from flowercam.sanity import randomise as r; from flowercam.backbones import \
registry; print(r.cascade_layers(registry.load_backbone(seed=0)))"
    python evaluate.py -d model/RUN --sanity --limit 12      # every method, every depth

Layers, top (output) first: the head's classifier layers ("head.fc"; published ReCAM's W_sce is
re-initialised with it), its 1x1 convolution ("head.conv"), then the backbone's cascade() blocks,
top first (VGG16: blocks 5 to 1, the convs between two max pools; timm: one block per stage).
Head layers are re-initialised as PyTorch initialised them before training (reset_parameters),
backbone modules with the backbone's reinit (VGG16: torchvision's init, Kaiming normal, fan-out,
zero bias). Every layer has its own seeded stream, so a layer's new weights do not depend on
which other layers are randomised with it.
"""

import copy

import torch

from flowercam.core import UserError
from flowercam.model.heads import Classifier

HEAD_LAYERS = ("head.fc", "head.conv")


def cascade_layers(backbone) -> tuple[str, ...]:
    """The head's layers, then the backbone's blocks, top first: the cascading randomisation."""
    return HEAD_LAYERS + tuple(name for name, _ in backbone.cascade())


def layer_modules(model, name):
    """The modules (with parameters) that layer `name` re-initialises."""
    if name == "head.fc":
        return [m for m in (model.head.fc, getattr(model.head, "sce", None)) if m is not None]
    if name == "head.conv":
        return [model.head.conv]
    blocks = dict(model.backbone.cascade())
    if name not in blocks:
        raise UserError(f"unknown layer {name!r} to randomise: use "
                        f"{', '.join(cascade_layers(model.backbone))}")
    return list(blocks[name])


def cascade(depth, backbone):
    """The first `depth` layers of the backbone's cascade_layers (1 = the head's linear layer)."""
    layers = cascade_layers(backbone)
    if not 1 <= depth <= len(layers):
        raise UserError(f"cascade depth {depth} must be 1..{len(layers)}")
    return layers[:depth]


def _reinit(module, backbone, seed):
    with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
        torch.manual_seed(seed)
        if backbone is not None:
            backbone.reinit(module)
        else:
            module.reset_parameters()


def randomised(model: Classifier, layers, seed=0) -> Classifier:
    """A new Classifier with `layers` (names of cascade_layers) re-initialised, seeded; `model`
    is never modified. The head is always copied; the backbone only when one of its blocks is
    re-initialised (else it is shared: frozen, nothing changes it), and a copied one gets a new
    backbone_id, so no feature cache of the trained backbone is ever reused for it."""
    order = cascade_layers(model.backbone)
    unknown = [name for name in layers if name not in order]
    if unknown:
        raise UserError(f"unknown layer {unknown[0]!r} to randomise: use {', '.join(order)}")
    touches_backbone = any(name not in HEAD_LAYERS for name in layers)
    backbone = copy.deepcopy(model.backbone) if touches_backbone else model.backbone
    new = Classifier(backbone, copy.deepcopy(model.head)).eval()
    new.settings = getattr(model, "settings", None)  # HeadSettings: frozen, shared
    with torch.no_grad():
        for name in layers:
            offset = order.index(name)
            for k, module in enumerate(layer_modules(new, name)):
                _reinit(module, None if name in HEAD_LAYERS else new.backbone,
                        seed * 1000 + offset * 50 + k)
    if touches_backbone:
        picked = "+".join(name for name in order if name in layers and name not in HEAD_LAYERS)
        new.backbone.backbone_id = f"{model.backbone.backbone_id}~random-{picked}-seed{seed}"
    return new
