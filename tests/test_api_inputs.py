"""The Python API (flowercam/cam/compute.py's public functions) checks its inputs before any work:
non-finite pixels or features, a wrong dtype or shape and non-integer targets are one line
(UserError) naming the input and the fix, never a torch internal error or NaN maps."""

import pytest
import torch

from flowercam.backbones import vgg16
from flowercam.cam import compute
from flowercam.core import UserError
from flowercam.model import heads

C = 3


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return heads.Classifier(vgg16.VGG16(), heads.build_head(heads.HeadSettings("CAM", C))).eval()


def images(n=2, size=32):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def feats(n=2):
    return torch.rand(n, 512, 7, 7, generator=torch.Generator().manual_seed(2))


def calls(model):
    """Every public function of compute.py that takes images or features: name -> f(x, targets)."""
    return {
        "compute_maps": ("images", lambda x, t=None: compute.compute_maps(model, x, "GradCAM", t)),
        "maps_reusing": ("images", lambda x, t=None: compute.maps_reusing(model, x, "CAM", {}, t)),
        "compute_maps_from_features": (
            "feats", lambda x, t=None: compute.compute_maps_from_features(model.head, x, "CAM", t)),
        "maps_from_head": ("feats", lambda x, t=None: compute.maps_from_head(
            model.head, x, "GradCAM", t, (32, 32), compute.resolve_options("GradCAM", {}))),
    }


def one_line(call, match):
    with pytest.raises(UserError, match=match) as caught:
        call()
    assert "\n" not in str(caught.value)
    return str(caught.value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_inputs_are_refused(model, bad):
    """Was: NaN maps and logits, no error (issue 40, defect 6)."""
    for name, (kind, call) in calls(model).items():
        x = images() if kind == "images" else feats()
        x[1, 0, 3, 4] = bad
        msg = one_line(lambda c=call, x=x: c(x), "NaN or Inf")
        assert msg.startswith(f"{kind} hold 1 NaN or Inf"), name


def test_wrong_dtype_and_shape_are_one_line(model):
    """Was: torch's 'Input type (double) and bias type (float) should be the same' and such."""
    for name, (kind, call) in calls(model).items():
        x = images() if kind == "images" else feats()
        k = x.shape[1]
        assert "x.to(torch.float32)" in one_line(lambda c=call, x=x: c(x.double()), "float64"), name
        if kind == "images":
            one_line(lambda c=call, x=x: c((x * 50).clamp(0, 255).to(torch.uint8)),
                     r"uint8: convert with x.float\(\) / 255")
        msg = one_line(lambda c=call, x=x: c(x[0]), rf"\[B,{k},H,W\], got shape \({k}, ")
        assert "x[None]" in msg, name
        one_line(lambda c=call, x=x: c(x[:, :2]), r"got shape \(2, 2, ")
        one_line(lambda c=call, x=x: c(x.numpy()), "must be a torch tensor")


def test_targets_are_checked_before_the_forward(model, monkeypatch):
    """targets=1.5 said "got shape (2,)"; every bad target is refused before the backbone runs."""
    def no_forward(*args, **kwargs):
        raise AssertionError("the network ran before the targets were checked")

    monkeypatch.setattr(model.backbone, "forward", no_forward)
    monkeypatch.setattr(model.backbone, "forward_with", no_forward)
    monkeypatch.setattr(model.head, "forward_maps", no_forward)
    for name, (kind, call) in calls(model).items():
        x = images() if kind == "images" else feats()
        msg = one_line(lambda c=call, x=x: c(x, 1.5), "not whole numbers")
        assert "1.5" in msg and "shape" not in msg, name
        one_line(lambda c=call, x=x: c(x, [0, 1, 2]), r"got shape \(3,\) for 2 images")
        one_line(lambda c=call, x=x: c(x, C), rf"in 0..{C - 1}, got \[{C}, {C}\]")
        one_line(lambda c=call, x=x: c(x, "a"), "got str a")


def test_good_inputs_still_give_maps(model):
    for name, (kind, call) in calls(model).items():
        x = images() if kind == "images" else feats()
        out = call(x, torch.tensor([0, 2])).maps
        assert torch.isfinite(out).all(), name
