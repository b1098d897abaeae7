"""The trainable heads (the report's CAM and ReCAM, ReCAM as published, the CAM paper's) and the
classifier (frozen backbone + head).

    python -c "from flowercam.model import heads; print(heads.build_head({'model_type': 'CAM', \
'num_classes': 17}))"

The backbone is any of flowercam/backbones/ (a head reads its channels), checkpoints
flowercam/model/checkpoints.py.
"""

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


def build_head(settings, in_channels=None):
    """settings dict (a checkpoint's) -> CAMHead, ReCAMHead, PublishedReCAMHead or PaperCAMHead
    reading in_channels (the backbone's channels; None: CHANNELS)."""
    kind = settings.get("model_type")
    num = settings.get("num_classes")
    if kind not in MODEL_TYPES:
        raise UserError(f"unknown model_type {kind!r}: use one of {', '.join(MODEL_TYPES)}")
    if not isinstance(num, int) or num < 1:
        raise UserError(f"num_classes must be a positive integer, got {num!r}")
    k = in_channels or CHANNELS
    if kind == "CAM":
        return CAMHead(num, k)
    if kind == "CAM-paper":
        return PaperCAMHead(num, k)
    if kind == "ReCAM-published":
        lam = settings.get("recam_lambda")
        return PublishedReCAMHead(num, RECAM_LAMBDA if lam is None else lam, k)
    return ReCAMHead(num, settings.get("normalize_by") or "minmax", k)
