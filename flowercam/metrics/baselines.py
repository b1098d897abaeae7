"""The maps that need no classifier, scored beside every method: what a figure is worth when the
map ignores the model (center, full), the image's content (random) or all but its edges (sobel).

    python -c "from flowercam.metrics import baselines as b; print(b.MAP_BASELINES)"
    python evaluate.py -d model/RUN --cam-metrics --baselines center full random sobel

center: Gaussian at the image centre, sigma = side/4 (boxes.center_map); full: all ones;
random: seeded uniform noise U(0,1), one draw per image id (the same whatever the batching);
sobel: the Sobel edge magnitude of the grey image (scikit-image), min-max normalised: the
"edge detector" that Adebayo et al. 2018 found some saliency maps to be.
"""

import zlib

import numpy as np
import torch
from skimage.color import rgb2gray
from skimage.filters import sobel

from flowercam.metrics import boxes
from flowercam.metrics.config import MAP_BASELINES

MODEL_FREE = ("center", "full", "sobel")  # the same map whatever the model: sanity similarity 1


def random_map(item_id, seed, h, w):
    """[H,W] float32 U(0,1) noise seeded by (seed, image id)."""
    rng = np.random.default_rng([seed, zlib.crc32(str(item_id).encode())])
    return rng.random((h, w), dtype=np.float32)


def sobel_map(pixels):
    """pixels [3,H,W] in [0,1] (tensor or array) -> [H,W] float32 edge magnitude in [0,1]."""
    rgb = np.asarray(pixels, np.float64).transpose(1, 2, 0)
    edges = sobel(rgb2gray(rgb))
    span = edges.max() - edges.min()
    edges = (edges - edges.min()) / span if span > 0 else np.zeros_like(edges)
    return edges.astype(np.float32)  # a flat image has no edge: all zeros


def baseline_maps(name, pixels, ids, seed=0):
    """[B,H,W] float32 maps of baseline `name` for images pixels [B,3,H,W] in [0,1] with ids [B]."""
    if name not in MAP_BASELINES:
        raise ValueError(f"unknown baseline {name!r}: use one of {MAP_BASELINES}")
    n, _, h, w = pixels.shape
    if name in ("center", "full"):
        one = boxes.center_map(h, w) if name == "center" else boxes.full_map(h, w)
        return torch.from_numpy(one).float().expand(n, h, w).contiguous()
    if name == "random":
        return torch.from_numpy(np.stack([random_map(i, seed, h, w) for i in ids]))
    return torch.from_numpy(np.stack([sobel_map(p) for p in pixels.cpu().numpy()]))
