"""Naive O(N^2) mean-field dense CRF (Kraehenbuehl & Koltun 2011), the tests' reference for
crf.dense_crf on tiny images (N = H*W pixels; the kernel matrices are N x N).

    python -c "import numpy as np; from tests import crf_reference as r; \
print(r.naive_dense_crf(np.zeros((6, 6, 3), np.uint8), np.eye(6)).round(2))"

Q_l(i) ~ exp(-U_l(i) + sum_m w_m sum_{j != i} kbar_m(i,j) Q_l(j)) (Potts), with the kernels
symmetrically normalised as pydensecrf's default: kbar = D^-1/2 k D^-1/2, D = row sums of k.
"""

import numpy as np

from flowercam.refine import crf


def _kernels(image, s: crf.CRFSettings):
    """[(kbar [N,N], weight)]: the Gaussian (position) and bilateral (position, colour) kernels."""
    h, w, _ = image.shape
    yy, xx = np.mgrid[:h, :w]
    pos = np.stack([xx, yy], -1).reshape(-1, 2).astype(np.float64)
    col = image.reshape(-1, 3).astype(np.float64)
    d2 = ((pos[:, None] - pos[None]) ** 2).sum(-1)  # [N,N] squared pixel distances
    c2 = ((col[:, None] - col[None]) ** 2).sum(-1)  # [N,N] squared colour distances
    out = []
    for k, weight in ((np.exp(-d2 / (2 * s.gauss_sxy ** 2)), s.gauss_compat),
                      (np.exp(-d2 / (2 * s.bilateral_sxy ** 2) - c2 / (2 * s.bilateral_srgb ** 2)),
                       s.bilateral_compat)):
        np.fill_diagonal(k, 0.0)
        norm = 1.0 / np.sqrt(k.sum(1) + 1e-20)
        out.append((norm[:, None] * k * norm[None], weight))
    return out


def naive_dense_crf(image, fg_map, settings: crf.CRFSettings = crf.IRN):
    """image [H,W,3] uint8, fg_map [H,W] -> foreground marginal [H,W] (float64)."""
    u = crf.unary(fg_map, settings.gt_prob).reshape(2, -1).astype(np.float64)
    kernels = _kernels(np.asarray(image), settings)
    q = np.exp(-u - (-u).max(0))
    q /= q.sum(0)
    for _ in range(settings.iterations):
        energy = -u + sum(weight * (k @ q.T).T for k, weight in kernels)
        q = np.exp(energy - energy.max(0))
        q /= q.sum(0)
    return q[1].reshape(fg_map.shape)
