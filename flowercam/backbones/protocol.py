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
"""

import contextlib
import copy
import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from flowercam.core import UserError

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


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"backbone weights {path} not found: pass --backbone-weights PATH to a "
                        f"{name} state dict")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(f"cannot read backbone weights {path} ({type(err).__name__}): pass a "
                        f"{name} state dict saved with torch.save") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(torch.is_tensor(v) for v in sd.values()):
        raise UserError(f"backbone weights {path} is not a state dict: pass a {name} state dict")
    return sd
