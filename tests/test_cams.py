"""Tests for cams.py: identities, Grad-CAM++ alpha, batch independence, errors, real weights."""

import cam_reference
import numpy as np
import pytest
import torch
from training_data import cheap, images, make_model

from flowercam import core
from flowercam.backbones import vgg16
from flowercam.cam import compute, methods
from flowercam.model import heads, normalization, vgg

C = 17
GRADIENT = ["LayerCAM", "GradCAM", "GradCAM++"]


@pytest.mark.parametrize("kind", ["CAM", "ReCAM"])
def test_spatial_mean_of_raw_cam_is_logit(cam_model, recam_model, kind):
    model = cam_model if kind == "CAM" else recam_model
    x = images()
    for c in (0, 5, 16):
        res = compute.compute_maps(model, x, kind, targets=[c] * 3)
        assert res.raw_native.shape == (3, 7, 7) and res.raw.shape == res.maps.shape == (3, 64, 64)
        assert torch.allclose(res.raw_native.mean((1, 2)), res.logits[:, c], atol=1e-5)
    with torch.no_grad():
        feats = model.backbone(x)
        all_maps = cam_reference.class_cams(model.head, feats, kind)
        assert torch.allclose(all_maps.mean((2, 3)), model.head(feats), atol=1e-5)


def test_from_features_matches_compute_maps(recam_model):
    x = images()
    feats = recam_model.backbone(x)
    copy = feats.clone()
    for method in ("CAM", "ReCAM"):
        a = compute.compute_maps(recam_model, x, method, normalize_by="relu")
        b = compute.compute_maps_from_features(recam_model.head, feats, method, size=(64, 64),
                                            normalize_by="relu")
        assert torch.allclose(a.maps, b.maps) and torch.equal(a.targets, b.targets)
    assert torch.equal(feats, copy)
    with pytest.raises(core.UserError, match="needs gradients"):
        compute.compute_maps_from_features(recam_model.head, feats, "GradCAM")


def nonneg_fc(model):
    model = make_model("CAM")
    with torch.no_grad():
        model.head.fc.weight.abs_()
    return model


def test_gradcam_on_class_maps_equals_cam(cam_model):
    x = images()
    # native resolution: relu(sum_k W_ck/hw A_k) / max == relu(CAM) / max, for any weights
    grad = compute.compute_maps(cam_model, x, "GradCAM", normalize_by="relu")
    cam = compute.compute_maps(cam_model, x, "CAM", normalize_by="relu")
    norm = normalization.normalize
    assert torch.allclose(norm(grad.raw_native, "relu"), norm(cam.raw_native, "relu"), atol=1e-5)
    # at input size too when the CAM is non-negative (relu commutes with the upsampling)
    model = nonneg_fc(cam_model)
    grad = compute.compute_maps(model, x, "GradCAM", normalize_by="relu")
    cam = compute.compute_maps(model, x, "CAM", normalize_by="relu")
    assert torch.allclose(grad.maps, cam.maps, atol=1e-5) and cam.maps.max() == 1


def test_layercam_on_class_maps_equals_relu_cam(cam_model):
    model, x = nonneg_fc(cam_model), images()
    layer = compute.compute_maps(model, x, "LayerCAM", layers=["classmaps"], tanh_gain=0)
    cam = compute.compute_maps(model, x, "CAM")
    assert torch.allclose(layer.raw_native * 49, torch.relu(cam.raw_native), atol=1e-5)
    assert torch.allclose(layer.maps, cam.maps, atol=1e-5)


def test_gradcampp_alpha_by_hand():
    g = torch.Generator().manual_seed(0)
    acts = torch.rand(2, 3, 4, 5, generator=g)
    grads = torch.randn(2, 3, 4, 5, generator=g)
    grads[1, 2] = 0  # 0/0 -> 0, never NaN
    alpha = methods.gradcampp_alpha(acts, grads)
    weights = torch.zeros(2, 3)
    for b in range(2):
        for k in range(3):
            # eq. 19: the third derivative at (i, j), times the sum of the activations
            s = sum(float(acts[b, k, i, j]) for i in range(4) for j in range(5))
            for i in range(4):
                for j in range(5):
                    gij = float(grads[b, k, i, j])
                    den = 2 * gij**2 + s * gij**3
                    want = gij**2 / den if den != 0 else 0.0
                    assert abs(float(alpha[b, k, i, j]) - want) < 1e-5 * max(1, abs(want))
                    weights[b, k] += want * max(gij, 0.0)
    want_map = torch.relu((weights[:, :, None, None] * acts).sum(1))
    assert torch.allclose(methods.gradcampp(acts, grads), want_map, atol=1e-5)
    assert torch.isfinite(alpha).all() and alpha[1, 2].abs().sum() == 0


@pytest.mark.parametrize("kind", ["CAM", "ReCAM"])
def test_batch_independence(kind):
    # float64: batched and single convolutions round differently in float32, which can flip
    # max-pool / min-max arg-maxima at near-ties; in float64 the maps must agree to ~1e-10
    model = make_model(kind, dtype=torch.float64)
    x = images(12, 32, dtype=torch.float64)
    targets = [i % C for i in range(12)]
    # the score family (17+ forwards per image) and the noisy or full-gradient methods are
    # tested in test_scorecam.py and test_cam_family.py
    names = [m for m in methods.supported(kind)
             if methods.METHODS[m].kind in ("features", "gradients")]
    for method in names:
        for tgt in (None, targets):
            batch = compute.compute_maps(model, x, method, targets=tgt)
            for i in (0, 11):
                one = compute.compute_maps(model, x[i : i + 1], method,
                                        targets=None if tgt is None else [tgt[i]])
                assert torch.allclose(one.maps[0], batch.maps[i], atol=1e-9), (method, i)
                assert torch.allclose(one.raw[0], batch.raw[i], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("method", GRADIENT)
def test_batched_equals_report_loop(method):
    model = make_model("ReCAM", dtype=torch.float64)  # float64: see test_batch_independence
    x = images(2, 32, dtype=torch.float64)
    for opts in ({}, {"gradcam_layer": "stage5", "fusion": "max"}):
        batched = compute.compute_maps(model, x, method, **opts)
        loop = cam_reference.report_loop(model, x, method, **opts)
        assert torch.allclose(batched.maps, loop, atol=1e-9)


def test_one_backward_per_batch_and_frozen(monkeypatch, recam_model):
    calls = []
    real = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: calls.append(1) or real(*a, **k))
    for method in GRADIENT:
        compute.compute_maps(recam_model, images(5), method)
    assert len(calls) == len(GRADIENT)
    assert all(p.grad is None for p in recam_model.parameters())


def test_inputs_not_modified(recam_model):
    x = images()
    copy = x.clone()
    for method in methods.supported("ReCAM"):
        res = compute.compute_maps(recam_model, x, method, **cheap(method))
        assert torch.equal(x, copy)
        maps = res.maps.clone()
        compute.postprocess(res.maps)
        normalization.normalize(res.raw)
        assert torch.equal(res.maps, maps)


def test_no_nan_on_constant_input(recam_model):
    zero_head = make_model("ReCAM")
    with torch.no_grad():
        for p in zero_head.head.parameters():
            p.zero_()
    for model in (recam_model, zero_head):
        for fill in (0.0, 1.0):
            x = torch.full((2, 3, 32, 32), fill)
            for method in methods.supported("ReCAM"):
                res = compute.compute_maps(model, x, method, **cheap(method))
                assert torch.isfinite(res.raw).all() and torch.isfinite(res.raw_native).all()
                for how in normalization.NORMALIZERS:
                    maps = normalization.normalize(res.raw, how)
                    assert torch.isfinite(maps).all() and 0 <= maps.min() and maps.max() <= 1
        res = compute.compute_maps(zero_head, torch.zeros(1, 3, 32, 32), "GradCAM++")
    assert res.maps.abs().sum() == 0


def test_method_records_are_the_one_table():
    assert methods.METHODS is methods.METHODS
    assert {m.kind for m in methods.METHODS.values()} <= set(methods.KINDS)
    for name, record in methods.METHODS.items():
        assert record.name == name and callable(record.weigh)
        assert not record.needs_gradients or record.needs_images  # gradients flow from images
        opts = methods.resolve_options(name, {})
        assert list(opts)[0] == "normalize_by" and set(record.options) <= set(opts)
        if record.layer_option:
            assert record.layer_option in opts
    assert [n for n, m in methods.METHODS.items() if m.needs_head] == ["ReCAM", "ReCAM-published"]
    recam = methods.supported("ReCAM")
    assert "ReCAM-published" not in recam and "ReCAM" in recam


def test_postprocess():
    maps = torch.tensor([[[0.0, 0.29, 0.3], [0.5, 0.7, 1.0]]])
    want = torch.tensor([[[0.0, 0.0, 0.45], [0.75, 1.0, 1.0]]])
    assert torch.allclose(compute.postprocess(maps), want)


def test_user_errors(cam_model, recam_model):
    x = images(3)
    for bad in ([1, 2], [1, 2, 3, 4], [[1, 2, 3]], [0, 1, C], [0.5, 1.0, 2.0]):
        with pytest.raises(core.UserError, match="target"):
            compute.compute_maps(recam_model, x, "GradCAM", targets=bad)
    assert compute.compute_maps(recam_model, x, "CAM", targets=4).targets.tolist() == [4, 4, 4]
    with pytest.raises(core.UserError, match="ReCAM head"):
        compute.compute_maps(cam_model, x, "ReCAM")
    with pytest.raises(core.UserError, match="ReCAM head"):
        methods.check_method("ReCAM", "CAM")
    methods.check_method("ReCAM", "ReCAM")
    bad_calls = [("Score-CAM", {}), ("CAM", {"normalise_by": "relu"}),
                 ("LayerCAM", {"layers": ["stage3"], "layer_weights": [0.5, 0.5]}),
                 ("LayerCAM", {"fusion": "mean"}), ("GradCAM", {"gradcam_layer": "fc"})]
    for method, opts in bad_calls:
        with pytest.raises(core.UserError):
            compute.compute_maps(recam_model, x, method, **opts)


def test_layercam_options(recam_model):
    x = images(2)
    a = compute.compute_maps(recam_model, x, "LayerCAM")
    assert a.options["layer_weights"] == [0.4, 0.4, 0.2] and a.raw.max() <= np.tanh(2) + 1e-6
    b = compute.compute_maps(recam_model, x, "LayerCAM", fusion="max", layers=["stage4", "stage5"])
    assert b.options["layer_weights"] == [0.5, 0.5] and not torch.allclose(a.maps, b.maps)
    c = compute.compute_maps(recam_model, x, "GradCAM++", gradcam_layer="stage5")
    assert c.raw_native.shape == (2, 4, 4)


def test_layercam_default_layers_are_the_reports_post_pool_stages():
    torch.manual_seed(0)
    backbone = vgg16.VGG16()
    x = torch.randn(1, 3, 256, 256)
    layers = ["stage3", "pool3", "stage4", "pool4"]
    _, acts = backbone.forward_with(x, layers)
    assert acts["pool3"].shape == (1, 256, 32, 32) and acts["pool4"].shape == (1, 512, 16, 16)
    assert acts["stage3"].shape == (1, 256, 64, 64) and acts["stage4"].shape == (1, 512, 32, 32)
    for n in (3, 4):  # poolN is stageN's 2x2 max pool
        want = torch.nn.functional.max_pool2d(acts[f"stage{n}"].detach(), 2)
        assert torch.equal(acts[f"pool{n}"].detach(), want)
    opts = methods.resolve_options("LayerCAM", {})
    assert opts["layers"] == list(REPORT_LAYERS)
    pre = methods.resolve_options("LayerCAM", {"layers": PRE_POOL_LAYERS})
    assert opts["layer_weights"] == pre["layer_weights"] == [0.4, 0.4, 0.2]


REPORT_LAYERS = ("pool3", "pool4", "classmaps")  # VGG16's LayerCAM default, the report's
PRE_POOL_LAYERS = ("stage3", "stage4", "classmaps")  # the LayerCAM paper's convention


@pytest.mark.parametrize("layers", [PRE_POOL_LAYERS, REPORT_LAYERS])
def test_layercam_layers_match_the_report_loop(layers):
    model = make_model("CAM", dtype=torch.float64)
    x = images(2, 64, dtype=torch.float64)
    batched = compute.compute_maps(model, x, "LayerCAM", layers=layers)
    loop = cam_reference.report_loop(model, x, "LayerCAM", layers=layers)
    assert torch.allclose(batched.maps, loop, atol=1e-9)
    assert batched.options["layers"] == list(layers)


@pytest.mark.real
def test_real_weights_every_method(flowers_jpg, weights_path):
    x = cam_reference.load_images(flowers_jpg, 3, vgg.INPUT_SIZE)
    torch.manual_seed(0)
    model = heads.Classifier(vgg16.load(str(weights_path)), heads.ReCAMHead(C)).eval()
    for method in methods.supported("ReCAM"):
        res = compute.compute_maps(model, x, method, **cheap(method))
        assert res.maps.shape == res.raw.shape == (3, 256, 256) and res.logits.shape == (3, C)
        assert torch.isfinite(res.raw).all() and torch.isfinite(res.maps).all()
        assert res.maps.min() == 0 and res.maps.max() == 1, method
        assert (res.maps.flatten(1).std(1) > 0.01).all(), method


def test_gradient_methods_work_inside_no_grad():
    torch.manual_seed(0)
    model = heads.Classifier(vgg16.VGG16(), heads.CAMHead(3)).eval()
    images = torch.randn(2, 3, 32, 32)
    expected = compute.compute_maps(model, images, "GradCAM").maps
    with torch.no_grad():
        inside = compute.compute_maps(model, images, "GradCAM").maps
    torch.testing.assert_close(inside, expected)
    with torch.inference_mode(), pytest.raises(core.UserError, match="inference_mode"):
        compute.compute_maps(model, images, "LayerCAM")
