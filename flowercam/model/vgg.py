"""The frozen ImageNet VGG16 feature extractor: weights from a local file or torchvision's
download, and the activations the map methods read.

    export BACKBONE_WEIGHTS=../shared/weights/vgg16_imagenet_features.pth
    python -c "from flowercam.model import vgg; print(vgg.load_backbone().backbone_id)"
    python -c "from flowercam.model import vgg; print(vgg.STAGES)"
"""

import copy
import hashlib
import os

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import VGG16_Weights, vgg, vgg16

from flowercam.core import UserError, load_torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SIZE = 256
FEATURE_SHAPE = (512, 7, 7)
TORCHVISION_ID = "vgg16-imagenet1k-v1"
RANDOM_ID = "vgg16-random"
# index in vgg16().features of a layer whose output maps can use: stageN = the ReLU that ends
# stage N, before its max pool (the LayerCAM paper's); poolN = that max pool's output (the report's
# stages 3 and 4: 256x32x32 and 512x16x16 at 256 px)
STAGES = {"stage3": 15, "stage4": 22, "stage5": 29, "pool3": 16, "pool4": 23}
# where a head reads the backbone: pool5 = the report's (pool5, then adaptive average to 7x7);
# conv5_3 = relu5_3's output, no pool5 (the CAM paper's cut: 14x14 at 224 px, 16x16 at 256 px)
CUTS = ("pool5", "conv5_3")
DEFAULT_CUT = "pool5"
# the largest |weight| a backbone or head file may hold: ImageNet VGG16's is 38.4, the report's
# CAM head's 0.38; far beyond (e.g. weights x1e38) activations and logits overflow to inf/NaN
MAX_ABS_WEIGHT = 1e6
_CUT_END = {"pool5": 31, "conv5_3": 30}  # layers of vgg16().features run for each cut


def check_cut(cut) -> str:
    if cut not in CUTS:
        raise UserError(f"unknown backbone cut {cut!r}: use one of {', '.join(CUTS)}")
    return cut


def feature_shape(cut=DEFAULT_CUT, size=INPUT_SIZE) -> tuple[int, int, int]:
    """(channels, h, w) the head reads at `cut` for size x size inputs."""
    if check_cut(cut) == "pool5":
        return FEATURE_SHAPE
    return (512, size // 16, size // 16)  # four 2x2 max pools before relu5_3


def pool5_from_conv5_3(feats):
    """conv5_3 features [B,512,h,w] -> the pool5 cut's [B,512,7,7] (pool5 = 2x2 max pool, then
    the adaptive average): one conv5_3 cache could serve both cuts (README "Finer maps")."""
    return F.adaptive_avg_pool2d(F.max_pool2d(feats, 2), 7)

def resolve_backbone_weights(path=None):
    """--backbone-weights flag, else env BACKBONE_WEIGHTS, else None (= torchvision download)."""
    return os.fspath(path) if path else (os.environ.get("BACKBONE_WEIGHTS") or None)


def _file_id(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"vgg16-file-{digest.hexdigest()[:16]}"


def _features_state_dict(path):
    """Read a VGG16 (full or features-only, with or without 'features.') state dict from `path`."""
    sd = load_torch(path, "backbone weights", "pass --backbone-weights PATH to a VGG16 state "
                    "dict (e.g. ../shared/weights/vgg16_imagenet_features.pth)",
                    "pass a VGG16 state dict saved with torch.save")
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise UserError(f"backbone weights {path} is not a state dict: pass a VGG16 state dict")
    sd = {k.removeprefix("features."): v for k, v in sd.items() if not k.startswith("classifier.")}
    for name, tensor in sd.items():
        if torch.is_tensor(tensor) and tensor.is_floating_point() and not (
                torch.isfinite(tensor).all() and tensor.abs().max() <= MAX_ABS_WEIGHT):
            raise UserError(f"backbone weights {path} hold non-finite or overflowing weights "
                            f"({name}): pass the VGG16 weights file unchanged")
    return sd


def channels_last(x):
    """x [B,C,H,W] laid out channels-last on the CPU and CUDA: VGG16's convolutions then run
    ~1.6x faster on 2 CPU cores (oneDNN) and 1.28x on an H200 (cuDNN; python -m benchmarks.cams
    --only layout); the values move by float rounding only. Other devices: left as it comes."""
    fast = x.device.type in ("cpu", "cuda")
    return x.contiguous(memory_format=torch.channels_last) if fast else x


class Backbone(nn.Module):
    """VGG16 .features + AdaptiveAvgPool2d(7); frozen and always in eval mode.

    state_dict: features state dict (keys "0.weight".."28.bias"); None = seeded random init (tests).
    cut: where its output is read (CUTS); at(cut) gives the same layers read elsewhere.
    """

    cut = DEFAULT_CUT

    def __init__(self, state_dict=None, backbone_id=None):
        super().__init__()
        self.features = vgg.make_layers(vgg.cfgs["D"])
        self.pool = nn.AdaptiveAvgPool2d(7)
        if state_dict is None:
            for m in self.features:  # torchvision's VGG init: random activations keep their scale
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                    nn.init.zeros_(m.bias)
        else:
            self.features.load_state_dict(state_dict)
        self.backbone_id = backbone_id or (RANDOM_ID if state_dict is None else "vgg16-state-dict")
        self.requires_grad_(False)
        self.eval()

    def train(self, mode=True):
        # frozen feature extractor: stays in eval mode even when a parent calls .train()
        return super().train(False)

    def at(self, cut):
        """This backbone read at `cut`: a shallow copy sharing the frozen layers (no new weights),
        so one loaded backbone serves heads of every cut."""
        if check_cut(cut) == self.cut:
            return self
        view = copy.copy(self)  # shares self._modules: the same layer objects
        view.cut = cut
        return view

    def cut_layers(self):
        """The layers of .features that run before the cut (the rest are never used): a driver
        that runs the backbone layer by layer (FullGrad, Ablation-CAM) runs these, then readout."""
        return self.features[:_CUT_END[self.cut]]

    def readout(self, h):
        """The output of cut_layers() -> the features the head reads (pool5: the 7x7 average)."""
        return self.pool(h) if self.cut == "pool5" else h

    def forward(self, x):
        """x [B,3,H,W] ImageNet-normalised -> feats at the cut: [B,512,7,7] (pool5) or
        [B,512,H/16,W/16] (conv5_3)."""
        return self.readout(self.cut_layers()(channels_last(x)))

    def forward_with(self, x, layers, graph="stages", start=0):
        """-> (feats at the cut (forward), {name: activation [B,K,h,w]} of the named stages).

        graph "stages": no graph up to the earliest named stage, which is detached and marked
        requires_grad; one graph from there to the output (frozen net or not; the batched drivers).
        graph "input": a graph from x, as the report's loop (x requires grad). None: no graph.
        start: x is features[:start] of the images, not the images (a prefix computed before:
        the sanity checks reuse the trained layers below a randomised block); the same values.
        """
        unknown = [name for name in layers if name not in STAGES]
        if unknown:
            raise UserError(f"unknown backbone layer {unknown}: use {', '.join(STAGES)}")
        at = {STAGES[name]: name for name in layers}
        if start and (graph == "input" or min(at, default=start) < start - 1):
            raise ValueError(f"a pass from layer {start} has no graph from the input and no "
                             f"stage below it ({list(layers)})")
        first = min(at, default=-1) if graph == "stages" else -1
        x = channels_last(x)
        with torch.no_grad():
            h = self.features[start : first + 1](x)
        if first >= 0:
            h = h.detach().requires_grad_()
        acts = {at[first]: h} if first >= 0 else {}
        if first < 0 and start - 1 in at:  # the prefix itself is a named stage
            acts[at[start - 1]] = x
        with torch.set_grad_enabled(graph is not None):
            h = x if first < 0 else h
            for i in range(max(first + 1, start), _CUT_END[self.cut]):
                h = self.features[i](h)
                if i in at:
                    acts[at[i]] = h
            return self.readout(h), acts


def load_backbone(weights=None, device="cpu"):
    """weights: local state dict path; None = env BACKBONE_WEIGHTS, else torchvision download."""
    path = resolve_backbone_weights(weights)
    if path is None:
        try:
            sd = vgg16(weights=VGG16_Weights.IMAGENET1K_V1).features.state_dict()
        except Exception as err:
            raise UserError(f"cannot download VGG16 ImageNet weights ({type(err).__name__}): "
                            "offline? pass --backbone-weights PATH or set BACKBONE_WEIGHTS"
                            ) from None
        return Backbone(sd, TORCHVISION_ID).to(device)
    sd = _features_state_dict(path)
    try:
        backbone = Backbone(sd, _file_id(path))
    except RuntimeError as err:  # missing / unexpected keys or wrong shapes
        why = str(err).strip().splitlines()[-1].strip()[:80]
        raise UserError(f"backbone weights {path} do not match VGG16 features ({why}): "
                        "pass a VGG16 state dict") from None
    return backbone.to(device)  # a bad device is its own error, never a weights mismatch


def block_convs(features):
    """VGG16 .features -> {"block1": [conv indices], ..., "block5": [...]}, split at max pools
    (the blocks of the sanity checks' cascading randomisation)."""
    blocks, current = {}, []
    for i, layer in enumerate(features):
        if isinstance(layer, nn.Conv2d):
            current.append(i)
        elif isinstance(layer, nn.MaxPool2d):
            blocks[f"block{len(blocks) + 1}"] = current
            current = []
    return blocks
