"""VGG16, the report's backbone, under the protocol: flowercam.model.vgg's Backbone unchanged
(same layers, same forward and forward_with, same weights file and backbone_id), plus what the
protocol adds (input size, stages with channels, cuts, the randomisation cascade).

    python -c "from flowercam.backbones import vgg16; b = vgg16.load(
        '../shared/weights/vgg16_imagenet_features.pth'); print(b.backbone_id, b.shapes())"
"""

import torch.nn.functional as F
from torch import nn

from flowercam.backbones import protocol
from flowercam.core import file_sha256
from flowercam.model import vgg

NAME = "vgg16"
# channels of vgg.STAGES' layers: relu3_3, relu4_3, relu5_3, pool3, pool4
STAGE_CHANNELS = {"stage3": 256, "stage4": 512, "stage5": 512, "pool3": 256, "pool4": 512}


class VGG16(vgg.Backbone, protocol.Backbone):
    """model.vgg.Backbone (first in the MRO: its forward, forward_with and at are today's) with the
    protocol's attributes; an instance is also a vgg.Backbone, so today's consumers accept it."""

    name = NAME
    input_size = vgg.INPUT_SIZE
    mean = vgg.IMAGENET_MEAN
    std = vgg.IMAGENET_STD
    stages = {name: STAGE_CHANNELS[name] for name in vgg.STAGES}
    cuts = vgg.CUTS
    default_cut = vgg.DEFAULT_CUT
    min_size = 32  # five 2x2 max pools
    capabilities = frozenset({"conv_biases", "prefix"})
    map_stages = ("pool3", "pool4")  # the report's LayerCAM stages, after the max pools
    # the report's 0.4/0.4/0.2 fusion: its stages, or the LayerCAM paper's (before the pools)
    fusion_stage_sets = (("pool3", "pool4"), ("stage3", "stage4"))
    pixel_stages = ("stage3", "stage4", "stage5")  # conv3_3, conv4_3, conv5_3 (ReLU outputs)
    # numpy dtype of a cut's cached rows: conv5_3 is 5.2x pool5's size, so 16 bits (float16, not
    # bfloat16: relu5_3 outputs are >= 0 and far below float16's 65504, float16 keeps 3 more
    # mantissa bits, and numpy has no bfloat16); README "Finer maps" measures what it changes
    STORAGE = {"pool5": "float32", "conv5_3": "float16"}

    @property
    def channels(self):
        return vgg.feature_shape(self.cut)[0]

    def storage(self, cut=None):
        return self.STORAGE[self.check_cut(cut or self.cut)]

    def cache_fields(self, size):
        """pool5 keys hold no cut, conv5_3's the cut and storage (their row shapes: row_shape):
        the keys of the caches built before the protocol, so they stay valid."""
        if self.cut == self.default_cut:
            return {}
        return {"cut": self.cut, "storage": self.storage()}

    def forward_replacing(self, x, stage, act):
        self.check_stages([stage])
        return self.readout(self.cut_layers()[vgg.STAGES[stage] + 1:](act))

    def forward_keeping_biases(self, x):
        """Layer by layer up to the cut, then its readout (at conv5_3 no pool5), with an
        out-of-place ReLU: VGG16's in-place ReLUs would overwrite z."""
        outs, h = [], x
        for layer in self.cut_layers():
            h = F.relu(h) if isinstance(layer, nn.ReLU) else layer(h)
            if isinstance(layer, nn.Conv2d) and layer.bias is not None:
                outs.append((layer, h))
        return self.readout(h), outs

    def prefix_ends(self):
        """[0, 5, 10, 17, 24]: feature indices right after each max pool but the last (pool5, at
        or after either cut): where a prefix features[:k] can end."""
        return [0] + [i + 1 for i, layer in enumerate(self.features)
                      if isinstance(layer, nn.MaxPool2d) and i + 1 < len(self.features)]

    def run_prefix(self, h, start, end):
        return self.features[start:end](h)

    def stage_end(self, name):
        return vgg.STAGES[name] + 1

    def block_start(self, block):
        return self.block_indices()[block][0]

    def layout(self, x):
        return vgg.channels_last(x)

    @classmethod
    def row_shape(cls, cut, size):
        """(C, h, w) of the cache rows at `cut` for size x size inputs (keys without a shape)."""
        return vgg.feature_shape(cut, size)

    def block_indices(self):
        """{"block1": [conv indices in .features], ..., "block5": [...]}: split at max pools."""
        return vgg.block_convs(self.features)

    def cascade(self):
        blocks = self.block_indices()
        return tuple((name, [self.features[i] for i in blocks[name]])
                     for name in sorted(blocks, reverse=True))  # block5 .. block1

    def reinit(self, module):
        # torchvision's VGG._initialize_weights for convs (what a random VGG16 starts from)
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(module.bias)


def load(weights=None, device="cpu") -> VGG16:
    """weights: a VGG16 state dict file; None = env BACKBONE_WEIGHTS, else torchvision's download
    (offline: one UserError line). The same weights and backbone_id as vgg.load_backbone."""
    loaded = vgg.load_backbone(weights, device="cpu")
    backbone = VGG16(loaded.features.state_dict(), loaded.backbone_id)
    path = vgg.resolve_backbone_weights(weights)
    backbone.weights_sha256 = file_sha256(path) if path else None
    return backbone.to(device)


def random(seed=0, device="cpu") -> VGG16:
    """A seeded random VGG16 (torchvision's init), as vgg.Backbone() under torch.manual_seed."""
    with protocol.seeded(seed):
        return VGG16().to(device)


ENTRY = protocol.Entry(load, random)
