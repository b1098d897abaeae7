"""Smooth Grad-CAM++ (Omeiza et al. 2019): Grad-CAM++ with gradients averaged over noisy copies.

    python -c "from flowercam.cam import smoothgrad; help(smoothgrad.smooth_maps)"
    .venv/bin/pytest tests/test_cam_family.py -q -k smooth

One forward and ONE backward per batch: the clean images and their N noisy copies
x + d_i, d_i ~ N(0, sigma^2) (torchcam's N = 4, sigma = 0.3 in normalised-input units) go through
the network together; the copies' target logits are summed and differentiated once. The noise is
drawn from a CPU generator seeded with `noise_seed` (noise.seeded_normal), the same draws for every
image of the batch and on every device.
The formula is flowercam/cam/gradients.py's smooth_gradcampp_terms.
"""

import torch

from flowercam.cam.maps import MapResult, capture, combine, targets_of, weigh
from flowercam.cam.methods import layers_of
from flowercam.cam.noise import seeded_normal
from flowercam.core import UserError
from flowercam.model.normalization import normalize


def noisy_copies(x, samples, std, seed):
    """x [B,3,H,W] -> [N*B,3,H,W], copy i*B+b = x_b + d_i (d_i shared by the images)."""
    noise = seeded_normal(1, (samples, *x.shape[1:]), std, seed, x)[0]  # [N,3,H,W]
    return (x[None] + noise[:, None]).flatten(0, 1)


@torch.enable_grad()
def smooth_maps(model, x, method, targets, opts):
    """Smooth Grad-CAM++ on images x [B,3,H,W] -> MapResult on x's device."""
    if torch.is_inference_mode_enabled():
        raise UserError(f"{method} needs gradients: call compute_maps outside "
                        "torch.inference_mode()")
    layers, batch, samples = layers_of(method, opts), len(x), opts["sgpp_samples"]
    images = torch.cat([x, noisy_copies(x, samples, opts["sgpp_std"], opts["noise_seed"])])
    acts, logits_all = capture(model, images, layers)
    logits = logits_all[:batch].detach()
    tgt = targets_of(targets, logits)
    score = logits_all[batch:].gather(1, tgt.repeat(samples)[:, None]).sum()
    grads = torch.autograd.grad(score, [acts[name] for name in layers])
    with torch.no_grad():
        per_layer = [weigh(method, opts, acts[name][:batch].detach(),
                           g[batch:].view(samples, batch, *g.shape[1:]), None)
                     for name, g in zip(layers, grads, strict=True)]
        raw, raw_native = combine(method, per_layer, opts, x.shape[-2:])
        maps = normalize(raw, opts["normalize_by"])
    return MapResult(raw, maps, logits, tgt, method, opts, raw_native)
