"""The rest of the CAM family against pytorch-grad-cam 1.5.7 (a test-only dependency,
requirements.txt) on tiny seeded models, and against the papers' equations where the definitions
differ. torchcam's SS-CAM / IS-CAM: tests/test_cam_family_torchcam.py; the family's general
properties: tests/test_cam_family_properties.py."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pytorch_grad_cam import (
    FEM,
    KPCA_CAM,
    AblationCAM,
    EigenCAM,
    EigenGradCAM,
    FullGrad,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ShapleyCAM,
    XGradCAM,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget, FinerWeightedTarget
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction
from torch import nn
from training_data import images, make_model

from flowercam.cam import (
    compute,
    eigen,
    fullgrad,
    gradients,
    methods,
    smoothgrad,
)
from flowercam.model import vgg

C = 17
STAGE5 = vgg.STAGES["stage5"]


def their_layer_cam(cls, model, x, targets, eigen_smooth=False, index=STAGE5):
    """pytorch-grad-cam's per-layer map of model.backbone.features[index] before its ReLU,
    upsampling and scaling (BaseCAM.forward up to get_cam_image), for the target objects."""
    layer = model.backbone.features[index]
    x = x.clone().requires_grad_(True)  # our backbone is frozen: the graph starts at the input
    cam = cls(model, [layer])
    try:
        outputs = cam.activations_and_grads(x)
        if cam.uses_gradients:
            loss = sum(t(o) for t, o in zip(targets, outputs, strict=True))
            if cam.detach:
                loss.backward(retain_graph=True)
            else:
                torch.autograd.grad(loss, x, retain_graph=True, create_graph=True)
        store = cam.activations_and_grads
        acts, grads = store.activations, store.gradients
        if cam.detach:
            acts, grads = [a.numpy() for a in acts], [g.numpy() for g in grads]
        got = cam.get_cam_image(x, layer, targets, acts[0], grads[0] if grads else None,
                                eigen_smooth)
    finally:
        cam.activations_and_grads.release()
    return torch.as_tensor(np.asarray(got, dtype=np.float64))


def classes(targets):
    return [ClassifierOutputTarget(int(t)) for t in targets]


def close(ours, theirs, tol=1e-5):
    torch.testing.assert_close(ours.double(), theirs.double(), rtol=tol,
                               atol=tol * float(theirs.abs().max()))
    assert theirs.abs().max() > 0  # a comparison of zeros would prove nothing


def model64(kind="CAM", gain=1.0):
    """gain: scales the linear layer (and so the gradients); pytorch-grad-cam's Grad-CAM++ adds
    1e-6 to alpha's denominator, which tiny random-model gradients (g^2 ~ 1e-7) would not swamp."""
    model = make_model(kind, dtype=torch.float64)
    with torch.no_grad():
        model.head.fc.weight.mul_(gain)
    return model


def ours(model, x, method, targets, layer="stage5", **options):
    option = methods.METHODS[method].layer_option
    layer_opts = {option: layer} if option else {}
    return compute.compute_maps(model, x, method, targets=targets, **layer_opts,
                                **options).raw_native


GRADCAM_STYLE = [("GradCAM", GradCAM), ("GradCAM++", GradCAMPlusPlus), ("HiResCAM", HiResCAM),
                 ("GradCAMElementWise", GradCAMElementWise), ("XGradCAM", XGradCAM),
                 ("FEM", FEM)]


@pytest.mark.parametrize(("method", "cls"), GRADCAM_STYLE)
@pytest.mark.parametrize("kind", ["CAM", "ReCAM"])
def test_gradcam_style_maps_equal_pytorch_grad_cams(method, cls, kind):
    gain = 1e3 if method == "GradCAM++" else 1.0
    model, x, targets = model64(kind, gain), images(2, 64, dtype=torch.float64), [3, 11]
    theirs = their_layer_cam(cls, model64(kind, gain), x, classes(targets))
    close(ours(model, x, method, targets), F.relu(theirs))
    if method != "FEM":  # eigen_smooth: the first principal component of the same terms
        theirs = their_layer_cam(cls, model64(kind, gain), x, classes(targets), True)
        close(ours(model, x, method, targets, eigen_smooth=True),
              F.relu(eigen.fix_sign(theirs.flatten(1)).view_as(theirs)))


def test_layercam_eigen_smooth_equals_pytorch_grad_cams():
    model, x, targets = model64(), images(2, 64, dtype=torch.float64), [0, 9]
    theirs = their_layer_cam(LayerCAM, model64(), x,
                             classes(targets), True)
    got = compute.compute_maps(model, x, "LayerCAM", targets=targets, layers=["stage5"],
                               eigen_smooth=True, tanh_gain=0, layer_normalize="relu")
    want = F.relu(eigen.fix_sign(theirs.flatten(1)).view_as(theirs))
    close(got.raw_native, want)


@pytest.mark.parametrize(("method", "cls"), [("EigenCAM", EigenCAM),
                                             ("EigenGradCAM", EigenGradCAM)])
def test_eigen_maps_equal_pytorch_grad_cams_up_to_the_fixed_sign(method, cls):
    model, x, targets = model64(), images(2, 64, dtype=torch.float64), [1, 2]
    theirs = their_layer_cam(cls, model64(), x,
                             classes(targets))  # [B,h,w], LAPACK's sign
    fixed = eigen.fix_sign(theirs.flatten(1)).view_as(theirs)
    close(ours(model, x, method, targets), F.relu(fixed))
    assert (fixed.flatten(1).amax(1) >= fixed.flatten(1).amin(1).abs()).all()


def test_the_sign_is_seg_eigen_cams_and_does_not_depend_on_lapack():
    g = torch.Generator().manual_seed(0)
    acts = torch.rand(3, 6, 5, 4, generator=g, dtype=torch.float64)
    acts[1] = -acts[1]
    want = get_2d_projection_with_sign_correction(acts.numpy().astype(np.float32))
    close(eigen.first_component(acts), torch.as_tensor(want))
    assert torch.equal(eigen.first_component(acts), eigen.first_component(-acts))
    assert torch.equal(eigen.fix_sign(torch.tensor([[1.0, -3.0], [2.0, -1.0]])),
                       torch.tensor([[-1.0, 3.0], [2.0, -1.0]]))


def test_kpca_equals_pytorch_grad_cams_scikit_learn_kernel_pca():
    model, x, targets = model64(), images(2, 64, dtype=torch.float64), [4, 4]
    theirs = their_layer_cam(KPCA_CAM, model64(), x,
                             classes(targets))
    close(ours(model, x, "KPCACAM", targets), F.relu(theirs), tol=1e-4)  # theirs: float32


def test_shapleycam_equals_pytorch_grad_cams_with_a_nonzero_hessian():
    # the ReCAM head normalises a CAM: its Hessian is not zero (on the CAM head it is, and
    # ShapleyCAM is Grad-CAM there)
    model, x, targets = model64("ReCAM"), images(2, 64, dtype=torch.float64), [5, 7]
    theirs = their_layer_cam(ShapleyCAM, model64("ReCAM"), x,
                             classes(targets))
    shapley = ours(model, x, "ShapleyCAM", targets)
    close(shapley, F.relu(theirs))
    assert not torch.allclose(shapley, ours(model, x, "GradCAM", targets))
    cam_head = model64("CAM")
    assert torch.allclose(ours(cam_head, x, "ShapleyCAM", targets),
                          ours(cam_head, x, "GradCAM", targets), atol=1e-12)


def test_finercam_equals_pytorch_grad_cams_finer_target():
    model, x = model64(), images(2, 64, dtype=torch.float64)
    with torch.no_grad():
        logits = model(x)
    targets = logits.argmax(1)
    order = (logits - logits.gather(1, targets[:, None])).abs().argsort(1)  # theirs: [0] = t
    finer = [FinerWeightedTarget(int(t), [int(c) for c in row[1:4]], 1.0)
             for t, row in zip(targets, order, strict=True)]
    theirs = their_layer_cam(GradCAM, model64(), x, finer)
    close(ours(model, x, "FinerCAM", None), F.relu(theirs))
    assert not torch.allclose(ours(model, x, "FinerCAM", None), ours(model, x, "GradCAM", None))


def test_ablationcam_at_stage5_equals_pytorch_grad_cams():
    # one 32 px image (pytorch-grad-cam reruns the whole network for each of the 512 channels),
    # the CAM head (at 32 px the ReCAM head's mask of a 1x1 feature map is flat: every logit 0)
    model, x = make_model("CAM"), images(1, 32)
    with torch.no_grad():
        logits = model(x)
    targets = logits.argmax(1).tolist()
    assert logits.max() > 0  # (y - y_k) / y keeps its sign
    theirs = their_layer_cam(AblationCAM, make_model("CAM"), x, classes(targets))
    # their scores are cast to float32: one channel of 512 moves the logit by ~1e-3 of itself,
    # so each weight (y - y_k) / y keeps ~4 of float32's 7 digits
    close(ours(model, x, "AblationCAM", targets, scorecam_batch=100), F.relu(theirs), tol=1e-3)


def test_ablationcam_on_the_class_maps_is_the_papers_equation():
    # CAM head: y_t = sum_k W_tk mean(M_k), so ablating M_k drops y_t by W_tk mean(M_k)
    model, x, targets = model64(), images(3, 64, dtype=torch.float64), torch.tensor([0, 5, 16])
    with torch.no_grad():
        maps = model.head.class_maps(model.backbone(x))
        y = model(x).gather(1, targets[:, None])
    contrib = model.head.fc.weight[targets] * maps.mean((2, 3))  # [B,K]
    want = F.relu(torch.einsum("bk,bkhw->bhw", contrib / y, maps))
    got = ours(model, x, "AblationCAM", targets, layer="classmaps", scorecam_batch=7)
    assert torch.allclose(got, want, atol=1e-10)


def test_sscam_without_noise_and_iscam_of_one_sample_are_scorecam():
    model, x, targets = model64(), images(2, 32, dtype=torch.float64), [1, 6]
    score = ours(model, x, "ScoreCAM", targets, layer="classmaps")
    assert torch.allclose(ours(model, x, "SSCAM", targets, layer="classmaps", ss_std=0.0,
                               ss_samples=2), score, atol=1e-12)
    assert torch.allclose(ours(model, x, "ISCAM", targets, layer="classmaps", is_samples=1),
                          score, atol=1e-12)


def smooth_by_hand(model, x, targets, samples, std, seed):
    """Smooth Grad-CAM++ (Omeiza 2019) image by image, one backward per noisy copy."""
    out = []
    copies = smoothgrad.noisy_copies(x, samples, std, seed).view(samples, *x.shape)
    for b in range(len(x)):
        with torch.no_grad():
            acts = model.head.class_maps(model.backbone(x[b : b + 1]))
        grads = []
        for i in range(samples):
            feats = model.backbone(copies[i, b : b + 1])
            maps = model.head.class_maps(feats.requires_grad_()).detach().requires_grad_()
            logit = model.head.classify(maps)[0, targets[b]]
            grads.append(torch.autograd.grad(logit, maps)[0])
        g = torch.stack(grads)
        g2, g3 = g.pow(2).mean(0), g.pow(3).mean(0)
        den = 2 * g2 + acts.sum((2, 3), keepdim=True) * g3  # the paper's eq. (Grad-CAM++ eq. 19)
        alpha = torch.where(den != 0, g2 / den, torch.zeros_like(den))
        w = (alpha * F.relu(g.mean(0))).sum((2, 3))
        out.append(F.relu(torch.einsum("bk,bkhw->bhw", w, acts)))
    return torch.cat(out)


def test_smooth_gradcampp_is_the_papers_equation_and_gradcampp_without_noise():
    model, x, targets = model64(), images(2, 32, dtype=torch.float64), [3, 12]
    got = ours(model, x, "SmoothGradCAM++", targets, layer="classmaps", sgpp_samples=3,
               sgpp_std=0.5, noise_seed=4)
    assert torch.allclose(got, smooth_by_hand(model, x, targets, 3, 0.5, 4), atol=1e-10)
    plain = ours(model, x, "SmoothGradCAM++", targets, sgpp_samples=1, sgpp_std=0.0)
    assert torch.allclose(plain, ours(model, x, "GradCAM++", targets), atol=1e-10)


def their_fullgrad(model, x, targets):
    cam = FullGrad(model, [])
    try:
        return torch.as_tensor(cam(x.clone().requires_grad_(True), classes(targets)))
    finally:
        cam.activations_and_grads.release()


def with_biases(model):
    torch.manual_seed(3)
    for m in model.modules():  # VGG's init zeroes the biases: FullGrad would see only the input
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.bias, std=0.1)
    return model


def test_fullgrad_equals_pytorch_grad_cams():
    model, x, targets = with_biases(model64()), images(2, 64, dtype=torch.float64), [6, 10]
    theirs = their_fullgrad(with_biases(model64()), x, targets)  # [B,H,W] min-max scaled
    got = compute.compute_maps(model, x, "FullGrad", targets=targets)
    close(got.maps, theirs, tol=1e-5)
    assert got.raw.shape == got.raw_native.shape == (2, 64, 64)


def test_fullgrad_is_the_sum_of_the_input_and_14_bias_terms():
    model, x = with_biases(model64()), images(1, 32, dtype=torch.float64)
    image = x.clone().requires_grad_()
    logits, convs = fullgrad.forward_keeping_convs(model, image)
    assert len(convs) == 14 and torch.allclose(logits, model(x))
    assert [c for c, _ in convs][-1] is model.head.conv


def test_gradients_terms_sum_to_the_maps():
    g = torch.Generator().manual_seed(1)
    acts, grads = torch.rand(2, 4, 3, 5, generator=g), torch.randn(2, 4, 3, 5, generator=g)
    assert torch.allclose(gradients.summed(gradients.gradcampp_terms)(acts, grads, None),
                          methods.gradcampp(acts, grads), atol=1e-6)
    assert torch.allclose(gradients.summed(gradients.gradcam_terms)(acts, grads, None),
                          methods.gradcam(acts, grads), atol=1e-6)
