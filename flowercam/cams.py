"""Class activation maps from a frozen-VGG16 Classifier: CAM, ReCAM, LayerCAM, Grad-CAM, Grad-CAM++.

    python -c "import cams; print(list(cams.METHODS))"
    .venv/bin/pytest tests/test_cams.py -q
    .venv/bin/python benchmark.py --backbone-weights ../shared/weights/vgg16_imagenet_features.pth

Notebook use:  model, settings = models.load_model("model/RUN/epoch_7.pth", "../shared/weights/...")
               res = cams.compute_maps(model, images, "LayerCAM")  # .raw .maps .logits .targets
Gradient methods run one forward and ONE backward per batch (torch.autograd.grad of the sum of the
target logits: images of a batch are independent in eval mode, so each image gets its own gradient).
"""

import dataclasses

import torch
import torch.nn.functional as F

from flowercam import models
from flowercam.models import NORMALIZERS, UserError, normalize

__all__ = ["METHODS", "NORMALIZERS", "MapResult", "check_method", "class_cams", "compute_maps",
           "compute_maps_from_features", "gradcampp_alpha", "normalize", "postprocess"]


# --- methods: how each weighs activations A [B,K,h,w] given gradients g [B,K,h,w] (of the target
# logit w.r.t. A) or the linear weights w [B,K] of the target class -> map [B,h,w]

def cam(acts, grads, weights):
    """CAM (Zhou et al. 2016): sum_k w_ck A_k, the linear layer's row for the target class."""
    return torch.einsum("bk,bkhw->bhw", weights, acts)


def gradcam(acts, grads, weights=None):
    """Grad-CAM (Selvaraju et al. 2017): relu(sum_k mean_ab(g_k) A_k)."""
    return F.relu(torch.einsum("bk,bkhw->bhw", grads.mean((2, 3)), acts))


def gradcampp_alpha(acts, grads):
    """Grad-CAM++ (Chattopadhyay et al. 2018, eq. 19): alpha = g^2 / (2 g^2 + sum_ab A g^3).

    acts, grads [B,K,h,w] -> alpha [B,K,h,w]; 0 where the denominator is 0 (0/0 -> 0, not NaN).
    """
    g2 = grads.pow(2)
    denom = 2 * g2 + (acts * g2 * grads).sum((2, 3), keepdim=True)
    safe = torch.where(denom != 0, denom, torch.ones_like(denom))
    return torch.where(denom != 0, g2 / safe, torch.zeros_like(denom))


def gradcampp(acts, grads, weights=None):
    """Grad-CAM++: relu(sum_k w_k A_k) with w_k = sum_ab alpha_kab relu(g_kab)."""
    w = (gradcampp_alpha(acts, grads) * F.relu(grads)).sum((2, 3))
    return F.relu(torch.einsum("bk,bkhw->bhw", w, acts))


def layercam(acts, grads, weights=None):
    """LayerCAM (Jiang et al. 2021): relu(sum_k relu(g_k) * A_k), element-wise weights."""
    return F.relu((F.relu(grads) * acts).sum(1))


METHODS = {"CAM": cam, "ReCAM": cam, "LayerCAM": layercam, "GradCAM": gradcam,
           "GradCAM++": gradcampp}
CLASS_MAP_METHODS = ("CAM", "ReCAM")  # no gradient: all C maps in one pass, from cached features
LAYERS = (*models.STAGES, "classmaps")
FUSIONS = ("weighted", "max")
DEFAULTS = {"normalize_by": "minmax", "layers": ("stage3", "stage4", "classmaps"),
            "layer_weights": (0.4, 0.4, 0.2), "fusion": "weighted", "tanh_gain": 2.0,
            "layer_normalize": "minmax", "gradcam_layer": "classmaps"}
OPTIONS = {"CAM": ("normalize_by",), "ReCAM": ("normalize_by",),
           "LayerCAM": ("normalize_by", "layers", "layer_weights", "fusion", "tanh_gain",
                        "layer_normalize"),
           "GradCAM": ("normalize_by", "gradcam_layer"),
           "GradCAM++": ("normalize_by", "gradcam_layer")}


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


def postprocess(maps, threshold=0.3, gain=1.5):
    """The report's visual clip: values < threshold -> 0, then x gain, clamped to 1 (new tensor)."""
    return torch.where(maps < threshold, torch.zeros_like(maps), maps * gain).clamp(max=1.0)


def check_method(method, settings):
    """UserError if `method` is unknown or the head described by `settings` cannot give it."""
    if method not in METHODS:
        raise UserError(f"unknown CAM method {method!r}: use one of {', '.join(METHODS)}")
    if method == "ReCAM" and settings.get("model_type") != "ReCAM":
        raise UserError(f"method ReCAM needs a ReCAM head, this model is "
                        f"{settings.get('model_type')}: use another method or train with ReCAM")


def _head_settings(head):
    return {"model_type": "ReCAM" if isinstance(head, models.ReCAMHead) else "CAM"}


def _check_choice(name, value, choices):
    if value not in choices:
        raise UserError(f"unknown {name} {value!r}: use one of {', '.join(map(str, choices))}")


def _resolve_options(method, options):
    """Defaults + checks; -> dict of this method's options only."""
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise UserError(f"unknown CAM option {unknown[0]!r}: use {', '.join(DEFAULTS)}")
    opts = {**DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    _check_choice("normalize_by", opts["normalize_by"], NORMALIZERS)
    _check_choice("layer_normalize", opts["layer_normalize"], NORMALIZERS)
    _check_choice("fusion", opts["fusion"], FUSIONS)
    _check_choice("gradcam_layer", opts["gradcam_layer"], LAYERS)
    layers = list(opts["layers"])
    for name in layers:
        _check_choice("layer", name, LAYERS)
    if not layers or len(set(layers)) != len(layers):
        raise UserError(f"layers {layers} must be distinct and non-empty: pick from {LAYERS}")
    weights = options.get("layer_weights")
    if weights is None:  # the report's 0.4/0.4/0.2 for its layers, else equal weights
        same = layers == list(DEFAULTS["layers"])
        weights = DEFAULTS["layer_weights"] if same else [1 / len(layers)] * len(layers)
    if len(weights) != len(layers):
        raise UserError(f"{len(weights)} layer weights for {len(layers)} layers: "
                        "give one weight per layer")
    opts.update(layers=layers, layer_weights=[float(w) for w in weights],
                tanh_gain=float(opts["tanh_gain"]))
    return {k: opts[k] for k in OPTIONS[method]}


def _targets(targets, logits):
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


def class_cams(head, feats, method="CAM"):
    """All C class maps in one pass: feats [B,512,h,w] -> [B,C,h,w] (CAM or ReCAM)."""
    check_method(method, _head_settings(head))
    with torch.no_grad():
        rew, maps, _ = head.forward_maps(feats)
        return head.cams(rew if method == "ReCAM" else maps)


def compute_maps_from_features(head, feats, method, targets=None, size=(256, 256), **options):
    """CAM / ReCAM from backbone features [B,512,h,w] (e.g. the feature cache) -> MapResult."""
    check_method(method, _head_settings(head))
    if method not in CLASS_MAP_METHODS:
        raise UserError(f"{method} needs gradients through the images: use compute_maps on images")
    opts = _resolve_options(method, options)
    x = feats.to(head.fc.weight.device)
    with torch.no_grad():
        rew, maps, logits = head.forward_maps(x)
        tgt = _targets(targets, logits)
        raw_native = METHODS[method](rew if method == "ReCAM" else maps, None, head.fc.weight[tgt])
        raw = upsample(raw_native, size)
        result = MapResult(raw, normalize(raw, opts["normalize_by"]), logits, tgt, method, opts,
                           raw_native)
    return result.to(feats.device)


def _capture(model, x, layers):
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


def _fuse(per_layer, opts, size):
    """LayerCAM fusion as the report: normalise each, upsample, weighted sum (or max), tanh(g x)."""
    ups = torch.stack([upsample(normalize(m, opts["layer_normalize"]), size) for m in per_layer])
    if opts["fusion"] == "max":
        fused = ups.max(0).values
    else:
        weights = torch.tensor(opts["layer_weights"], dtype=ups.dtype, device=ups.device)
        fused = torch.einsum("l,lbhw->bhw", weights, ups)
    return torch.tanh(opts["tanh_gain"] * fused) if opts["tanh_gain"] else fused


@torch.enable_grad()  # works inside a caller's torch.no_grad() too
def _gradient_maps(model, x, method, targets, opts):
    if torch.is_inference_mode_enabled():
        raise UserError(f"{method} needs gradients: call compute_maps outside "
                        "torch.inference_mode()")
    layers = opts["layers"] if method == "LayerCAM" else [opts["gradcam_layer"]]
    acts, logits = _capture(model, x, layers)
    tgt = _targets(targets, logits)
    # one backward per batch: d(sum_i logit_i,t_i)/dA_i = d(logit_i,t_i)/dA_i (independent images)
    score = logits.gather(1, tgt[:, None]).sum()
    grads = torch.autograd.grad(score, [acts[name] for name in layers])
    with torch.no_grad():
        fn = METHODS[method]
        pairs = zip(layers, grads, strict=True)
        per_layer = [fn(acts[name].detach(), g, None) for name, g in pairs]
        size = x.shape[-2:]
        if method == "LayerCAM":
            raw = _fuse(per_layer, opts, size)
            raw_native = per_layer[0] if len(layers) == 1 else raw  # fusion happens at input size
        else:
            raw_native = per_layer[0]
            raw = upsample(raw_native, size)
        maps = normalize(raw, opts["normalize_by"])
    return MapResult(raw, maps, logits.detach(), tgt, method, opts, raw_native)


def compute_maps(model, images, method, targets=None, **options):
    """images [B,3,H,W] normalised (any device) -> MapResult on the images' device.

    targets: None = predicted class, an int for all, or one per image (other length: UserError).
    options: normalize_by, layers, layer_weights, fusion, tanh_gain, layer_normalize, gradcam_layer.
    """
    check_method(method, _head_settings(model.head))
    opts = _resolve_options(method, options)
    x = images.to(model.head.fc.weight.device)
    if method in CLASS_MAP_METHODS:
        with torch.no_grad():
            feats = model.backbone(x)
        size = x.shape[-2:]
        result = compute_maps_from_features(model.head, feats, method, targets, size, **opts)
    else:
        result = _gradient_maps(model, x, method, targets, opts)
    return result.to(images.device)
