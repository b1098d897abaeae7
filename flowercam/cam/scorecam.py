"""Score-CAM (Wang et al., CVPRW 2020): channel weights from the target score of masked inputs.

    python -c "from flowercam.cam import scorecam; help(scorecam.scorecam_weights)"
    .venv/bin/pytest tests/test_scorecam.py -q

w_k = softmax_k(Y_c(X * norm(up(A_k))) - Y_c(X_b)), map relu(sum_k w_k A_k). X is the
ImageNet-normalised input and the baseline X_b its zeros (the mean colour): a mask value 0 gives the
baseline. Y_c(X_b) is the same for every channel k, so it cancels in the softmax; it is kept to
follow the paper's formula (one extra forward of one zero image per batch).
Differences from pytorch-grad-cam's ScoreCAM (pytorch_grad_cam/score_cam.py): they upsample with
align_corners=True (UpsamplingBilinear2d), divide by (max - min + 1e-8) where we give a flat channel
a zero mask, and subtract no baseline (same weights, see above).
"""

import torch
import torch.nn.functional as F
from tqdm import tqdm

from flowercam.model.normalization import normalize


def channel_masks(acts, size):
    """acts [N,h,w] -> masks [N,*size]: bilinear upsampling (align_corners=False), then min-max to
    [0, 1] per mask (a flat channel gives a zero mask, never NaN)."""
    up = F.interpolate(acts[:, None], size=tuple(size), mode="bilinear", align_corners=False)
    return normalize(up[:, 0], "minmax")


def scorecam_weights(score_fn, x, acts, targets, batch_size=64, progress=True):
    """Score-CAM channel weights [B,K].

    score_fn: images [N,3,H,W] -> logits [N,C] (no gradient needed); x [B,3,H,W] normalised;
    acts [B,K,h,w] the layer's activations of x; targets [B] long. The B*K masked images go through
    score_fn `batch_size` at a time (any image/channel mix: the images of a batch are independent).
    """
    batch, channels = acts.shape[:2]
    scores = torch.empty(batch * channels, dtype=x.dtype, device=x.device)
    starts = range(0, batch * channels, batch_size)
    with torch.no_grad():
        for start in tqdm(starts, desc="Score-CAM", leave=False, disable=not progress or None):
            pair = torch.arange(start, min(start + batch_size, batch * channels), device=x.device)
            b, k = pair // channels, pair % channels
            masks = channel_masks(acts[b, k].to(x.dtype), x.shape[-2:])  # [n,H,W]
            logits = score_fn(x[b] * masks[:, None])
            scores[pair] = logits.gather(1, targets[b][:, None])[:, 0]
        baseline = score_fn(torch.zeros_like(x[:1]))[0, targets]  # [B], Y_c(X_b)
    return torch.softmax(scores.view(batch, channels) - baseline[:, None], dim=1)


def scorecam(acts, grads, weights):
    """Score-CAM map: relu(sum_k w_k A_k), weights [B,K] from scorecam_weights."""
    return F.relu(torch.einsum("bk,bkhw->bhw", weights, acts))
