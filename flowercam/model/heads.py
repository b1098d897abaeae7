"""The trainable heads (the report's CAM and ReCAM, ReCAM as published, the CAM paper's) and the
classifier (frozen backbone + head).

    python -c "from flowercam.model import heads; print(heads.build_head(heads.HeadSettings('CAM', \
17)))"

The backbone is any of flowercam/backbones/ (a head reads its channels), checkpoints
flowercam/model/checkpoints.py.
"""

import dataclasses
import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from flowercam.core import UserError
from flowercam.model.normalization import NORMALIZERS, normalize

MODEL_TYPES = ("CAM", "ReCAM", "ReCAM-published", "CAM-paper")
CHANNELS = 512  # a head's input channels when none are given: the default backbone's
RECAM_LAMBDA = 1.0  # published ReCAM's weight of L_sce: 1 on VOC, 0.1 on COCO (Chen et al. 2022)


class CAMHead(nn.Module):
    """The report's baseCAM head: conv1x1 K->C + ReLU = class maps, GAP, Linear(C,C), no bias
    (K: the backbone's channels, 512 for VGG16)."""

    model_type = "CAM"

    def __init__(self, num_classes, in_channels=CHANNELS):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, num_classes, kernel_size=1)
        self.fc = nn.Linear(num_classes, num_classes, bias=False)

    def class_maps(self, feats):
        """feats [B,K,h,w] -> class maps [B,C,h,w] (non-negative)."""
        return F.relu(self.conv(feats))

    def classify(self, maps):
        """maps [B,C,h,w] -> logits [B,C] (GAP then the linear layer)."""
        return self.fc(maps.mean((2, 3)))

    def cams(self, maps):
        """All C CAMs in one pass: maps [B,C,h,w] -> [B,C,h,w]; spatial mean of [:, c] = logit c."""
        return torch.einsum("kc,bchw->bkhw", self.fc.weight, maps)

    def forward_maps(self, feats):
        """-> (maps the final CAM is taken from [B,C,h,w], class maps [B,C,h,w], logits [B,C])."""
        maps = self.class_maps(feats)
        return maps, maps, self.classify(maps)

    def forward(self, feats):
        return self.forward_maps(feats)[2]


class ReCAMHead(CAMHead):
    """ReCAM: the predicted class's CAM, normalised, multiplies all class maps, classified again."""

    model_type = "ReCAM"

    def __init__(self, num_classes, normalize_by="minmax", in_channels=CHANNELS):
        super().__init__(num_classes, in_channels)
        if normalize_by not in NORMALIZERS:
            raise UserError(f"unknown ReCAM normalize_by {normalize_by!r}: "
                            f"use {', '.join(NORMALIZERS)}")
        self.normalize_by = normalize_by

    def reweight(self, maps):
        """maps [B,C,h,w] -> (re-weighted maps [B,C,h,w], first-pass logits [B,C])."""
        base = self.classify(maps)
        pred = base.argmax(1)  # [B]
        cam = torch.einsum("bc,bchw->bhw", self.fc.weight[pred], maps)
        mask = normalize(cam, self.normalize_by)  # [B,h,w], per image
        return maps * mask[:, None], base

    def forward_maps(self, feats):
        maps = self.class_maps(feats)
        rew = self.reweight(maps)[0]
        return rew, maps, self.classify(rew)


class PublishedReCAMHead(CAMHead):
    """ReCAM as published (Chen et al., CVPR 2022) on the class maps M with W (= their W_bce):
    f_c = mean_hw(relu(W_c.M) / (max + 1e-5) * M), loss CE(W GAP(M), y) + lambda CE(W_sce f_y, y),
    final map relu((W_sce * W)_c . M); W_sce [C,C] is a new bias-free classifier."""

    model_type = "ReCAM-published"

    def __init__(self, num_classes, recam_lambda=RECAM_LAMBDA, in_channels=CHANNELS):
        super().__init__(num_classes, in_channels)
        if not (isinstance(recam_lambda, (int, float)) and 0 <= recam_lambda < float("inf")):
            raise UserError(f"recam_lambda must be a finite number >= 0, got {recam_lambda!r}")
        self.recam_lambda = float(recam_lambda)
        self.sce = nn.Linear(num_classes, num_classes, bias=False)  # W_sce

    def reactivated(self, maps, classes):
        """f_c for one class per image: maps [B,C,h,w], classes [B] -> [B,C].

        As the official code: relu CAM over its max + 1e-5, NOT detached (L_sce trains W too)."""
        cam = F.relu(torch.einsum("bc,bchw->bhw", self.fc.weight[classes], maps))  # [B,h,w]
        cam = cam / (cam.amax((-2, -1), keepdim=True) + 1e-5)
        return torch.einsum("bhw,bchw->bc", cam, maps) / (maps.shape[-2] * maps.shape[-1])

    def loss(self, feats, labels, reduction="mean"):
        """feats [B,K,h,w], labels [B] -> (L_cls + lambda * L_sce, logits [B,C] of W)."""
        maps = self.class_maps(feats)
        logits = self.classify(maps)
        sce = self.sce(self.reactivated(maps, labels))  # scores of f_y, the true class only
        return (F.cross_entropy(logits, labels, reduction=reduction)
                + self.recam_lambda * F.cross_entropy(sce, labels, reduction=reduction)), logits

    def map_weights(self):
        """[C,C] W_sce * W: the weights of its final map (one CAM with the two classifiers')."""
        return self.sce.weight * self.fc.weight

    def cams(self, maps):
        """The final maps, ONE CAM with weights W_sce * W: maps [B,C,h,w] -> [B,C,h,w] >= 0."""
        return F.relu(torch.einsum("kc,bchw->bkhw", self.map_weights(), maps))


class PaperCAMHead(CAMHead):
    """The CAM paper's VGG16 head (Zhou et al., CVPR 2016; read at VGG16's conv5_3 cut): conv3x3
    K->1024 + ReLU = the maps A_k, GAP, Linear(1024,C) with bias; CAM_c = sum_k w_ck A_k, whose
    spatial mean + b_c is logit c."""

    model_type = "CAM-paper"
    WIDTH = 1024

    def __init__(self, num_classes, in_channels=CHANNELS, width=WIDTH):
        nn.Module.__init__(self)
        self.conv = nn.Conv2d(in_channels, width, kernel_size=3, padding=1)
        self.fc = nn.Linear(width, num_classes)


class Classifier(nn.Module):
    """Frozen backbone + trainable head: images [B,3,H,W] -> logits [B,C]."""

    def __init__(self, backbone, head):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images):
        return self.head(self.backbone(images))


def build_head(settings: "HeadSettings", in_channels=None):
    """HeadSettings -> CAMHead, ReCAMHead, PublishedReCAMHead or PaperCAMHead reading in_channels
    (the backbone's channels, Backbone.channels; None: CHANNELS)."""
    num, k = settings.num_classes, in_channels or CHANNELS
    if settings.model_type == "CAM":
        return CAMHead(num, k)
    if settings.model_type == "CAM-paper":
        return PaperCAMHead(num, k)
    if settings.model_type == "ReCAM-published":
        return PublishedReCAMHead(num, settings.recam_lambda, k)
    return ReCAMHead(num, settings.normalize_by, k)


_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclasses.dataclass(frozen=True)
class HeadSettings:
    """What every checkpoint carries to rebuild its head and classifier; every field is always
    present and checked (types and ranges) when made or read back (from_dict).

    normalize_by is ReCAM's normaliser (None for the other heads), recam_lambda
    ReCAM-published's weight of L_sce (None for the others); cut is where the head reads the
    backbone (None: its default cut, e.g. for checkpoints from before the cuts; checked by the
    backbone when the model loads); backbone is the registry name of the architecture
    (flowercam/backbones/registry.py), backbone_id the loaded weights' id (keys the
    feature cache; None: unknown) and backbone_weights_id the sha256 of the weights file the run
    used (None: unknown, or torchvision's download)."""

    model_type: str
    num_classes: int
    class_names: tuple[str, ...] | None = None  # None: a checkpoint from before the names
    input_size: int = 256  # augment.py's default size
    normalize_by: str | None = None
    recam_lambda: float | None = None
    cut: str | None = None
    backbone: str = "vgg16"  # what every checkpoint from before the backbones was trained on
    backbone_id: str | None = None
    backbone_weights_id: str | None = None

    def __post_init__(self):
        _check(self)

    def to_dict(self) -> dict:
        """Plain types only (what torch.load(weights_only=True) and JSON read back)."""
        out = dataclasses.asdict(self)
        out["class_names"] = None if self.class_names is None else list(self.class_names)
        return out

    @classmethod
    def from_dict(cls, raw, source="checkpoint settings") -> "HeadSettings":
        """A checkpoint's or config.json's settings -> HeadSettings; UserError naming `source` and
        the field when it is not a dict or a field is wrong. Older dicts miss keys: the defaults
        fill them (ReCAM: minmax; ReCAM-published: RECAM_LAMBDA; cut: the backbone's default),
        and before backbone_id existed their "backbone" held the weights' id."""
        if not isinstance(raw, dict):
            raise UserError(f"{source} is a {type(raw).__name__}, not a mapping: pass a file "
                            "written by main.py")
        unknown = sorted(str(k) for k in raw if k not in _FIELDS)
        if unknown:
            raise UserError(f"{source} has unknown field {unknown[0]!r}: pass a file written by "
                            "main.py")
        values = dict(raw)
        if "backbone_id" not in values and "backbone" in values:  # before backbone_id
            values["backbone_id"] = values.pop("backbone")
        kind = values.get("model_type")
        if kind == "ReCAM" and values.get("normalize_by") is None:
            values["normalize_by"] = "minmax"
        if kind == "ReCAM-published" and values.get("recam_lambda") is None:
            values["recam_lambda"] = RECAM_LAMBDA
        if kind != "ReCAM":
            values.pop("normalize_by", None)  # older non-ReCAM dicts: null or unused
        if values.get("cut") is None:
            values.pop("cut", None)
        for key in ("model_type", "num_classes"):
            if key not in values:
                raise UserError(f"{source} lacks {key}: pass a file written by main.py")
        if isinstance(values.get("class_names"), list):
            values["class_names"] = tuple(values["class_names"])
        if isinstance(values.get("recam_lambda"), int) and not isinstance(
                values["recam_lambda"], bool):
            values["recam_lambda"] = float(values["recam_lambda"])
        try:
            return cls(**values)
        except UserError as err:
            raise UserError(f"{source}: {err}") from None


_FIELDS = ("model_type", "num_classes", "class_names", "input_size", "normalize_by",
           "recam_lambda", "cut", "backbone", "backbone_id", "backbone_weights_id")


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _check(s: HeadSettings):
    """Every field's type and range; UserError naming the field."""
    def bad(field, want):
        return UserError(f"{field} must be {want}, got {getattr(s, field)!r}")
    if s.model_type not in MODEL_TYPES:
        raise bad("model_type", f"one of {', '.join(MODEL_TYPES)}")
    if not _is_int(s.num_classes) or not 1 <= s.num_classes <= 100_000:
        raise bad("num_classes", "a positive integer")
    if s.class_names is not None and not (
            isinstance(s.class_names, tuple) and len(s.class_names) == s.num_classes
            and all(isinstance(n, str) for n in s.class_names)):
        raise bad("class_names", f"a list of {s.num_classes} names (num_classes) or null")
    if not _is_int(s.input_size) or not 16 <= s.input_size <= 4096:
        raise bad("input_size", "an integer number of pixels from 16 to 4096")
    if s.model_type == "ReCAM":
        if s.normalize_by not in NORMALIZERS:
            raise bad("normalize_by", f"one of {', '.join(NORMALIZERS)} for ReCAM")
    elif s.normalize_by is not None:
        raise bad("normalize_by", f"null for {s.model_type} (ReCAM's normaliser only)")
    if s.model_type == "ReCAM-published":
        lam = s.recam_lambda
        if not (isinstance(lam, float) and math.isfinite(lam) and lam >= 0):
            raise bad("recam_lambda", "a finite number >= 0 for ReCAM-published")
    elif s.recam_lambda is not None:
        raise bad("recam_lambda", f"null for {s.model_type} (ReCAM-published's weight only)")
    if s.cut is not None and not (isinstance(s.cut, str) and s.cut):
        raise bad("cut", "a cut of the backbone (e.g. pool5) or null")
    if not isinstance(s.backbone, str) or not s.backbone:
        raise bad("backbone", "a backbone name")
    if s.backbone_id is not None and not isinstance(s.backbone_id, str):
        raise bad("backbone_id", "a string or null")
    if s.backbone_weights_id is not None and not (
            isinstance(s.backbone_weights_id, str) and _SHA256.fullmatch(s.backbone_weights_id)):
        raise bad("backbone_weights_id", "a sha256 (64 hex digits) or null")
