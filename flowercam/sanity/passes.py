"""The backbone passes of evaluate.py --sanity: as few as the randomised states allow, with the
maps of a pass per method (tests/test_sanity_pass.py checks they are the same).

    python evaluate.py -d model/RUN --sanity --limit 2 --no-data-randomisation
    python -m pytest tests/test_sanity_pass.py -q

Per batch, Prefix keeps the trained backbone's activations at each of its prefix_ends (VGG16:
after each max pool; a backbone without "prefix" in its capabilities: the images only), computed
once without a graph on first need: every state that re-initialises only blocks above an end
starts there (VGG16's independent:block5 runs block5 alone; a head-only state runs nothing below
the stages LayerCAM reads). Per state, StatePass runs ONE forward from there, with a graph from
the stages the first gradient method reads (VGG16's LayerCAM: pool3, pool4); its features also
serve every method that reads only the class maps (FixedFeatures), so a randomised backbone
costs one forward and one backward per batch, not two forwards and one backward.
"""

import torch
from torch import nn

from flowercam.cam import compute, methods


class FixedFeatures(nn.Module):
    """A stand-in backbone returning features already computed for this batch (the feature cache,
    or one pass of a randomised backbone), shared by every method that reads only the class maps:
    one backbone pass per state and batch instead of one per method."""

    def __init__(self, feats, backbone):
        super().__init__()  # the features' backbone: its id and cut (which features these are)
        self.feats, self.backbone_id, self.cut = feats, backbone.backbone_id, backbone.cut
        self.real = getattr(backbone, "real", backbone)  # what its stages are (methods.layer_spec)

    def forward(self, x):
        if len(x) != len(self.feats):
            raise ValueError(f"{len(x)} images for {len(self.feats)} fixed feature rows")
        return self.feats

    def forward_with(self, x, layers, graph="stages"):
        if layers:
            raise ValueError(f"fixed features have no stage {layers[0]}")
        return self.forward(x), {}


class Prefix:
    """The trained backbone's first k layers of one batch x [B,3,H,W] at its prefix_ends k,
    computed without a graph on first need, each from the longest one known below it, in the
    backbone's own layout (Backbone.layout), so a pass from a prefix equals one from x exactly."""

    def __init__(self, backbone, x):
        self.backbone, self.x, self.ends = backbone, x, backbone.prefix_ends()
        self.known = {0: backbone.layout(x)}

    def at(self, k):
        if k not in self.known:
            below = max(j for j in self.known if j < k)
            with torch.no_grad():
                self.known[k] = self.backbone.run_prefix(self.known[below], below, k)
        return self.known[k]


def random_from(backbone, layers):
    """The longest prefix below the first re-initialised module of `layers` (block names of the
    backbone's cascade, top first); None when they are all in the head."""
    blocks = [name for name, _ in backbone.cascade()]
    starts = [backbone.block_start(name) for name in layers if name in blocks]
    return min(starts, default=None)


def planned_stages(rows, options_of, backbone):
    """The backbone stages of the first gradient method that reads the backbone (LayerCAM:
    pool3, pool4), in the order its driver asks for them: the one pass keeps their graph."""
    for row in rows:
        if row not in methods.METHODS or methods.METHODS[row].kind != "gradients":
            continue
        opts = methods.resolve_options(row, options_of(row), backbone)
        if not compute.head_only(row, opts):
            return tuple(n for n in methods.layers_of(row, opts) if n != "classmaps")
    return ()


class StatePass(nn.Module):
    """The backbone of one state on one batch: forward and forward_with of the batch's images
    (`prefix.x`, by identity) start at the longest trained prefix below both the first
    re-initialised layer (random_at; None = none) and the stages asked for; the planned stages'
    pass is run once and handed to the first forward_with that asks for exactly them (its graph
    is used up by that method's backward). Any other input runs the real backbone."""

    def __init__(self, backbone, prefix, random_at, stages):
        super().__init__()
        self.real, self.prefix, self.random_at, self.stages = backbone, prefix, random_at, stages
        self.backbone_id, self.cut = backbone.backbone_id, backbone.cut
        self.shared, self.handed = None, False

    def forward_replacing(self, x, stage, act):
        return self.real.forward_replacing(x, stage, act)

    def forward_keeping_biases(self, x):
        return self.real.forward_keeping_biases(x)

    def _pass(self, layers, graph):
        needed = min([self.real.stage_end(name) for name in layers],
                     default=max(self.prefix.ends))
        if self.random_at is not None:
            needed = min(needed, self.random_at)
        start = max(k for k in self.prefix.ends if k <= needed)
        return self.real.forward_with(self.prefix.at(start), layers, graph, start=start)

    def _planned(self):
        if self.shared is None:
            self.shared = self._pass(self.stages, "stages" if self.stages else None)
        return self.shared

    def forward(self, x):
        if x is not self.prefix.x:
            return self.real(x)
        return self._planned()[0].detach()

    def forward_with(self, x, layers, graph="stages"):
        if x is not self.prefix.x or graph == "input":
            return self.real.forward_with(x, layers, graph)
        if graph == "stages" and tuple(layers) == self.stages and not self.handed:
            self.handed = True
            feats, acts = self._planned()
            return feats, dict(acts)  # a copy: the driver adds its class maps
        return self._pass(layers, graph)
