"""Score-CAM: weights by hand on a toy model, pytorch-grad-cam's formula, batches, flat inputs."""

import math

import numpy as np
import pytest
import torch

from flowercam import core
from flowercam.backbones import vgg16
from flowercam.cam import compute, methods, scorecam
from flowercam.model import heads

C = 17


def toy_score_fn(weights, bias=None):
    """A linear 'classifier' on images [N,3,H,W]: logit_c = sum(x * weights[c]) + bias_c."""
    bias = torch.zeros(len(weights), dtype=weights.dtype) if bias is None else bias
    return lambda x: torch.einsum("nchw,kchw->nk", x, weights) + bias


def toy_setup(seed=0, size=4, classes=3, channels=2, batch=2):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, size, size, generator=g, dtype=torch.float64)
    weights = torch.randn(classes, 3, size, size, generator=g, dtype=torch.float64)
    acts = torch.rand(batch, channels, size, size, generator=g, dtype=torch.float64)
    return x, weights, acts


def test_weights_of_a_two_channel_toy_equal_a_hand_computation():
    # activations at the input size: the bilinear upsampling is the identity, masks are min-max
    x, weights, acts = toy_setup()
    targets = torch.tensor([2, 0])
    bias = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    got = scorecam.scorecam_weights(toy_score_fn(weights, bias), x, acts, targets, batch_size=3)
    xn, wn, an = x.numpy(), weights.numpy(), acts.numpy()
    for b in range(2):
        c = int(targets[b])
        scores = []
        for k in range(2):
            a = an[b, k]
            mask = (a - a.min()) / (a.max() - a.min())
            masked, baseline = (xn[b] * mask * wn[c]).sum() + bias[c], bias[c]  # Y_c(X_b = 0)
            scores.append(float(masked - baseline))
        e = [math.exp(s - max(scores)) for s in scores]
        want = [v / sum(e) for v in e]
        assert got[b].tolist() == pytest.approx(want, rel=1e-9)
    want_map = torch.relu(torch.einsum("bk,bkhw->bhw", got, acts))
    assert torch.allclose(scorecam.scorecam(acts, None, got), want_map)


def grad_cam_library_weights(score_fn, x, acts, targets):
    """pytorch-grad-cam's ScoreCAM.get_cam_weights (pytorch_grad_cam/score_cam.py) restated:
    UpsamplingBilinear2d (align_corners=True), (u - min) / (max - min + 1e-8), softmax over the
    channels of the target scores, no baseline."""
    up = torch.nn.functional.interpolate(acts, size=x.shape[-2:], mode="bilinear",
                                         align_corners=True)
    flat = up.flatten(2)
    lo, hi = flat.min(-1).values[..., None, None], flat.max(-1).values[..., None, None]
    masks = (up - lo) / (hi - lo + 1e-8)
    scores = torch.stack([score_fn(x[b, None] * masks[b, :, None])[:, targets[b]]
                          for b in range(len(x))])
    return torch.softmax(scores, dim=-1)


def test_weights_match_pytorch_grad_cams_formula_where_definitions_coincide():
    # equal when the layer has the input's size (both upsamplings are the identity); the baseline
    # cancels in the softmax and 1e-8 moves weights by ~1e-8 only
    x, weights, acts = toy_setup(seed=3, size=6, classes=4, channels=5, batch=3)
    score_fn = toy_score_fn(weights, torch.arange(4.0, dtype=torch.float64))
    targets = torch.tensor([1, 3, 0])
    theirs = grad_cam_library_weights(score_fn, x, acts, targets)
    ours = scorecam.scorecam_weights(score_fn, x, acts, targets, batch_size=4)
    assert torch.allclose(ours, theirs, atol=1e-6)
    # at another resolution they differ (align_corners), so the comparison above is not vacuous
    small = acts[..., ::2, ::2]
    differ = scorecam.scorecam_weights(score_fn, x, small, targets) - grad_cam_library_weights(
        score_fn, x, small, targets)
    assert differ.abs().max() > 1e-6


def make_model(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return heads.Classifier(vgg16.VGG16(), heads.CAMHead(C)).eval().to(dtype)


def test_batch_independence_and_any_chunking():
    model = make_model()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    batch = compute.compute_maps(model, x, "ScoreCAM")
    assert batch.options["scorecam_layer"] == "classmaps"
    chunked = compute.compute_maps(model, x, "ScoreCAM", scorecam_batch=5)
    torch.testing.assert_close(chunked.raw, batch.raw, rtol=1e-9, atol=1e-12)
    for i in (0, 3):
        one = compute.compute_maps(model, x[i : i + 1], "ScoreCAM")
        torch.testing.assert_close(one.raw[0], batch.raw[i], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(one.maps[0], batch.maps[i], rtol=1e-9, atol=1e-9)


def test_model_weights_are_the_softmax_of_masked_scores():
    model = make_model()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    res = compute.compute_maps(model, x, "ScoreCAM", targets=[3, 9])
    with torch.no_grad():
        acts = model.head.class_maps(model.backbone(x))  # [2,C,7,7]
        w = np.zeros((2, C))
        baseline = model(torch.zeros_like(x[:1]))[0]  # Y(X_b), X_b = zeros
        for b, c in enumerate((3, 9)):
            for k in range(C):
                mask = scorecam.channel_masks(acts[b, k][None], (32, 32))
                w[b, k] = float(model(x[b : b + 1] * mask)[0, c] - baseline[c])
    w = torch.softmax(torch.from_numpy(w), 1)
    want = torch.relu(torch.einsum("bk,bkhw->bhw", w, acts))
    torch.testing.assert_close(res.raw_native, want, rtol=1e-9, atol=1e-12)


def test_no_nan_on_constant_inputs_and_stage5_option():
    model = make_model(dtype=torch.float32)
    for fill in (0.0, 1.0):
        res = compute.compute_maps(model, torch.full((2, 3, 32, 32), fill), "ScoreCAM")
        assert torch.isfinite(res.raw).all() and torch.isfinite(res.maps).all()
    x = torch.randn(1, 3, 64, 64)
    res = compute.compute_maps(model, x, "ScoreCAM", scorecam_layer="stage5", scorecam_batch=128)
    assert res.raw_native.shape == (1, 4, 4) and torch.isfinite(res.maps).all()
    record = methods.METHODS["ScoreCAM"]
    assert record.needs_images and not record.needs_gradients
    with pytest.raises(core.UserError, match="needs the images"):
        compute.compute_maps_from_features(model.head, torch.zeros(1, 512, 7, 7), "ScoreCAM")
