"""Multi-scale and flip aggregation (compute_maps(..., scales, flip)): identities and errors."""

import pytest
import torch
from training_data import cheap, images, make_model

from flowercam import core
from flowercam.cam import compute, maps, methods


def mirror_model(dtype=torch.float64):
    """Conv kernels made left-right symmetric: the whole net commutes with a horizontal flip."""
    model = make_model("CAM", dtype=dtype)
    with torch.no_grad():
        for m in model.backbone.features:
            if isinstance(m, torch.nn.Conv2d):
                m.weight.copy_((m.weight + m.weight.flip(-1)) / 2)
    return model


def test_one_scale_without_flip_is_the_plain_map(cam_model):
    x = images(2, 64)
    for method in ("CAM", "GradCAM", "LayerCAM"):
        plain = compute.compute_maps(cam_model, x, method)
        same = compute.compute_maps(cam_model, x, method, scales=[1], flip=False)
        assert torch.equal(same.maps, plain.maps) and torch.equal(same.raw, plain.raw)
        assert same.options == plain.options  # nothing added to the saved settings


@pytest.mark.parametrize("method", ["CAM", "GradCAM++", "LayerCAM", "ScoreCAM"])
def test_flip_aggregation_of_a_flip_equivariant_net_is_the_plain_map(method):
    # ScoreCAM (17 forwards per image) in float32 on one image, to stay quick
    dtype, n, tol = (torch.float32, 1, 1e-4) if method == "ScoreCAM" else (torch.float64, 2, 1e-8)
    model = mirror_model(dtype)
    x = images(2, 64, dtype=dtype)
    x = torch.cat([(x[:1] + x[:1].flip(-1)) / 2, x[1:]])[:n]  # a symmetric image, any image
    plain = compute.compute_maps(model, x, method)
    flipped = compute.compute_maps(model, x, method, flip=True)
    assert torch.allclose(flipped.maps, plain.maps, atol=tol)
    assert flipped.options["flip"] is True and flipped.options["scales"] == [1.0]
    # a net that is not flip-equivariant: the aggregate differs, so the check above has teeth
    other = make_model("CAM", dtype=dtype)
    assert not torch.allclose(compute.compute_maps(other, x[:1], method, flip=True).maps,
                              compute.compute_maps(other, x[:1], method).maps, atol=1e-3)


def test_multiscale_is_the_mean_of_resized_single_scale_maps(cam_model):
    x = images(2, 64)
    agg = compute.compute_maps(cam_model, x, "GradCAM", scales=(1.0, 0.5, 1.5), flip=True)
    raws = []
    for s in (1.0, 0.5, 1.5):
        xs = torch.nn.functional.interpolate(x, scale_factor=s, mode="bilinear") if s != 1 else x
        for flip in (False, True):
            res = compute.compute_maps(cam_model, xs.flip(-1) if flip else xs, "GradCAM",
                                    targets=agg.targets)
            raw = res.raw.flip(-1) if flip else res.raw
            raws.append(maps.upsample(raw, (64, 64)) if raw.shape[-1] != 64 else raw)
    want = torch.stack(raws).mean(0)
    assert torch.allclose(agg.raw, want, atol=1e-5)
    assert torch.equal(agg.targets, compute.compute_maps(cam_model, x, "GradCAM").targets)


def test_aggregation_user_errors_and_constant_inputs(recam_model):
    x = torch.zeros(1, 3, 64, 64)
    for method in methods.supported("ReCAM"):
        res = compute.compute_maps(recam_model, x, method, scales=(1.0, 0.5), flip=True,
                                   **cheap(method))
        assert torch.isfinite(res.raw).all() and torch.isfinite(res.maps).all(), method
    for bad in ([], [1, 1], [0], [float("nan")], [0.25]):  # 0.25: 16 px, under VGG16's 32
        with pytest.raises(core.UserError, match="scale"):
            compute.compute_maps(recam_model, x, "CAM", scales=bad)
