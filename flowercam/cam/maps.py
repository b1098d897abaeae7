"""One pass of a CAM method on one batch: the drivers that read a method's record (methods.py).

    python -c "from flowercam.cam import maps; print(maps.MapResult.__doc__)"
    .venv/bin/pytest tests/test_cams.py -q

feature_maps: CAM / ReCAM from backbone features [B,C,h,w] (no gradient, no images).
gradient_maps: one forward and ONE backward per batch (torch.autograd.grad of the sum of the target
logits: images of a batch are independent in eval mode, so each image gets its own gradient).
activation_maps: one forward without a graph (EigenCAM, KPCA-CAM, FEM); score_maps: channel weights
from extra forwards (Score-CAM family, Ablation-CAM). flowercam/cam/drivers.py picks the driver.
"""

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from flowercam.cam.eigen import first_component
from flowercam.cam.methods import METHODS, layers_of
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


class FeatureInput(nn.Module):
    """A backbone stand-in whose input already is the backbone's features [B,C,h,w] (the
    feature cache): the drivers run on the head alone (compute.head_only); no stage to read."""

    stages, map_stages, fusion_stage_sets, capabilities = {}, (), (), frozenset()

    def forward(self, feats):
        return feats

    def forward_with(self, feats, layers, graph="stages"):
        if layers:
            raise UserError(f"backbone layers {list(layers)} need the images, not features")
        return feats, {}


def check_targets(targets, batch, num):
    """targets as a caller passes them, checked before any work: None (the predicted class), one
    class index for every image, or `batch` indices (list, tuple or integer tensor), each in
    0..num-1 -> None or a [B] long tensor (on the CPU)."""
    if targets is None:
        return None
    want = f"targets must be None, one class index or {batch} (one per image) in 0..{num - 1}"
    try:
        t = torch.as_tensor(targets)
    except (TypeError, ValueError, RuntimeError):
        raise UserError(f"{want}; got {type(targets).__name__} {str(targets)[:40]}") from None
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        shown = t.tolist() if t.numel() <= 8 else f"a {str(t.dtype).removeprefix('torch.')} tensor"
        raise UserError(f"{want}; got {shown} (not whole numbers: pass ints, e.g. a long tensor)")
    if t.ndim == 0:
        t = t.expand(batch)
    if t.ndim != 1 or len(t) != batch:
        raise UserError(f"{want}; got shape {tuple(t.shape)} for {batch} images")
    if len(t) and (t.min() < 0 or t.max() >= num):
        raise UserError(f"target classes must be in 0..{num - 1}, got {t.tolist()}")
    return t.long()


def targets_of(targets, logits):
    """None -> predicted class; int -> that class for all; else one per image (check_targets)."""
    batch, num = logits.shape
    if targets is None:
        return logits.argmax(1)
    return check_targets(targets, batch, num).to(logits.device)


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


def weigh(method, opts, acts, grads, weights):
    """The method's map of one layer [B,h,w]; eigen_smooth: relu of the first principal component
    of its terms (pytorch-grad-cam's eigen_smooth) instead of their channel sum."""
    record = METHODS[method]
    if opts.get("eigen_smooth"):
        return F.relu(first_component(record.terms(acts, grads, weights)))
    return record.weigh(acts, grads, weights)


def feature_maps(head, feats, method, targets, size, opts):
    """CAM-like methods from features [B,C,h,w] -> MapResult on the head's device."""
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
    record = METHODS[method]
    # one backward per batch: d(sum_i logit_i,t_i)/dA_i = d(logit_i,t_i)/dA_i (independent images)
    score = (record.objective(logits, tgt, opts) if record.objective else
             logits.gather(1, tgt[:, None])[:, 0]).sum()
    inputs = [acts[name] for name in layers]
    grads = torch.autograd.grad(score, inputs, create_graph=record.hessian)
    if record.hessian:
        grads = shapley_gradients(inputs, grads)
    with torch.no_grad():
        per_layer = [weigh(method, opts, acts[name].detach(), g.detach(), None)
                     for name, g in zip(layers, grads, strict=True)]
        raw, raw_native = combine(method, per_layer, opts, x.shape[-2:])
        maps = normalize(raw, opts["normalize_by"])
    return MapResult(raw, maps, logits.detach(), tgt, method, opts, raw_native)


def shapley_gradients(acts, grads):
    """ShapleyCAM's gradients g - H A / 2 (H: the Hessian of the score w.r.t. A; one more backward,
    of g . A). A piecewise-linear path from A to the logit (ReLU, max pool, linear) has H = 0."""
    live = [i for i, g in enumerate(grads) if g.requires_grad]
    hvps = torch.autograd.grad([grads[i] for i in live], [acts[i] for i in live],
                               grad_outputs=[acts[i].detach() for i in live],
                               allow_unused=True) if live else []
    out = [g.detach() for g in grads]
    for i, h in zip(live, hvps, strict=True):
        if h is not None:
            out[i] = out[i] - 0.5 * h
    return out


def activations(model, x, layers):
    """One forward without a graph -> ({name: act}, logits); layers: stages and/or classmaps."""
    stages = [name for name in layers if name != "classmaps"]
    with torch.no_grad():
        feats, acts = model.backbone.forward_with(x, stages, graph=None)
        _, acts["classmaps"], logits = model.head.forward_maps(feats)
    return acts, logits


def activation_maps(model, x, method, targets, opts):
    """Methods of the activations alone (one forward, no graph) -> MapResult on x's device."""
    layers = layers_of(method, opts)
    acts, logits = activations(model, x, layers)
    tgt = targets_of(targets, logits)
    with torch.no_grad():
        per_layer = [weigh(method, opts, acts[name], None, None) for name in layers]
        raw, raw_native = combine(method, per_layer, opts, x.shape[-2:])
        maps = normalize(raw, opts["normalize_by"])
    return MapResult(raw, maps, logits, tgt, method, opts, raw_native)


def score_maps(model, x, method, targets, opts):
    """Channel weights from extra forwards (the record's channel_weights: masked images for the
    Score-CAM family, ablated channels for Ablation-CAM) -> MapResult on x's device."""
    layers = layers_of(method, opts)
    acts, logits = activations(model, x, layers)
    tgt = targets_of(targets, logits)
    channel_weights = METHODS[method].channel_weights
    with torch.no_grad():
        per_layer = [weigh(method, opts, acts[name], None,
                           channel_weights(model, x, acts[name], tgt, opts, name))
                     for name in layers]
        raw, raw_native = combine(method, per_layer, opts, x.shape[-2:])
        maps = normalize(raw, opts["normalize_by"])
    return MapResult(raw, maps, logits, tgt, method, opts, raw_native)
