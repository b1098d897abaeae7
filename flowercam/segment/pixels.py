"""The per-pixel foreground classifier on frozen backbone stages: the one architecture of the
few-shot rows (flowercam.metrics.fewshot, trained on true masks) and of the segmenter
(flowercam.segment.segmenter, trained on pseudo-masks). Logistic regression = a 1x1 conv on
standardised activations of several stages upsampled to side x side; L-BFGS, classes weighted
equally. The stages: PixelSettings.layers, by default (None) the backbone's pixel_stages
(VGG16: stage3 stage4 stage5, i.e. conv3_3 conv4_3 conv5_3), resolved where the features are
computed (resolve).

    python -c "from flowercam.segment import pixels; print(pixels.DEFAULT)"

The map: P(flower) upsampled (bilinear) to the input size; a probability, not min-max normalised.
"""

import dataclasses

import torch
import torch.nn.functional as F

from flowercam.core import UserError


@dataclasses.dataclass(frozen=True)
class PixelSettings:
    layers: tuple[str, ...] | None = None  # None: the backbone's pixel_stages (resolve)
    side: int = 64  # activations upsampled to side x side
    pixels_per_image: int = 1024  # sampled training pixels of each image
    iterations: int = 100  # L-BFGS
    weight_decay: float = 1e-3
    seed: int = 0


DEFAULT = PixelSettings()


def resolve(s: PixelSettings, backbone) -> PixelSettings:
    """s with its layers named: given, else the backbone's pixel_stages; UserError (one line)
    when the backbone has no such stage."""
    layers = tuple(backbone.pixel_stages if s.layers is None else s.layers)
    backbone.check_stages(layers)
    return s if s.layers == layers else dataclasses.replace(s, layers=layers)


def pixel_features(backbone, images, s: PixelSettings = DEFAULT):
    """images [B,3,H,W] ImageNet-normalised -> [B,C,side,side] activations of s.layers (None:
    the backbone's pixel_stages)."""
    s = resolve(s, backbone)
    with torch.no_grad():
        _, acts = backbone.forward_with(images, s.layers, graph=None)
        return torch.cat([F.interpolate(acts[name], size=(s.side, s.side), mode="bilinear",
                                        align_corners=False) for name in s.layers], 1)


@dataclasses.dataclass
class PixelMap:
    """A trained classifier: standardisation and the 1x1 conv's weights."""

    mean: torch.Tensor  # [C]
    std: torch.Tensor  # [C]
    weight: torch.Tensor  # [C]
    bias: torch.Tensor  # []
    settings: PixelSettings
    images: list  # the training item ids

    def logits(self, feats):
        """feats [B,C,s,s] (pixel_features) -> logits [B,s,s] (cpu float)."""
        z = (feats.cpu().float() - self.mean[:, None, None]) / self.std[:, None, None]
        return torch.einsum("bchw,c->bhw", z, self.weight) + self.bias

    def maps(self, backbone, images):
        """images [B,3,H,W] -> P(flower) [B,H,W] at the input size (cpu float)."""
        logits = self.logits(pixel_features(backbone, images, self.settings))
        up = F.interpolate(logits[:, None], size=images.shape[-2:], mode="bilinear",
                           align_corners=False)[:, 0]
        return up.sigmoid()


def fit(x, y, s: PixelSettings = DEFAULT, images=(), balanced=True):
    """Logistic regression of y [P] (1 flower, 0 not) on pixel features x [P,C], both classes
    weighted equally (balanced) or each pixel alike (the labels' own prior) -> PixelMap."""
    if y.sum() == 0 or y.sum() == len(y):
        raise UserError("the pixel classifier's training pixels hold one class only: add images "
                        "with both flower and background")
    x = x.float()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / std
    weights = (torch.where(y > 0, 0.5 / y.mean(), 0.5 / (1 - y.mean())) if balanced
               else torch.ones_like(y))
    torch.manual_seed(s.seed)
    w, b = torch.zeros(z.shape[1], requires_grad=True), torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=s.iterations, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(z @ w + b, y, weight=weights)
        loss = loss + s.weight_decay * (w * w).sum()
        loss.backward()
        return loss
    opt.step(closure)
    return PixelMap(mean, std, w.detach(), b.detach(), s, list(images))
