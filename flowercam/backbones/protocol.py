"""The backbone protocol: what a frozen feature extractor tells and does for the heads, the map
drivers, the feature cache, the checkpoints and the sanity cascade (docs/backbones.md).

    python -c "from flowercam.backbones import registry as r; print(r.load_backbone('vgg16',
        '../shared/weights/vgg16_imagenet_features.pth').shapes())"

A backbone is an nn.Module, frozen (no parameter requires grad) and always in eval mode, with:
  name, input_size, mean, std     the ImageNet preprocessing it was trained with
  stages {name: channels}         activations a map can read, input side first
  cuts, default_cut, cut          where a head reads it (forward's output); at(cut) views another
  backbone_id                     the weights id: keys the feature cache, recorded in checkpoints
  forward(x) -> [B,C,h,w]         the features at the cut
  forward_with(x, layers, graph, start) -> (feats, {stage: [B,K,h,w]})   activation capture
  cascade() -> ((block, [modules]), ...)   the randomisation cascade, top (output) block first
  reinit(module)                  a module of the cascade re-initialised (the caller seeds)
  shapes(size) -> {stage or cut: (C,h,w)}  from one dry run at size x size
  channels, min_size, storage    the cut's channels (a head's input), the smallest input side,
                                 the cache's numpy dtype of the cut's rows
  map_stages, pixel_stages       LayerCAM's default stages (with the class maps), the per-pixel
                                 classifier's (few-shot rows, segmenter); fusion_stage_sets:
                                 stages fused 0.4/0.4/0.2
  capabilities                   "conv_biases" (FullGrad), "prefix" (the sanity prefixes)
  forward_replacing(x, stage, act) -> the cut's features with the stage's output replaced
  forward_keeping_biases(x) -> (feats, [(conv, its output z)])   FullGrad ("conv_biases")
  prefix_ends, run_prefix, stage_end, block_start, layout        the sanity prefixes ("prefix")
"""

import contextlib
import copy
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from flowercam.core import UserError, load_torch
from flowercam.model.vgg import IMAGENET_MEAN, IMAGENET_STD

# the toolkit's images are normalised with ImageNet's mean and std (flowercam/data/dataset.py);
# a backbone trained with other statistics converts them in its forward (an affine map)
INPUT_MEAN, INPUT_STD = IMAGENET_MEAN, IMAGENET_STD
GRAPHS = ("stages", "input", None)  # forward_with's graph modes (see Backbone.forward_with)


@dataclass(frozen=True)
class Entry:
    """A registry line's target: load(weights, device) the ImageNet backbone (weights: a local
    file, None = the library's own download) or random(seed, device) a seeded random one (tests)."""

    load: Callable
    random: Callable


class Backbone(nn.Module, ABC):
    """The protocol every backbone implements; subclasses set the class attributes and
    backbone_id, and define forward, forward_with, cascade and reinit."""

    name: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    stages: dict[str, int]  # stage name -> channels, input side first
    cuts: tuple[str, ...]
    default_cut: str
    cut: str
    backbone_id: str
    entry_name: str | None = None  # its registry name when not its name (see key)
    weights_sha256: str | None = None  # of the weights file it was loaded from (None: none)
    min_size: int = 32  # the smallest input side the network takes
    capabilities: frozenset = frozenset()  # of "conv_biases", "prefix" (see the module doc)

    @property
    def key(self) -> str:
        """The registry name it was loaded by (recorded in checkpoints as their backbone)."""
        return self.entry_name or self.name

    @property
    def channels(self) -> int:
        """Channels of forward's output at the cut: a head's input."""
        return self.shapes(self.min_size)[self.cut][0]

    @property
    def map_stages(self) -> tuple[str, ...]:
        """The stages LayerCAM fuses with the class maps by default: the two before the last."""
        return tuple(self.stages)[-3:-1]

    @property
    def fusion_stage_sets(self) -> tuple[tuple[str, ...], ...]:
        """Stage pairs that, with the class maps, LayerCAM fuses 0.4/0.4/0.2 by default."""
        return (self.map_stages,)

    @property
    def pixel_stages(self) -> tuple[str, ...]:
        """The stages the per-pixel classifier reads (the few-shot rows, the segmenter;
        flowercam.segment.pixels): the last three."""
        return tuple(self.stages)[-3:]

    def storage(self, cut=None) -> str:
        """numpy dtype of the feature cache's rows at `cut` (default: this view's)."""
        return "float32"

    def cache_fields(self, size) -> dict:
        """What the feature cache key holds besides the weights id, input size and images: the
        cut, the rows' storage and shape (C, h, w) at size x size inputs."""
        return {"cut": self.cut, "storage": self.storage(),
                "row_shape": list(self.shapes(size)[self.cut])}

    def train(self, mode=True):
        # frozen feature extractor: stays in eval mode even when a parent calls .train()
        return super().train(False)

    def check_cut(self, cut) -> str:
        if cut not in self.cuts:
            raise UserError(f"unknown cut {cut!r} of backbone {self.name}: use one of "
                            f"{', '.join(self.cuts)}")
        return cut

    def check_stages(self, layers):
        unknown = [name for name in layers if name not in self.stages]
        if unknown:
            raise UserError(f"unknown layer {unknown} of backbone {self.name}: use "
                            f"{', '.join(self.stages)}")

    def at(self, cut):
        """This backbone read at `cut`: a shallow copy sharing the frozen layers (no new weights),
        so one loaded backbone serves heads of every cut."""
        if self.check_cut(cut) == self.cut:
            return self
        view = copy.copy(self)  # shares self._modules: the same layer objects
        view.cut = cut
        return view

    def shapes(self, size=None) -> dict[str, tuple[int, int, int]]:
        """{stage: (C, h, w)} and {cut: (C, h, w)} for size x size inputs (default input_size),
        measured by one forward of zeros: exact for any padding or rounding of the network."""
        size = size or self.input_size
        param = next(self.parameters())
        x = torch.zeros(1, 3, size, size, dtype=param.dtype, device=param.device)
        out = {}
        with torch.no_grad():
            for cut in self.cuts:
                feats, acts = self.at(cut).forward_with(x, list(self.stages), graph=None)
                out[cut] = tuple(feats.shape[1:])
            out.update({name: tuple(a.shape[1:]) for name, a in acts.items()})
        return out

    @abstractmethod
    def forward(self, x):
        """x [B,3,H,W] normalised with mean/std -> the features at the cut [B,C,h,w]."""

    @abstractmethod
    def forward_with(self, x, layers, graph="stages", start=0):
        """-> (forward(x), {stage: activation [B,K,h,w]} of the named stages in `layers`).

        graph "stages": no graph up to the earliest named stage, whose activation is a leaf that
        requires grad; one graph from there to the output (what the batched drivers use).
        graph "input": a graph from x (the caller makes x require grad). None: no graph.
        start: x is the output of the first `start` layers, not the images (a prefix reused by
        the sanity checks); a backbone without prefixes accepts only 0.
        """

    @abstractmethod
    def forward_replacing(self, x, stage, act):
        """forward(x) with the output of `stage` replaced by act [B,K,h,w] (the images x only
        give what act does not: a ViT's class token): the rest of the network after the stage,
        as Ablation-CAM runs it. No graph is needed."""

    def forward_keeping_biases(self, x):
        """-> (forward(x) with a graph from x, [(conv with a bias, its output z)] in network
        order): FullGrad's bias terms. Only a backbone with "conv_biases" in capabilities."""
        raise UserError(f"backbone {self.name} does not give its conv biases' outputs: FullGrad "
                        "needs a backbone whose convolutions carry biases (vgg16)")

    # the sanity prefixes: a backbone with "prefix" runs from a stored partial pass
    def prefix_ends(self) -> list[int]:
        """Where a stored prefix can end (0 = the images)."""
        return [0]

    def run_prefix(self, h, start, end):
        """The layers start..end on a prefix h ending at start."""
        if start == end:
            return h
        raise ValueError(f"backbone {self.name} has no prefixes ({start}..{end})")

    def stage_end(self, name) -> int:
        """The longest prefix a pass reading `name` can start from."""
        return 0

    def block_start(self, block) -> int:
        """The longest prefix below the first module of cascade block `block`."""
        return 0

    def layout(self, x):
        """The images as the network lays them out in memory (prefix 0)."""
        return x

    @abstractmethod
    def cascade(self):
        """((block name, [modules with parameters]), ...) top (output) block first: the layers a
        cascading model randomisation re-initialises, one block more at each depth."""

    @abstractmethod
    def reinit(self, module):
        """Re-initialise one module of cascade() in place, as the network was before training;
        the caller seeds torch's generator."""


@contextlib.contextmanager
def seeded(seed):
    """torch's CPU generator seeded inside the block; the caller's random state is kept."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def state_dict_id(name, module) -> str:
    """name-<16 hex>: a hash of the module's state dict (keys, dtypes, shapes, bytes), so the same
    weights get the same id however they were loaded (file, download or seeded init)."""
    digest = hashlib.sha256()
    for key, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{key}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return f"{name}-{digest.hexdigest()[:16]}"


def read_state_dict(path, name) -> dict:
    """A state dict saved with torch.save at `path` (also {"state_dict": ...}); UserError (one
    line) when it is missing or unreadable."""
    sd = load_torch(path, "backbone weights", f"pass --backbone-weights PATH to a {name} state "
                    "dict", f"pass a {name} state dict saved with torch.save")
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(torch.is_tensor(v) for v in sd.values()):
        raise UserError(f"backbone weights {path} is not a state dict: pass a {name} state dict")
    return sd
