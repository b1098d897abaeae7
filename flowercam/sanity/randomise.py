"""Model-parameter randomisation (Adebayo et al. 2018, "Sanity Checks for Saliency Maps"): a copy
of a classifier with some layers re-initialised, the caller's model (and any checkpoint) untouched.

    python -c "from flowercam.sanity import randomise as r; print(r.CASCADE)"
    python evaluate.py -d model/RUN --sanity --limit 12      # every method, every depth

Layers, top (output) first: the head's classifier layers ("head.fc"; published ReCAM's W_sce is
re-initialised with it), its 1x1 convolution ("head.conv"), then VGG16's blocks 5 to 1 (the convs
between two max pools). Head layers are re-initialised as PyTorch initialised them before training
(reset_parameters), backbone convs with torchvision's VGG init (Kaiming normal, fan-out, zero bias).
Every layer has its own seeded stream, so a layer's new weights do not depend on which other
layers are randomised with it.
"""

import copy

import torch
from torch import nn

from flowercam.core import UserError
from flowercam.model import vgg
from flowercam.model.heads import Classifier

HEAD_LAYERS = ("head.fc", "head.conv")
BLOCKS = ("block5", "block4", "block3", "block2", "block1")
CASCADE = HEAD_LAYERS + BLOCKS  # top first: the order of the cascading randomisation


def layer_modules(model, name):
    """The modules (with parameters) that layer `name` re-initialises."""
    if name == "head.fc":
        return [m for m in (model.head.fc, getattr(model.head, "sce", None)) if m is not None]
    if name == "head.conv":
        return [model.head.conv]
    blocks = vgg.block_convs(model.backbone.features)
    if name not in blocks:
        raise UserError(f"unknown layer {name!r} to randomise: use {', '.join(CASCADE)}")
    return [model.backbone.features[i] for i in blocks[name]]


def cascade(depth):
    """The first `depth` layers of CASCADE (1 = the head's linear layer only)."""
    if not 1 <= depth <= len(CASCADE):
        raise UserError(f"cascade depth {depth} must be 1..{len(CASCADE)}")
    return CASCADE[:depth]


def _reinit(module, in_backbone, seed):
    with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
        torch.manual_seed(seed)
        if in_backbone:  # torchvision VGG._initialize_weights for convs
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)
        else:
            module.reset_parameters()


def randomised(model: Classifier, layers, seed=0) -> Classifier:
    """A new Classifier with `layers` (names of CASCADE) re-initialised, seeded; `model` is never
    modified. The head is always copied; the backbone only when one of its blocks is re-initialised
    (else it is shared: frozen, nothing changes it), and a copied one gets a new backbone_id, so no
    feature cache of the trained backbone is ever reused for it."""
    unknown = [name for name in layers if name not in CASCADE]
    if unknown:
        raise UserError(f"unknown layer {unknown[0]!r} to randomise: use {', '.join(CASCADE)}")
    touches_backbone = any(name in BLOCKS for name in layers)
    backbone = copy.deepcopy(model.backbone) if touches_backbone else model.backbone
    new = Classifier(backbone, copy.deepcopy(model.head)).eval()
    new.settings = getattr(model, "settings", None)  # HeadSettings: frozen, shared
    with torch.no_grad():
        for name in layers:
            offset = CASCADE.index(name)
            for k, module in enumerate(layer_modules(new, name)):
                _reinit(module, name in BLOCKS, seed * 1000 + offset * 50 + k)
    if touches_backbone:
        picked = "+".join(name for name in CASCADE if name in layers and name in BLOCKS)
        new.backbone.backbone_id = f"{model.backbone.backbone_id}~random-{picked}-seed{seed}"
    return new
