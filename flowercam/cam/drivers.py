"""Which driver runs a method: the record's kind (flowercam/cam/methods.py) -> one pass on a batch.

    python -c "from flowercam.cam import drivers; print(sorted(drivers.DRIVERS))"
    .venv/bin/pytest tests/test_cams.py tests/test_cam_family.py -q
"""

import torch

from flowercam.cam.fullgrad import fullgrad_maps
from flowercam.cam.maps import activation_maps, feature_maps, gradient_maps, score_maps
from flowercam.cam.methods import METHODS
from flowercam.cam.smoothgrad import smooth_maps

DRIVERS = {"gradients": gradient_maps, "activations": activation_maps, "scores": score_maps,
           "noisy-gradients": smooth_maps, "fullgrad": fullgrad_maps}


def image_maps(model, x, method, targets, opts):
    """Any method on images x [B,3,H,W] -> MapResult: the driver of the method's kind."""
    record = METHODS[method]
    if record.kind == "features":
        with torch.no_grad():
            feats = model.backbone(x)
        return feature_maps(model.head, feats, method, targets, x.shape[-2:], opts)
    return DRIVERS[record.kind](model, x, method, targets, opts)
