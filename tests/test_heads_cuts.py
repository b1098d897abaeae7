"""Every head at every cut: shapes, the CAM identity, checkpoints that rebuild the cut, and every
map method (plain and aggregated) on a tiny seeded model."""

import pytest
import torch

from flowercam.backbones import registry, vgg16
from flowercam.cam import ablation, compute, fullgrad, methods
from flowercam.core import UserError
from flowercam.model import checkpoints, heads, vgg
from flowercam.train import training

C = 3
CASES = [(kind, cut) for kind in heads.MODEL_TYPES for cut in vgg.CUTS]
MANY_PASSES = ("SSCAM", "ISCAM")  # Score-CAM variants with several masked forwards per channel


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return vgg16.VGG16()


def tiny(backbone, kind, cut, seed=0):
    torch.manual_seed(seed)
    head = heads.build_head(heads.HeadSettings.from_dict({"model_type": kind, "num_classes": C}))
    return heads.Classifier(backbone.at(cut), head).eval()


def images(n=2, size=64, seed=1):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind,cut", CASES)
def test_shapes_and_cam_identity(backbone, kind, cut):
    """A CAM's spatial mean (+ the linear layer's bias) is the logit: mean_hw sum_k w_ck A_k
    = sum_k w_ck mean_hw A_k."""
    model = tiny(backbone, kind, cut)
    with torch.no_grad():
        feats = model.backbone(images())
        rew, maps, logits = model.head.forward_maps(feats)
    side = vgg.feature_shape(cut, 64)[1]
    width = heads.PaperCAMHead.WIDTH if kind == "CAM-paper" else C
    assert feats.shape == (2, *vgg.feature_shape(cut, 64))
    assert maps.shape == rew.shape == (2, width, side, side) and logits.shape == (2, C)
    assert model.head.fc.weight.shape == (C, width)
    cams = torch.einsum("kc,bchw->bkhw", model.head.fc.weight, rew)  # [B,C,h,w]
    bias = model.head.fc.bias if model.head.fc.bias is not None else torch.zeros(C)
    assert (model.head.fc.bias is not None) == (kind == "CAM-paper")  # the paper's has a bias
    torch.testing.assert_close(cams.mean((2, 3)) + bias, logits, rtol=1e-4, atol=1e-5)
    if kind in ("CAM", "CAM-paper"):
        torch.testing.assert_close(model.head.cams(maps), cams)


def test_paper_head_is_the_papers():
    head = heads.build_head(heads.HeadSettings("CAM-paper", 17))
    assert isinstance(head, heads.PaperCAMHead) and head.conv.kernel_size == (3, 3)
    assert head.conv.padding == (1, 1) and head.conv.out_channels == 1024
    feats = torch.rand(1, 512, 16, 16)
    assert head.class_maps(feats).min() >= 0 and head.class_maps(feats).shape == (1, 1024, 16, 16)


@pytest.mark.parametrize("kind", heads.MODEL_TYPES)
def test_checkpoint_rebuilds_the_cut(tmp_path, backbone, kind):
    settings = training.make_settings(kind, "minmax", ["a", "b", "c"], 64, backbone.backbone_id,
                                      cut="conv5_3")
    assert settings.cut == "conv5_3"
    model = tiny(backbone, kind, "conv5_3", seed=3)
    path = tmp_path / "epoch_1.pth"
    checkpoints.save_checkpoint(path, model.head, settings, epoch=1)
    torch.load(path, weights_only=True)  # plain types only
    loaded, got = registry.load_model(path, backbone=backbone)
    assert got.cut == "conv5_3" and loaded.backbone.cut == "conv5_3"
    assert type(loaded.head) is type(model.head) and backbone.cut == "pool5"  # no side effect
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_old_checkpoints_without_a_cut_load_at_pool5(tmp_path, backbone):
    settings = training.make_settings("CAM", None, ["a", "b", "c"], 64, backbone.backbone_id,
                                      cut="pool5")
    assert settings.cut == "pool5"
    path = tmp_path / "epoch_1.pth"
    head = heads.build_head(settings)
    checkpoints.save_checkpoint(path, head, settings)
    old = {k: v for k, v in settings.to_dict().items() if k != "cut"}  # before the cuts
    torch.save({**torch.load(path, weights_only=True), "settings": old}, path)
    assert checkpoints.load_checkpoint(path)[1].cut is None  # the backbone's default
    assert registry.load_model(path, backbone=backbone)[0].backbone.cut == "pool5"
    torch.save({**torch.load(path, weights_only=True),
                "settings": {**settings.to_dict(), "cut": "pool9"}}, path)
    with pytest.raises(UserError, match="unknown cut 'pool9' of backbone vgg16"):
        registry.load_model(path, backbone=backbone)  # the backbone knows its cuts


def _check(result, model, method, n, size, plain=True):
    assert result.maps.shape == result.raw.shape == (n, size, size)
    assert torch.isfinite(result.raw).all() and 0 <= result.maps.min() <= result.maps.max() <= 1
    if method == "CAM" and plain:  # the map at the cut's own resolution
        assert result.raw_native.shape[-1] == vgg.feature_shape(model.backbone.cut, size)[1]


@pytest.mark.parametrize("kind,cut", CASES)
def test_every_method_on_every_head_and_cut(backbone, kind, cut):
    model = tiny(backbone, kind, cut)
    size = 32 if kind == "CAM-paper" else 64  # Score-CAM: one forward per map (1024 here)
    x = images(1, size)
    for method in methods.supported(kind):
        if kind == "CAM-paper" and method in MANY_PASSES:
            continue  # thousands of masked forwards over 1024 maps; run on the other heads
        _check(compute.compute_maps(model, x, method, targets=1), model, method, 1, size)
    for method in ("CAM", "LayerCAM"):
        agg = compute.compute_maps(model, x, method, targets=1, scales=(1, 1.5), flip=True)
        _check(agg, model, method, 1, size, plain=False)


def test_layercam_last_layer_is_the_cuts_class_maps(backbone):
    """LayerCAM's classmaps layer at conv5_3 is 16x16 (the new class maps), 7x7 at pool5."""
    x = images(1, 256)
    for cut, side in (("pool5", 7), ("conv5_3", 16)):
        model = tiny(backbone, "CAM-paper", cut)
        result = compute.compute_maps(model, x, "LayerCAM", targets=0, layers=["classmaps"])
        assert result.raw_native.shape == (1, side, side)


@pytest.mark.parametrize("kind,cut", CASES)
def test_fullgrad_and_ablation_forwards_are_the_models(backbone, kind, cut):
    """FullGrad's layer-by-layer forward and Ablation-CAM's rest of the network after each layer
    give the model's own logits at every cut (they ran pool5 at conv5_3: another network)."""
    model = tiny(backbone, kind, cut)
    x = images()
    with torch.no_grad():
        want = model(x)
    logits, _ = fullgrad.forward_keeping_convs(model, x)
    torch.testing.assert_close(logits.detach(), want, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        for layer in vgg.STAGES:
            _, acts = model.backbone.forward_with(x, [layer], graph=None)
            got = ablation.downstream(model, layer)(acts[layer])
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=layer)
        maps = model.head.forward_maps(model.backbone(x))[1]
        got = ablation.downstream(model, "classmaps")(maps)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
