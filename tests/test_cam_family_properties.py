"""The rest of the CAM family on tiny seeded models: batch independence, constant and unchanged
inputs, option checks, every head, the feature-cache path, a driver for every kind (the reference
checks against pytorch-grad-cam / torchcam: tests/test_cam_family.py)."""

import ast
from pathlib import Path

import pytest
import torch
from training_data import cheap, images, make_model

from flowercam import core
from flowercam.backbones import vgg16
from flowercam.cam import compute, drivers, methods
from flowercam.model import heads

C = 17
NEW = ["HiResCAM", "GradCAMElementWise", "XGradCAM", "EigenGradCAM", "ShapleyCAM", "FinerCAM",
       "EigenCAM", "KPCACAM", "FEM", "AblationCAM", "SSCAM", "ISCAM", "SmoothGradCAM++",
       "FullGrad"]


def test_batch_independence_of_the_new_methods():
    model = make_model("ReCAM", dtype=torch.float64)
    x = images(5, 32, dtype=torch.float64)
    for method in NEW:
        batch = compute.compute_maps(model, x, method, **cheap(method))
        for i in (0, 4):
            one = compute.compute_maps(model, x[i : i + 1], method, **cheap(method))
            assert torch.allclose(one.raw[0], batch.raw[i], rtol=1e-8, atol=1e-10), method


def test_no_nan_on_constant_inputs_and_inputs_unchanged():
    zero_head = make_model("ReCAM")
    with torch.no_grad():
        for p in zero_head.head.parameters():
            p.zero_()
    for model in (make_model("CAM"), zero_head):
        for fill in (0.0, 1.0):
            x = torch.full((2, 3, 32, 32), fill)
            before = x.clone()
            for method in NEW:
                for smooth in ([False, True] if "eigen_smooth" in
                               methods.METHODS[method].options else [False]):
                    opts = {**cheap(method), **({"eigen_smooth": True} if smooth else {})}
                    res = compute.compute_maps(model, x, method, **opts)
                    assert torch.isfinite(res.raw).all() and torch.isfinite(res.maps).all()
                    assert 0 <= res.maps.min() and res.maps.max() <= 1, method
                    assert torch.equal(x, before)


def test_options_are_checked():
    x, model = images(1, 32), make_model("CAM")
    for method, opts in [("SSCAM", {"ss_std": -1}), ("FinerCAM", {"finer_references": 0}),
                         ("HiResCAM", {"eigen_smooth": "yes"}), ("ISCAM", {"is_samples": 1.5}),
                         ("SmoothGradCAM++", {"noise_seed": -1}),
                         ("AblationCAM", {"scorecam_layer": "fc"})]:
        with pytest.raises(core.UserError):
            compute.compute_maps(model, x, method, **opts)
    assert "eigen_smooth" not in methods.resolve_options("FullGrad", {})


def test_every_new_method_runs_on_every_head_and_the_published_recam():
    x = images(1, 32)
    torch.manual_seed(0)
    published = heads.Classifier(vgg16.VGG16(), heads.PublishedReCAMHead(C)).eval()
    for model in (make_model("CAM"), make_model("ReCAM"), published):
        for method in NEW:
            assert method in methods.supported(model.head.model_type)
            res = compute.compute_maps(model, x, method, **cheap(method))
            assert res.maps.shape == (1, 32, 32)


def test_head_only_methods_from_features_equal_the_image_path():
    model, x = make_model("ReCAM", dtype=torch.float64), images(2, 64, dtype=torch.float64)
    head_only = [m for m in methods.supported("ReCAM")
                 if compute.head_only(m, methods.resolve_options(m, {}))]
    assert {"GradCAM", "HiResCAM", "FinerCAM", "EigenCAM", "FEM", "AblationCAM"} <= set(head_only)
    assert not {"SSCAM", "FullGrad", "SmoothGradCAM++", "LayerCAM"} & set(head_only)
    shared = {"feats": model.backbone(x)}
    for method in head_only:
        want = compute.compute_maps(model, x, method)
        got = compute.maps_reusing(model, x, method, shared)
        assert torch.allclose(got.maps, want.maps, atol=1e-10), method
        assert torch.allclose(got.raw_native, want.raw_native, atol=1e-12), method
    assert not compute.head_only("GradCAM", methods.resolve_options("GradCAM", {
        "gradcam_layer": "stage5"}))


def test_every_kind_has_a_driver():
    assert set(drivers.DRIVERS) | {"features"} == set(methods.KINDS)
    assert set(methods.REPORT_METHODS) == {"CAM", "ReCAM", "ReCAM-published", "LayerCAM",
                                           "GradCAM", "GradCAM++", "ScoreCAM"}


def test_report_methods_are_named_not_sliced():
    """evaluate.py's default methods are written out as names, so a method registered early in
    METHODS cannot silently join them (issue 37: it was tuple(METHODS)[:7])."""
    tree = ast.parse(Path(methods.__file__).read_text())
    value = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                 and getattr(node.targets[0], "id", None) == "REPORT_METHODS")
    names = ast.literal_eval(value)  # raises ValueError unless a literal tuple of names
    assert names == methods.REPORT_METHODS and set(names) <= set(methods.METHODS)
