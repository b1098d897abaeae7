"""Per-map normalisation to [0, 1]: every map's last step, and ReCAM's mask of the class maps.

    python -c "import torch; from flowercam.model import normalization as n; \
print(n.normalize(torch.arange(4.).view(1, 2, 2)))"
"""

import torch

from flowercam.core import UserError

NORMALIZERS = ("minmax", "sigmoid", "relu")


def normalize(maps, how="minmax", eps=1e-6):
    """Per-map normalisation over the last two dims to [0, 1]; a flat (constant) map gives zeros.

    maps [..., H, W] -> same shape, new tensor (the input is never modified).
    minmax: (x - min) / (max - min); sigmoid: sigmoid(x); relu: relu(x) / max(relu(x)).
    """
    if how not in NORMALIZERS:
        raise UserError(f"unknown normalisation {how!r}: use one of {', '.join(NORMALIZERS)}")
    # amin/amax: ties share the gradient evenly, so ReCAM's mask gradient does not depend on
    # which of several equal minima float noise happens to pick
    lo = maps.amin((-2, -1), keepdim=True)
    hi = maps.amax((-2, -1), keepdim=True)
    if how == "minmax":
        out = (maps - lo) / (hi - lo).clamp_min(eps)
    elif how == "sigmoid":
        out = torch.sigmoid(maps)
    else:
        pos = torch.relu(maps)
        out = pos / pos.amax((-2, -1), keepdim=True).clamp_min(eps)
    # a constant map carries no location: zeros, never NaN or a uniform 0.5
    return torch.where((hi - lo) <= eps, torch.zeros_like(out), out)
