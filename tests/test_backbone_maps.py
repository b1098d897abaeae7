"""timm's CNNs and ViTs through the map drivers (random seeded weights, small inputs): every
applicable method's maps equal pytorch-grad-cam's on the same model, layer and target (the ViT's
with its reshape_transform at the grid the protocol found), the CAM identity of each backbone's
CAM head, Ablation-CAM's rest of the network is the model's own, and FullGrad is refused in one
line where the backbone has no conv biases. Not compared here: Ablation-CAM and the Score-CAM
family (pytorch-grad-cam reruns the whole network per channel; for signed activations its
ablation value is min(A) - 1e7, ours the paper's 0). docs/backbones.md: what each backbone gets."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pytorch_grad_cam import (
    FEM,
    EigenCAM,
    EigenGradCAM,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    XGradCAM,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from flowercam.backbones import protocol, registry
from flowercam.cam import ablation, compute, eigen, methods
from flowercam.core import UserError
from flowercam.model import heads

CLASSES = 5
# backbone -> (a stage to read, input height, width): small inputs keep it fast; the ViT's is
# not square (a 4 x 6 grid of 16 px patches)
CASES = {"resnet50": ("layer3", 64, 64), "convnext_tiny": ("stages.2", 64, 64),
         "efficientnet_lite0": ("blocks.4", 64, 64),
         "vit_base_patch16_224": ("blocks.10", 64, 96)}
GRADIENT_METHODS = [("GradCAM", GradCAM), ("GradCAM++", GradCAMPlusPlus), ("HiResCAM", HiResCAM),
                    ("GradCAMElementWise", GradCAMElementWise), ("XGradCAM", XGradCAM),
                    ("LayerCAM", LayerCAM), ("FEM", FEM), ("EigenCAM", EigenCAM),
                    ("EigenGradCAM", EigenGradCAM)]


@pytest.fixture(scope="module")
def models():
    """{name: Classifier} of each backbone (seeded random weights) + a seeded CAM head, float64."""
    out = {}
    for name in CASES:
        backbone = registry.load_backbone(name, seed=0)
        with protocol.seeded(1):
            head = heads.CAMHead(CLASSES, backbone.channels)
        out[name] = heads.Classifier(backbone, head).double().eval()
    return out


def images(name, batch=2, seed=2):
    _, height, width = CASES[name]
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, height, width, generator=g, dtype=torch.float64)


def reshape_for(model, x):
    """pytorch-grad-cam's ViT reshape_transform at the grid of x (None for a CNN): drop the class
    token, lay the patch tokens out B x C x h x w."""
    vit = model.backbone.model
    if not model.backbone.vit:
        return None
    grid = tuple(vit.patch_embed.dynamic_feat_size(x.shape[-2:]))
    prefix = vit.num_prefix_tokens
    return lambda t: t[:, prefix:].reshape(t.size(0), *grid, t.size(2)).permute(0, 3, 1, 2)


def their_map(cls, model, stage, x, targets, **kwargs):
    """pytorch-grad-cam's per-layer map (BaseCAM.forward up to get_cam_image, before its ReLU,
    upsampling and scaling) at the backbone module `stage`."""
    layer = model.backbone.model.get_submodule(stage)
    x = x.clone().requires_grad_(True)  # our backbone is frozen: the graph starts at the input
    cam = cls(model, [layer], reshape_transform=reshape_for(model, x), **kwargs)
    targets = [ClassifierOutputTarget(int(t)) for t in targets]
    try:
        outputs = cam.activations_and_grads(x)
        if cam.uses_gradients:
            sum(t(o) for t, o in zip(targets, outputs, strict=True)).backward(retain_graph=True)
        store = cam.activations_and_grads
        acts = [a.numpy() for a in store.activations]
        grads = [g.numpy() for g in store.gradients]
        got = cam.get_cam_image(x, layer, targets, acts[0], grads[0] if grads else None, False)
    finally:
        cam.activations_and_grads.release()
    return torch.as_tensor(np.asarray(got, dtype=np.float64))


def ours(model, x, method, targets, stage, **options):
    option = methods.METHODS[method].layer_option
    layer = {option: [stage] if option == "layers" else stage}
    if method == "LayerCAM":  # one layer, no fusion: the layer's own map
        options = {"tanh_gain": 0, "layer_normalize": "relu", **options}
    return compute.compute_maps(model, x, method, targets=targets, **layer,
                                **options).raw_native


def close(ours_map, theirs, tol=1e-5):
    torch.testing.assert_close(ours_map.double(), theirs.double(), rtol=tol,
                               atol=tol * float(theirs.abs().max()))
    assert theirs.abs().max() > 0  # a comparison of zeros would prove nothing


# XGrad-CAM divides by sum_ab A_k: a ViT's tokens are signed, so some sums are ~0 and
# pytorch-grad-cam's 1e-7 in that denominator moves its maps by percents (ours: 0/0 -> 0); it is
# ill-posed there, compared on the CNNs only
PAIRS = [(name, method, cls) for name in CASES for method, cls in GRADIENT_METHODS
         if not (method == "XGradCAM" and name.startswith("vit"))]


@pytest.mark.parametrize(("name", "method", "cls"), PAIRS)
def test_maps_equal_pytorch_grad_cams(models, name, method, cls):
    model, (stage, _, _) = models[name], CASES[name]
    x = images(name)
    with torch.no_grad():  # the predicted classes (a random model's other classes' maps can
        targets = model(x).argmax(1).tolist()  # be all below zero: relu gives zeros)
    # pytorch-grad-cam's Grad-CAM++ adds 1e-6 to alpha's denominator, which tiny random-model
    # gradients would not swamp: the linear layer scaled (so the gradients) for it
    gain = 1e6 if method == "GradCAM++" else 1.0
    with torch.no_grad():
        model.head.fc.weight.mul_(gain)
    try:
        theirs = their_map(cls, model, stage, x, targets)
        if method in ("EigenCAM", "EigenGradCAM"):  # ours: the sign fixed (eigen.fix_sign)
            theirs = eigen.fix_sign(theirs.flatten(1)).view_as(theirs)
        close(ours(model, x, method, targets, stage), F.relu(theirs))
    finally:
        with torch.no_grad():
            model.head.fc.weight.div_(gain)


@pytest.mark.parametrize("name", CASES)
def test_the_cam_identity_holds_for_each_cam_head(models, name):
    """The spatial mean of class c's CAM is logit c (the CAM head's linear layer has no bias)."""
    model, x = models[name], images(name)
    with torch.no_grad():
        logits = model(x)
    for c in range(CLASSES):
        cam = compute.compute_maps(model, x, "CAM", targets=c).raw_native  # [B,h,w]
        torch.testing.assert_close(cam.mean((1, 2)), logits[:, c], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", CASES)
def test_ablations_rest_of_the_network_is_the_models(models, name):
    """Ablation-CAM's forward from any stage (the stage's own output put back) gives the model's
    logits: it explains the model itself."""
    model, x = models[name], images(name)
    with torch.no_grad():
        want = model(x)
        for stage in model.backbone.stages:
            _, acts = model.backbone.forward_with(x, [stage], graph=None)
            got = ablation.downstream(model, stage, x)(acts[stage])
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9, msg=stage)


def test_fullgrad_is_refused_in_one_line_without_conv_biases(models):
    model = models["resnet50"]
    assert "FullGrad" not in methods.supported("CAM", backbone=model.backbone)
    assert "FullGrad" in methods.supported("CAM")  # the default backbone, VGG16, has them
    with pytest.raises(UserError) as err:
        compute.compute_maps(model, images("resnet50"), "FullGrad")
    assert "conv biases" in str(err.value) and "\n" not in str(err.value)


def test_layers_are_the_backbones_stages(models):
    """LayerCAM's default is the backbone's map stages and the class maps; a VGG16 name on
    another backbone is one line naming its stages."""
    model = models["vit_base_patch16_224"]
    opts = methods.resolve_options("LayerCAM", {}, model.backbone)
    assert opts["layers"] == ["blocks.9", "blocks.10", "classmaps"]
    assert opts["layer_weights"] == [0.4, 0.4, 0.2]
    with pytest.raises(UserError, match="blocks.11"):
        methods.resolve_options("LayerCAM", {"layers": ["pool3"]}, model.backbone)
    result = compute.compute_maps(model, images("vit_base_patch16_224", 1), "LayerCAM")
    assert result.raw.shape == (1, 64, 96)
