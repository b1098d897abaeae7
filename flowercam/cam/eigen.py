"""Principal components of a layer's (weighted) activations: EigenCAM, EigenGrad-CAM, KPCA-CAM and
pytorch-grad-cam's `eigen_smooth`.

    python -c "from flowercam.cam import eigen; help(eigen.first_component)"
    .venv/bin/pytest tests/test_cam_family.py -q -k eigen

The positions of a map are the samples, its channels the features: T [B,K,h,w] -> X [B,hw,K],
centred over the positions. A principal component's sign is arbitrary (X = U S V^T = (-U) S (-V)^T);
we fix it as scikit-learn's svd_flip and pytorch-grad-cam's Seg-Eigen-CAM (Eq. 13) do: the value of
largest magnitude is positive. pytorch-grad-cam's EigenCAM leaves the sign to LAPACK.
"""

import torch
import torch.nn.functional as F


def _positions(terms):
    """[B,K,h,w] -> centred samples [B,hw,K] (NaN -> 0, as pytorch-grad-cam)."""
    x = torch.nan_to_num(terms.flatten(2).transpose(1, 2), nan=0.0)
    return x - x.mean(1, keepdim=True)


def fix_sign(projection):
    """[B,N] -> each row times +-1 so that its value of largest magnitude is positive."""
    peak = projection.gather(1, projection.abs().argmax(1, keepdim=True))
    return projection * torch.where(peak < 0, -1.0, 1.0).to(projection.dtype)


def first_component(terms):
    """Projection on the first principal direction: terms [B,K,h,w] -> [B,h,w] (before ReLU).
    All-constant terms give zeros (the centred samples are 0)."""
    x = _positions(terms)
    v = torch.linalg.svd(x, full_matrices=False).Vh[:, 0]  # [B,K]
    projection = torch.einsum("bnk,bk->bn", x, v)
    return fix_sign(projection).view(terms.shape[0], *terms.shape[2:])


def kernel_component(terms, gamma=None, coef0=1.0):
    """Kernel PCA's first component with the sigmoid kernel tanh(gamma <x, y> + coef0)
    (pytorch-grad-cam's KPCA-CAM: scikit-learn's KernelPCA, gamma = 1 / K by default):
    terms [B,K,h,w] -> [B,h,w]; sqrt(lambda) v of the centred kernel's top eigenpair."""
    x = _positions(terms)
    n = x.shape[1]
    gram = torch.tanh((1.0 / x.shape[2] if gamma is None else gamma) * x @ x.transpose(1, 2)
                      + coef0)
    centre = torch.eye(n, dtype=x.dtype, device=x.device) - 1.0 / n
    values, vectors = torch.linalg.eigh(centre @ gram @ centre)  # ascending
    top = values[:, -1].clamp_min(0)  # scikit-learn sets negative eigenvalues to 0
    projection = fix_sign(vectors[:, :, -1]) * top.sqrt()[:, None]
    return projection.view(terms.shape[0], *terms.shape[2:])


def eigencam(acts, grads=None, weights=None):
    """EigenCAM (Muhammad & Yeasin 2020): relu(A V_1), the first principal component of the
    activations; no gradient, class-agnostic."""
    return F.relu(first_component(acts))


def eigengradcam(acts, grads, weights=None):
    """EigenGrad-CAM (pytorch-grad-cam): relu of the first principal component of g * A."""
    return F.relu(first_component(grads * acts))


def kpcacam(acts, grads=None, weights=None):
    """KPCA-CAM (Karmani et al. 2024): relu of kernel PCA's first component of the activations
    (sigmoid kernel); no gradient, class-agnostic."""
    return F.relu(kernel_component(acts))
