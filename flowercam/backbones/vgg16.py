"""VGG16, the report's backbone, under the protocol: flowercam.model.vgg's Backbone unchanged
(same layers, same forward and forward_with, same weights file and backbone_id), plus what the
protocol adds (input size, stages with channels, cuts, the randomisation cascade).

    python -c "from flowercam.backbones import vgg16; b = vgg16.load(
        '../shared/weights/vgg16_imagenet_features.pth'); print(b.backbone_id, b.shapes())"
"""

from torch import nn

from flowercam.backbones import protocol
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
    return backbone.to(device)


def random(seed=0, device="cpu") -> VGG16:
    """A seeded random VGG16 (torchvision's init), as vgg.Backbone() under torch.manual_seed."""
    with protocol.seeded(seed):
        return VGG16().to(device)


ENTRY = protocol.Entry(load, random)
