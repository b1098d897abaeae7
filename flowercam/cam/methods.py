"""CAM methods, one record each: how a method weighs activations, what it needs, its options.

    python -c "from flowercam.cam import methods; print({n: m.kind for n, m in \
methods.METHODS.items()})"
    python -c "from flowercam.cam import methods; print(methods.resolve_options('LayerCAM', {}))"

Adding a method: write its `weigh` function and add one `Method` to METHODS, by keyword, with its
kind and its options' checks (plus its test); the command-line choices, option checks and the
drivers (flowercam/cam/maps.py) read the record.
"""

import dataclasses
from collections.abc import Callable

import torch
import torch.nn.functional as F

from flowercam.backbones import registry
from flowercam.cam import ablation, eigen, noise
from flowercam.cam import gradients as G
from flowercam.cam.options import (
    Option,
    boolean,
    check_choice,
    choice,
    non_negative_int,
    number,
    positive_int,
)
from flowercam.cam.scorecam import scorecam, scorecam_weights
from flowercam.core import UserError
from flowercam.model.normalization import NORMALIZERS

# --- weigh functions: activations A [B,K,h,w] with the gradients g [B,K,h,w] of the target logit
# w.r.t. A (gradient methods) or per-channel weights w [B,K] (CAM: the linear layer's row of the
# target class) -> map [B,h,w]


def cam(acts, grads, weights):
    """CAM (Zhou et al. 2016): sum_k w_ck A_k, the linear layer's row for the target class."""
    return torch.einsum("bk,bkhw->bhw", weights, acts)


def gradcam(acts, grads, weights=None):
    """Grad-CAM (Selvaraju et al. 2017): relu(sum_k mean_ab(g_k) A_k)."""
    return F.relu(torch.einsum("bk,bkhw->bhw", grads.mean((2, 3)), acts))


def gradcampp_alpha(acts, grads):
    """Grad-CAM++ (Chattopadhyay et al. 2018, eq. 19): alpha_ij = g_ij^2 / (2 g_ij^2 +
    (sum_ab A_ab) g_ij^3), as pytorch-grad-cam (torchcam sums A_ab g_ab^3 instead).

    acts, grads [B,K,h,w] -> alpha [B,K,h,w]; 0 where the denominator is 0 (0/0 -> 0, not NaN).
    """
    g2 = grads.pow(2)
    denom = 2 * g2 + acts.sum((2, 3), keepdim=True) * g2 * grads
    safe = torch.where(denom != 0, denom, torch.ones_like(denom))
    return torch.where(denom != 0, g2 / safe, torch.zeros_like(denom))


def gradcampp(acts, grads, weights=None):
    """Grad-CAM++: relu(sum_k w_k A_k) with w_k = sum_ab alpha_kab relu(g_kab)."""
    w = (gradcampp_alpha(acts, grads) * F.relu(grads)).sum((2, 3))
    return F.relu(torch.einsum("bk,bkhw->bhw", w, acts))


def recam_published(acts, grads, weights):
    """ReCAM as published (Chen et al. 2022): relu(sum_k (W_sce * W)_tk M_k), one CAM with the
    product of the two classifiers' weights."""
    return F.relu(cam(acts, grads, weights))


def layercam(acts, grads, weights=None):
    """LayerCAM (Jiang et al. 2021): relu(sum_k relu(g_k) * A_k), element-wise weights.

    Default layers: the backbone's map_stages and the class maps (VGG16: pool3, pool4, the
    report's stages after its max pools; stage3, stage4 are the paper's, before pooling).
    """
    return F.relu((F.relu(grads) * acts).sum(1))


KINDS = ("features", "gradients", "activations", "scores", "noisy-gradients", "fullgrad")


@dataclasses.dataclass(frozen=True)
class Method:
    """One CAM method. kind (flowercam/cam/drivers.py picks its driver): "features" -> from backbone
    features (the feature cache works); "gradients" -> one forward + one backward per batch;
    "activations" -> one forward, no gradient; "scores" -> channel weights from extra forwards
    (masked images or ablated channels), no gradient; "noisy-gradients" -> the images and noisy
    copies, one forward + one backward; "fullgrad" -> input and bias gradients of every conv."""

    name: str
    weigh: Callable  # (acts [B,K,h,w], grads or None, weights [B,K] or None) -> [B,h,w]
    kind: str
    default_layers: tuple  # activations it weighs: backbone stages, "classmaps", "reweighted"
    layer_option: str | None = None  # option naming the layers: "layers" = a list, else one name
    fuses: bool = False  # several layers' maps fused as the report (see maps.fuse_layers)
    options: dict = dataclasses.field(default_factory=dict)  # its own options: name -> Option
    needs_head: str | None = None  # model_type the head must have, None = any head
    # CAM-like methods: the head's class weight matrix [C,C] whose target row weighs the maps
    class_weights: Callable = lambda head: head.fc.weight
    terms: Callable | None = None  # weighted activations [B,K,h,w] before the channel sum
    objective: Callable | None = None  # (logits, targets, opts) -> scores [B]; None = the logit
    hessian: bool = False  # ShapleyCAM: the gradient driver passes g - H A / 2
    channel_weights: Callable | None = None  # "scores": (model, x, acts, targets, opts, layer)
    needs_backbone: str | None = None  # a capability of the backbone (protocol.Backbone)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind {self.kind!r} is not one of {KINDS}")

    @property
    def from_features(self):
        """True when cached backbone features are enough (no images, no gradients)."""
        return self.kind == "features"

    @property
    def needs_gradients(self):
        return self.kind in ("gradients", "noisy-gradients", "fullgrad")

    @property
    def needs_images(self):
        return self.kind != "features"


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """What a backbone lets a method weigh: its stages (and the head's "classmaps"), LayerCAM's
    default stages, the stage pairs fused 0.4/0.4/0.2 with the class maps, its capabilities."""

    stages: tuple[str, ...]
    map_stages: tuple[str, ...]
    fusion_sets: tuple[tuple[str, ...], ...]
    capabilities: frozenset

    @property
    def layers(self):
        return (*self.stages, "classmaps")


def layer_spec(backbone=None) -> LayerSpec:
    """The LayerSpec of a backbone (a stand-in that reads one, e.g. the sanity passes', has it
    as .real); None = the default backbone's (its class: no weights are loaded)."""
    b = getattr(backbone, "real", backbone) if backbone is not None else registry.default_class()
    return LayerSpec(tuple(b.stages), tuple(b.map_stages), tuple(b.fusion_stage_sets),
                     frozenset(b.capabilities))


def layer_weights(weights, opts):
    """LayerCAM's fusion weights: None -> the report's 0.4/0.4/0.2 for two stages the backbone
    names (fusion_sets) and the class maps, else equal weights; otherwise one finite weight per
    layer."""
    layers = opts["layers"]
    if weights is None:
        same = (len(layers) == 3 and layers[-1] == "classmaps"
                and tuple(layers[:2]) in opts[FUSION_SETS])
        weights = REPORT_LAYER_WEIGHTS if same else [1 / len(layers)] * len(layers)
    if len(weights) != len(layers):
        raise UserError(f"{len(weights)} layer weights for {len(layers)} layers: "
                        "give one weight per layer")
    return [float(w) for w in weights]


FUSIONS = ("weighted", "max")
MAP_STAGES = "map-stages"  # in default_layers: the backbone's map_stages (LayerSpec)
FUSION_SETS = "fusion-sets"  # what the checks of layer_weights see of the LayerSpec
REPORT_LAYERS = (MAP_STAGES, "classmaps")  # LayerCAM's default, as the report computed it
REPORT_LAYER_WEIGHTS = (0.4, 0.4, 0.2)  # the report's fusion weights for either triple
EIGEN = {"eigen_smooth": Option(False, boolean("eigen_smooth"))}  # pytorch-grad-cam's option
LAYERCAM_OPTIONS = {
    "layer_weights": Option(None, layer_weights),
    "fusion": Option("weighted", choice("fusion", FUSIONS)),
    "tanh_gain": Option(2.0, lambda value, opts: float(value)),
    "layer_normalize": Option("minmax", choice("layer_normalize", NORMALIZERS)),
    **EIGEN,
}
BATCH = {"scorecam_batch": Option(64, positive_int("scorecam_batch"))}  # per extra forward
SEED = {"noise_seed": Option(0, non_negative_int("noise_seed"))}  # noisy methods' generator
ONE = {"kind": "gradients", "default_layers": ("classmaps",), "layer_option": "gradcam_layer"}
SCORES = {"kind": "scores", "default_layers": ("classmaps",), "layer_option": "scorecam_layer"}


METHODS = {m.name: m for m in (
    Method(name="CAM", weigh=cam, kind="features", default_layers=("classmaps",)),
    Method(name="ReCAM", weigh=cam, kind="features", default_layers=("reweighted",),
           needs_head="ReCAM"),
    Method(name="ReCAM-published", weigh=recam_published, kind="features",
           default_layers=("classmaps",), needs_head="ReCAM-published",
           class_weights=lambda head: head.map_weights()),
    Method(name="LayerCAM", weigh=layercam, kind="gradients", default_layers=REPORT_LAYERS,
           layer_option="layers", fuses=True, options=LAYERCAM_OPTIONS, terms=G.layercam_terms),
    Method(name="GradCAM", weigh=gradcam, **ONE, terms=G.gradcam_terms, options=EIGEN),
    Method(name="GradCAM++", weigh=gradcampp, **ONE, terms=G.gradcampp_terms, options=EIGEN),
    # 17 class maps -> 17 masked forwards per image; scorecam_layer="stage5" (conv5_3): 512
    Method(name="ScoreCAM", weigh=scorecam, **SCORES, options={**BATCH, **EIGEN},
           terms=G.score_terms, channel_weights=lambda model, x, acts, tgt, opts, layer:
           scorecam_weights(model, x, acts, tgt, opts["scorecam_batch"])),
    Method(name="HiResCAM", weigh=G.summed(G.hirescam_terms), **ONE, terms=G.hirescam_terms,
           options=EIGEN),
    Method(name="GradCAMElementWise", weigh=G.summed(G.elementwise_terms), **ONE,
           terms=G.elementwise_terms, options=EIGEN),
    Method(name="XGradCAM", weigh=G.summed(G.xgradcam_terms), **ONE, terms=G.xgradcam_terms,
           options=EIGEN),
    Method(name="EigenGradCAM", weigh=eigen.eigengradcam, **ONE),
    Method(name="ShapleyCAM", weigh=gradcam, **ONE, hessian=True, terms=G.gradcam_terms,
           options=EIGEN),
    Method(name="FinerCAM", weigh=gradcam, **ONE, objective=G.finer_score, terms=G.gradcam_terms,
           options={"finer_references": Option(3, positive_int("finer_references")),
                    "finer_alpha": Option(1.0, number("finer_alpha")), **EIGEN}),
    Method(name="EigenCAM", weigh=eigen.eigencam, **{**ONE, "kind": "activations"}),
    Method(name="KPCACAM", weigh=eigen.kpcacam, **{**ONE, "kind": "activations"}),
    Method(name="FEM", weigh=G.fem, **{**ONE, "kind": "activations"}),
    # 17 class maps -> 17 head runs per image; scorecam_layer="stage5": 512 runs of pool5 + head
    Method(name="AblationCAM", weigh=scorecam, **SCORES, terms=G.score_terms,
           channel_weights=ablation.ablation_weights, options={**BATCH, **EIGEN}),
    Method(name="SSCAM", weigh=scorecam, **SCORES, terms=G.score_terms,
           channel_weights=noise.sscam_weights,
           options={**BATCH, "ss_samples": Option(35, positive_int("ss_samples")),
                    "ss_std": Option(2.0, number("ss_std")), **SEED, **EIGEN}),
    Method(name="ISCAM", weigh=scorecam, **SCORES, terms=G.score_terms,
           channel_weights=noise.iscam_weights,
           options={**BATCH, "is_samples": Option(10, positive_int("is_samples")), **EIGEN}),
    Method(name="SmoothGradCAM++", weigh=G.summed(G.smooth_gradcampp_terms),
           **{**ONE, "kind": "noisy-gradients"}, terms=G.smooth_gradcampp_terms,
           options={"sgpp_samples": Option(4, positive_int("sgpp_samples")),
                    "sgpp_std": Option(0.3, number("sgpp_std")), **SEED, **EIGEN}),
    # the bias terms need convolutions with biases (VGG16's; BatchNorm nets and ViTs have none)
    Method(name="FullGrad", weigh=lambda maps, grads, weights: G.channel_scaled_sum(maps),
           kind="fullgrad", default_layers=(), needs_backbone="conv_biases"),
)}


def option_names():
    """Every option any method takes (normalize_by, layer options, own options), in order."""
    names = ["normalize_by"]
    for m in METHODS.values():
        names += [n for n in (m.layer_option, *m.options) if n and n not in names]
    return names


# what evaluate.py measures by default: the report's methods, named so that a method registered
# among them in METHODS does not silently join the defaults
REPORT_METHODS = ("CAM", "ReCAM", "ReCAM-published", "LayerCAM", "GradCAM", "GradCAM++", "ScoreCAM")


def applies(method, spec: LayerSpec) -> bool:
    """True when the backbone (its LayerSpec) has what the method needs."""
    need = METHODS[method].needs_backbone
    return need is None or need in spec.capabilities


def supported(model_type, only=None, backbone=None) -> list[str]:
    """The methods a head of this model_type on this backbone (None: the default) can give (of
    `only`, if given), in METHODS order."""
    spec = layer_spec(backbone)
    return [n for n, m in METHODS.items() if m.needs_head in (None, model_type)
            and applies(n, spec) and (only is None or n in only)]


def check_method(method, model_type, backbone=None):
    """UserError if `method` is unknown, a head of `model_type` cannot give it, or the backbone
    (None: not checked) lacks what it needs."""
    if method not in METHODS:
        raise UserError(f"unknown CAM method {method!r}: use one of {', '.join(METHODS)}")
    need = METHODS[method].needs_head
    if need and model_type != need:
        raise UserError(f"method {method} needs a {need} head, this model is "
                        f"{model_type}: use another method or train with {need}")
    if backbone is not None and not applies(method, layer_spec(backbone)):
        name = getattr(getattr(backbone, "real", backbone), "name", "?")
        raise UserError(f"method {method} needs a backbone with "
                        f"{METHODS[method].needs_backbone.replace('_', ' ')}, {name} has none: "
                        "use another method or backbone (docs/backbones.md)")


def _layers(record, value, spec):
    """The layer option's value (None = the record's default) -> a checked list of names."""
    if value is None:
        layers = [n for name in record.default_layers
                  for n in (spec.map_stages if name == MAP_STAGES else (name,))]
    else:
        layers = [value] if isinstance(value, str) else list(value)
    for name in layers:
        check_choice("layer", name, spec.layers)
    if not layers or len(set(layers)) != len(layers):
        raise UserError(f"layers {layers} must be distinct and non-empty: pick from "
                        f"{spec.layers}")
    return layers


def resolve_options(method, options, backbone=None):
    """Defaults + checks -> dict of this method's options only (normalize_by, its layer option,
    its own options, in that order). Options of other methods are checked by their own record,
    then dropped. backbone: whose stages the layers name (None: the default backbone's)."""
    record = METHODS[method]
    unknown = sorted(set(options) - set(option_names()))
    if unknown:
        raise UserError(f"unknown CAM option {unknown[0]!r}: use {', '.join(option_names())}")
    given = {k: v for k, v in options.items() if v is not None}
    check_choice("normalize_by", given.get("normalize_by", "minmax"), NORMALIZERS)
    spec = layer_spec(backbone)
    for other in METHODS.values():  # a bad value is an error whichever method it was meant for
        _own_options(other, given, spec)
    return _own_options(record, given, spec)


def _own_options(record, given, spec):
    opts = {"normalize_by": given.get("normalize_by", "minmax")}
    if record.layer_option == "layers":
        opts["layers"] = _layers(record, given.get("layers"), spec)
    elif record.layer_option:
        opts[record.layer_option] = _layers(record, given.get(record.layer_option), spec)[0]
    for name, option in record.options.items():
        opts[name] = option.check(given.get(name, option.default),
                                  {**opts, FUSION_SETS: spec.fusion_sets})
    return opts


def layer_options(method, layers):
    """A command's --layers as this method's layer option: {} when none are given or the method
    takes none; one layer for a one-layer method (several: UserError)."""
    option = METHODS[method].layer_option
    if not layers or not option:
        return {}
    if option == "layers":
        return {"layers": list(layers)}
    if len(layers) != 1:
        raise UserError(f"{method} weighs one layer, --layers gives {len(layers)}: give one "
                        "(e.g. --layers stage5) or measure it in its own run")
    return {option: layers[0]}


def layers_of(method, opts):
    """The layers a method weighs, given its resolved options -> list of names."""
    record = METHODS[method]
    value = opts.get(record.layer_option) if record.layer_option else None
    if value is None:
        return list(record.default_layers)
    return [value] if isinstance(value, str) else list(value)
