"""One pass of a CAM method on one batch: the drivers that read a method's record (methods.py).

    python -c "from flowercam.cam import maps; print(maps.MapResult.__doc__)"
    .venv/bin/pytest tests/test_cams.py -q

feature_maps: CAM / ReCAM from backbone features [B,512,h,w] (no gradient, no images).
gradient_maps: one forward and ONE backward per batch (torch.autograd.grad of the sum of the target
logits: images of a batch are independent in eval mode, so each image gets its own gradient).
"""

import dataclasses

import torch
import torch.nn.functional as F

from flowercam.cam.methods import METHODS, layers_of
from flowercam.cam.scorecam import scorecam_weights
from flowercam.core import UserError
from flowercam.model.normalization import normalize


@dataclasses.dataclass
class MapResult:
    raw: torch.Tensor  # [B,H,W] at input size, before the final normalisation
    maps: torch.Tensor  # [B,H,W] normalised to [0, 1]
    logits: torch.Tensor  # [B,C] the model's output
    targets: torch.Tensor  # [B] long, class each map explains
    method: str
    options: dict  # resolved options of this method (json-friendly)
    raw_native: torch.Tensor  # [B,h,w] at the method's own resolution (7x7 for CAM)

    def to(self, device):
        moved = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        moved.update({k: v.to(device) for k, v in moved.items() if torch.is_tensor(v)})
        return MapResult(**moved)


def targets_of(targets, logits):
    """None -> predicted class; int -> that class for all; else one per image (length checked)."""
    batch, num = logits.shape
    if targets is None:
        return logits.argmax(1)
    t = torch.as_tensor(targets, device=logits.device)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.ndim != 1 or len(t) != batch or t.is_floating_point() or t.is_complex():
        raise UserError(f"targets must be {batch} class indices, one per image; "
                        f"got shape {tuple(t.shape)}")
    if len(t) and (t.min() < 0 or t.max() >= num):
        raise UserError(f"target classes must be in 0..{num - 1}, got {t.tolist()}")
    return t.long()


def upsample(maps, size):
    """[B,h,w] -> [B,*size], bilinear, align_corners=False."""
    up = F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)
    return up[:, 0]


def fuse_layers(per_layer, opts, size):
    """LayerCAM fusion as the report: normalise each, upsample, weighted sum (or max), tanh(g x)."""
    ups = torch.stack([upsample(normalize(m, opts["layer_normalize"]), size) for m in per_layer])
    if opts["fusion"] == "max":
        fused = ups.max(0).values
    else:
        weights = torch.tensor(opts["layer_weights"], dtype=ups.dtype, device=ups.device)
        fused = torch.einsum("l,lbhw->bhw", weights, ups)
    return torch.tanh(opts["tanh_gain"] * fused) if opts["tanh_gain"] else fused


def combine(method, per_layer, opts, size):
    """Per-layer maps [B,h,w] -> (raw [B,*size], raw_native): fused, or the one layer upsampled."""
    if METHODS[method].fuses:
        raw = fuse_layers(per_layer, opts, size)
        return raw, per_layer[0] if len(per_layer) == 1 else raw  # fusion happens at input size
    return upsample(per_layer[0], size), per_layer[0]


def feature_maps(head, feats, method, targets, size, opts):
    """CAM-like methods from features [B,512,h,w] -> MapResult on the head's device."""
    with torch.no_grad():
        rew, maps, logits = head.forward_maps(feats)
        tgt = targets_of(targets, logits)
        acts = {"classmaps": maps, "reweighted": rew}
        record = METHODS[method]
        weights = record.class_weights(head)[tgt]  # [B,C]: each image's target row
        per_layer = [record.weigh(acts[name], None, weights)
                     for name in layers_of(method, opts)]
        raw, raw_native = combine(method, per_layer, opts, size)
        return MapResult(raw, normalize(raw, opts["normalize_by"]), logits, tgt, method, opts,
                         raw_native)


def capture(model, x, layers):
    """One forward with a graph from the earliest layer in `layers` -> ({name: act}, logits)."""
    stages = [name for name in layers if name != "classmaps"]
    if stages:
        feats, acts = model.backbone.forward_with(x, stages)
    else:  # only the class maps: no graph through the backbone at all
        with torch.no_grad():
            feats = model.backbone(x)
        feats, acts = feats.detach().requires_grad_(), {}
    with torch.enable_grad():
        _, acts["classmaps"], logits = model.head.forward_maps(feats)
    return acts, logits


@torch.enable_grad()  # works inside a caller's torch.no_grad() too
def gradient_maps(model, x, method, targets, opts):
    """Gradient methods on images x [B,3,H,W] -> MapResult on x's device."""
    if torch.is_inference_mode_enabled():
        raise UserError(f"{method} needs gradients: call compute_maps outside "
                        "torch.inference_mode()")
    layers = layers_of(method, opts)
    acts, logits = capture(model, x, layers)
    tgt = targets_of(targets, logits)
    # one backward per batch: d(sum_i logit_i,t_i)/dA_i = d(logit_i,t_i)/dA_i (independent images)
    score = logits.gather(1, tgt[:, None]).sum()
    grads = torch.autograd.grad(score, [acts[name] for name in layers])
    with torch.no_grad():
        weigh = METHODS[method].weigh
        per_layer = [weigh(acts[name].detach(), g, None)
                     for name, g in zip(layers, grads, strict=True)]
        raw, raw_native = combine(method, per_layer, opts, x.shape[-2:])
        maps = normalize(raw, opts["normalize_by"])
    return MapResult(raw, maps, logits.detach(), tgt, method, opts, raw_native)


def activations(model, x, layers):
    """One forward without a graph -> ({name: act}, logits); layers: stages and/or classmaps."""
    stages = [name for name in layers if name != "classmaps"]
    with torch.no_grad():
        feats, acts = model.backbone.forward_with(x, stages, graph=None)
        _, acts["classmaps"], logits = model.head.forward_maps(feats)
    return acts, logits


def score_maps(model, x, method, targets, opts):
    """Score-CAM (weights from forwards of masked images) -> MapResult on x's device."""
    layers = layers_of(method, opts)
    acts, logits = activations(model, x, layers)
    tgt = targets_of(targets, logits)
    weigh = METHODS[method].weigh
    with torch.no_grad():
        per_layer = [weigh(acts[name], None, scorecam_weights(model, x, acts[name], tgt,
                                                               opts["scorecam_batch"]))
                     for name in layers]
        raw, raw_native = combine(method, per_layer, opts, x.shape[-2:])
        maps = normalize(raw, opts["normalize_by"])
    return MapResult(raw, maps, logits, tgt, method, opts, raw_native)


def image_maps(model, x, method, targets, opts):
    """Any method on images x [B,3,H,W] -> MapResult: the driver of the method's kind."""
    record = METHODS[method]
    if record.kind == "features":
        with torch.no_grad():
            feats = model.backbone(x)
        return feature_maps(model.head, feats, method, targets, x.shape[-2:], opts)
    driver = {"gradients": gradient_maps, "scores": score_maps}[record.kind]
    return driver(model, x, method, targets, opts)
