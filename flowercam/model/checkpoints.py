"""Head-only checkpoints: the trainable weights plus the settings that rebuild the model.

    python -c "from flowercam.model import checkpoints as c; \
print(c.load_checkpoint('RUN/epoch_3.pth')[1])"
"""

import os
import warnings

import torch

from flowercam.core import UserError, atomic_write, file_sha256, load_torch
from flowercam.model.heads import Classifier, HeadSettings, build_head
from flowercam.model.vgg import MAX_ABS_WEIGHT

CHECKPOINT_FORMAT = "flowercam-head"
CHECKPOINT_VERSION = 1


def content_sha256(path) -> str:
    """A checkpoint's content hash: what a run made from it (--tau-from's cam_metrics.json, a
    partial metrics run) is matched by, never its path (a file replaced there is another)."""
    return file_sha256(path)


def save_checkpoint(path, head, settings: HeadSettings, **extra):
    """Atomic torch.save of {"format", "version", "settings" (HeadSettings.to_dict),
    "state_dict", **extra}."""
    state = {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}
    ckpt = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
            "settings": settings.to_dict(), "state_dict": state, **extra}
    atomic_write(path, lambda f: torch.save(ckpt, f))


def in_channels(state_dict):
    """Channels the saved head reads (its first conv's input; None: not a head's weights)."""
    weight = state_dict.get("conv.weight") if isinstance(state_dict, dict) else None
    return int(weight.shape[1]) if torch.is_tensor(weight) and weight.ndim == 4 else None


def load_checkpoint(path):
    """-> (head in eval mode, HeadSettings, ckpt dict); UserError if missing, unreadable, not
    ours, or its settings are wrong (naming the file and the field)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise UserError(f"checkpoint {path} is a folder: pass one of its epoch_N.pth files")
    ckpt = load_torch(path, "checkpoint", "pass a .pth written by main.py")
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not a flowercam head checkpoint: "
                        "pass a .pth written by main.py")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise UserError(f"checkpoint {path} has version {ckpt.get('version')!r}, expected "
                        f"{CHECKPOINT_VERSION}: retrain with this version of main.py")
    if "settings" not in ckpt:
        raise UserError(f"checkpoint {path} has no settings: pass a .pth written by main.py")
    settings = HeadSettings.from_dict(ckpt["settings"], f"checkpoint {path} settings")
    head = build_head(settings, in_channels(ckpt.get("state_dict")))
    _check_weights(path, ckpt.get("state_dict"))
    try:
        head.load_state_dict(ckpt["state_dict"])
    except (KeyError, RuntimeError) as err:
        raise UserError(f"checkpoint {path} weights do not fit its settings "
                        f"({str(err).splitlines()[0]}): retrain it") from None
    return head.eval(), settings, ckpt


def _check_weights(path, state):
    """UserError naming the file and tensor when a weight is not a finite float below
    MAX_ABS_WEIGHT: such a head gives NaN losses and maps, never a figure."""
    if not isinstance(state, dict):
        raise UserError(f"checkpoint {path} has no state_dict: pass a .pth written by main.py")
    for name, tensor in state.items():
        if not (torch.is_tensor(tensor) and tensor.is_floating_point()):
            raise UserError(f"checkpoint {path} weight {name} is not a float tensor: retrain it")
        if not torch.isfinite(tensor).all():
            raise UserError(f"checkpoint {path} holds non-finite weights ({name}): retrain it or "
                            "use another epoch")
        if tensor.numel() and tensor.abs().max() > MAX_ABS_WEIGHT:
            raise UserError(f"checkpoint {path} holds overflowing weights ({name}: |w| > "
                            f"{MAX_ABS_WEIGHT:g}): retrain it or use another epoch")


def cut_of(settings: HeadSettings, backbone) -> str:
    """Where a checkpoint's head reads the backbone: its cut (checked by the backbone), else the
    backbone's default cut (VGG16's pool5: checkpoints from before the cuts)."""
    return backbone.check_cut(settings.cut or backbone.default_cut)


def attach(head, settings: HeadSettings, backbone, device="cpu"):
    """-> (Classifier of head on backbone (already read at the checkpoint's cut) in eval mode on
    `device`, HeadSettings); a warning line when the weights differ from those it was trained
    on. flowercam.backbones.registry.load_model loads a checkpoint on its backbone."""
    trained_on = settings.backbone_id
    if trained_on and trained_on != backbone.backbone_id:
        warnings.warn(f"head was trained on backbone {trained_on}, loading it on "
                      f"{backbone.backbone_id}", stacklevel=2)
    model = Classifier(backbone, head).to(device).eval()
    model.settings = settings
    return model, settings
