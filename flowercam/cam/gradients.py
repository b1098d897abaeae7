"""The Grad-CAM family beyond Grad-CAM(++): how each weighs activations A [B,K,h,w] with the
gradients g [B,K,h,w] of the target score w.r.t. A, and the terms that `eigen_smooth` projects.

    python -c "from flowercam.cam import gradients; help(gradients.xgradcam)"
    .venv/bin/pytest tests/test_cam_family.py -q

A `*_terms` function gives the per-channel weighted activations [B,K,h,w] whose channel sum is the
map before its ReLU (pytorch-grad-cam's `weighted_activations`); eigen_smooth
(flowercam/cam/eigen.py) takes their first principal component instead of the sum.
"""

import torch
import torch.nn.functional as F


def _safe_div(num, den):
    """num / den, 0 where den == 0 (never NaN)."""
    return torch.where(den != 0, num / torch.where(den != 0, den, torch.ones_like(den)),
                       torch.zeros_like(num))


def summed(terms):
    """The map of a method given by its terms: relu(sum_k terms_k) [B,h,w]."""
    def weigh(acts, grads, weights):
        return F.relu(terms(acts, grads, weights).sum(1))
    weigh.__doc__ = terms.__doc__
    return weigh


def gradcam_terms(acts, grads, weights=None):
    """Grad-CAM: mean_ab(g_k) A_k."""
    return grads.mean((2, 3), keepdim=True) * acts


def gradcampp_terms(acts, grads, weights=None):
    """Grad-CAM++: (sum_ab alpha relu(g))_k A_k (alpha: methods.gradcampp_alpha)."""
    g2 = grads.pow(2)
    alpha = _safe_div(g2, 2 * g2 + acts.sum((2, 3), keepdim=True) * g2 * grads)  # eq. 19
    return (alpha * F.relu(grads)).sum((2, 3), keepdim=True) * acts


def hirescam_terms(acts, grads, weights=None):
    """HiResCAM (Draelos & Carin 2020): relu(sum_k g_k * A_k), element-wise, no averaging."""
    return grads * acts


def elementwise_terms(acts, grads, weights=None):
    """Grad-CAM element-wise (pytorch-grad-cam): relu(sum_k relu(g_k * A_k))."""
    return F.relu(grads * acts)


def xgradcam_terms(acts, grads, weights=None):
    """XGrad-CAM (Fu et al. 2020): relu(sum_k w_k A_k), w_k = sum_ab g_k A_k / sum_ab A_k."""
    w = _safe_div((grads * acts).sum((2, 3), keepdim=True), acts.sum((2, 3), keepdim=True))
    return w * acts


def layercam_terms(acts, grads, weights=None):
    """LayerCAM: relu(g_k) * A_k, element-wise."""
    return F.relu(grads) * acts


def score_terms(acts, grads, weights):
    """Score-CAM family (channel weights w [B,K] from forwards): w_k A_k."""
    return weights[:, :, None, None] * acts


def fem(acts, grads=None, weights=None, k=2.0):
    """FEM (Fuad et al. 2020, pytorch-grad-cam): relu(sum_k w_k A_k), w_k = the share of A_k's
    positions above mean(A_k) + 2 std(A_k) (population std); no gradient."""
    mean, std = acts.mean((2, 3), keepdim=True), acts.std((2, 3), correction=0, keepdim=True)
    w = (acts > mean + k * std).to(acts.dtype).mean((2, 3), keepdim=True)
    return F.relu((w * acts).sum(1))


def finer_objective(logits, targets, references=3, alpha=1.0):
    """Finer-CAM's score (Zhang et al. 2025, pytorch-grad-cam's FinerWeightedTarget): the
    softmax-weighted mean over the `references` classes d whose logits are nearest the target's
    of (y_t - alpha y_d). logits [B,C], targets [B] -> [B]."""
    y_t = logits.gather(1, targets[:, None])  # [B,1]
    distance = (logits.detach() - y_t.detach()).abs().scatter(1, targets[:, None], float("inf"))
    count = min(references, logits.shape[1] - 1)
    if count < 1:
        return y_t[:, 0]
    refs = distance.topk(count, dim=1, largest=False).indices  # [B,R]
    p = torch.softmax(logits, 1).gather(1, refs)
    return (p * (y_t - alpha * logits.gather(1, refs))).sum(1) / (p.sum(1) + 1e-9)


def finer_score(logits, targets, opts):
    """FinerCAM's objective with its options finer_references and finer_alpha."""
    return finer_objective(logits, targets, opts["finer_references"], opts["finer_alpha"])



def smooth_gradcampp_terms(acts, grads, weights=None):
    """Smooth Grad-CAM++ (Omeiza et al. 2019): Grad-CAM++ with the gradient powers averaged over
    N noisy copies of the image. acts [B,K,h,w] of the clean image, grads [N,B,K,h,w] of the
    copies; alpha_ij = mean(g_ij^2) / (2 mean(g_ij^2) + (sum_ab A_ab) mean(g_ij^3)),
    w_k = sum_ab alpha relu(mean g)."""
    g2, g3 = grads.pow(2).mean(0), grads.pow(3).mean(0)
    alpha = _safe_div(g2, 2 * g2 + acts.sum((2, 3), keepdim=True) * g3)
    return (alpha * F.relu(grads.mean(0))).sum((2, 3), keepdim=True) * acts


def channel_scaled_sum(maps, eps=1e-7):
    """FullGrad's psi summed over channels: maps [B,K,h,w] >= 0, each channel (m - min) /
    (max - min + eps) as pytorch-grad-cam's scale_cam_image -> [B,h,w]."""
    lo = maps.amin((2, 3), keepdim=True)
    hi = maps.amax((2, 3), keepdim=True)
    return ((maps - lo) / (hi - lo + eps)).sum(1)
