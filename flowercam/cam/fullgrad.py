"""FullGrad (Srinivas & Fleuret, NeurIPS 2019): the input-gradient and every bias-gradient of the
network, each made a map and summed.

    python -c "from flowercam.cam import fullgrad; help(fullgrad.fullgrad_maps)"
    .venv/bin/pytest tests/test_cam_family.py -q -k fullgrad

S = psi(|x * dy/dx|) + sum_l sum_c psi(|b_lc dy/dz_lc|): z_l the output of a convolution with a
bias b_l (the backbone's: VGG16's 13, forward_keeping_biases; the head's 1x1 one; our linear
layer has no bias), so dy/dz_lc is the
bias-gradient map. psi: per channel (m - min) / (max - min + 1e-7), bilinear upsampling to the image
(align_corners=False), summed over channels, as pytorch-grad-cam 1.5.7 (the paper's official code
scales each layer's channels jointly). One forward from the image and ONE backward per batch.
"""

import torch
from torch import nn

from flowercam.cam.maps import MapResult, targets_of, upsample
from flowercam.cam.methods import METHODS
from flowercam.core import UserError
from flowercam.model.normalization import normalize


def forward_keeping_convs(model, x):
    """Forward with a graph from x -> (logits [B,C], the model's own: [(conv, its output z)] in
    network order): the backbone's forward_keeping_biases up to the head's cut, then the head."""
    h, outs = model.backbone.forward_keeping_biases(x)
    outs = list(outs)
    head_convs = [m for m in model.head.modules() if isinstance(m, nn.Conv2d)
                  and m.bias is not None]
    hooks = [m.register_forward_hook(lambda m, i, out: outs.append((m, out)))
             for m in head_convs]
    try:
        logits = model.head(h)
    finally:
        for hook in hooks:
            hook.remove()
    return logits, outs


@torch.enable_grad()
def fullgrad_maps(model, x, method, targets, opts):
    """FullGrad on images x [B,3,H,W] -> MapResult on x's device (raw_native = raw: every term is
    brought to the image's size)."""
    if torch.is_inference_mode_enabled():
        raise UserError(f"{method} needs gradients: call compute_maps outside "
                        "torch.inference_mode()")
    image = x.detach().clone().requires_grad_()
    logits, convs = forward_keeping_convs(model, image)
    tgt = targets_of(targets, logits)
    score = logits.gather(1, tgt[:, None]).sum()
    grads = torch.autograd.grad(score, [image] + [z for _, z in convs])
    psi = METHODS[method].weigh  # [B,K,h,w] >= 0 -> [B,h,w]
    with torch.no_grad():
        raw = psi((grads[0] * image).abs(), None, None)
        for (conv, _), g in zip(convs, grads[1:], strict=True):
            raw = raw + upsample(psi((conv.bias[:, None, None] * g).abs(), None, None),
                                 x.shape[-2:])
        maps = normalize(raw, opts["normalize_by"])
    return MapResult(raw, maps, logits.detach(), tgt, method, opts, raw)
