"""The rows of --cam-metrics: each map method and baseline, plain or refined from the image
(METHOD+REFINER, flowercam.refine), and the maps of one batch for every row.

    python -c "from flowercam.metrics import maprows; \
print(maprows.expand(['CAM', 'center', 'full'], ['none', 'crf'], ['CAM']))"
    python -c "from flowercam.metrics import maprows; print(maprows.MODEL_FREE)"
    python evaluate.py -d model/RUN --cam-metrics --baselines center full random sobel

A base map is computed once per batch and refined by each refiner; a row's seconds per image
are its base map's plus its refinement's (the cost of making that pseudo-mask).

The baselines: maps that need no classifier, scored beside the methods (config.MAP_BASELINES):
center: Gaussian at the image centre, sigma = side/4 (center_map); full: all ones;
random: seeded uniform noise U(0,1), one draw per image id (the same whatever the batching);
sobel: the Sobel edge magnitude of the grey image (scikit-image), min-max normalised: the
"edge detector" that Adebayo et al. 2018 found some saliency maps to be.
"""

import time
import zlib

import numpy as np
import torch
from skimage.color import rgb2gray
from skimage.filters import sobel

from flowercam.cam import compute, methods
from flowercam.metrics.config import MAP_BASELINES, MapOptions
from flowercam.refine import methods as refiners
from flowercam.segment import segmenter

# the rows refined beside the methods: center (what the image alone adds to a prior) and the
# segmenter (its own maps refined, as its training labels were); full is all ones (nothing to
# refine) and the few-shot rows are trained on masks (scored plain)
REFINED_BASELINES = ("center", segmenter.ROW)


def method_maps(model, method, images, targets, cam_cache, opts: MapOptions):
    """[B,H,W] min-max normalised maps at input size (fp32, one call per batch); opts.scales /
    opts.flip aggregate every method over rescaled and flipped images, opts.layers picks the
    layers of every method that takes some (methods.layer_options); cam_cache: the batch's
    compute.maps_reusing cache (its backbone features)."""
    options = methods.layer_options(method, opts.layers)
    agg = compute.Aggregation(tuple(opts.scales), opts.flip)
    result = compute.maps_reusing(model, images.to(opts.device), method, cam_cache,
                                  targets.to(opts.device), agg, normalize_by="minmax", **options)
    return result.maps.detach().float().cpu()


def expand(rows, refine, methods=()):
    """Every method (and REFINED_BASELINES) row with every refiner ("none": the plain map), the
    other rows plain; rows outer."""
    refiners.check(refine)
    return [refiners.row_name(row, how) for row in rows for how in refine
            if how == "none" or row in methods or row in REFINED_BASELINES]


def batch_maps(model, rows, few_shot, images, ids, pixels, targets, cam_cache,
               opts: MapOptions):
    """{row: (maps [B,H,W] in [0,1], seconds per image)} of one batch, in row order.

    few_shot: {few-shot-N or segmenter: segment.pixels.PixelMap}; images [B,3,H,W] normalised,
    ids [B], pixels [B,3,H,W] in [0,1] (what the baselines and the refiners read), targets [B].
    """
    def base_fn(name):  # [B,H,W]: a few-shot classifier's, a class-agnostic or a method's map
        if name in few_shot:
            return few_shot[name].maps(model.backbone, images.to(opts.device))
        if name in opts.baselines:
            return baseline_maps(name, pixels, ids, opts.seed)
        return method_maps(model, name, images, targets, cam_cache, opts)
    return _refined(rows, base_fn, pixels, opts.refine_workers)


def _refined(rows, base_fn, pixels, workers=0):
    """{row: (maps, seconds per image)}: each base map made once, refined by each refiner."""
    base, out = {}, {}
    for row in rows:
        name, how = refiners.split_row(row)
        if name not in base:
            start = time.perf_counter()
            base[name] = (base_fn(name), time.perf_counter() - start)
        maps, seconds = base[name]
        start = time.perf_counter()
        refined = refiners.refine_batch(how, pixels, maps, workers)
        out[row] = (refined, (seconds + time.perf_counter() - start) / max(len(refined), 1))
    return out


# ---------------------------------------------------------------- baselines: no classifier


def _minmax(x):
    """Min-max normalise to [0,1]; a constant array becomes all zeros."""
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def center_map(h, w, sigma_frac=0.25):
    """[H,W] isotropic Gaussian exp(-d^2 / 2 sigma^2) at the image centre, min-max normalised.

    d = distance to the centre ((h-1)/2, (w-1)/2) in pixels; sigma = sigma_frac * min(h, w).
    """
    sigma = sigma_frac * min(h, w)
    y = np.arange(h) - (h - 1) / 2  # [H]
    x = np.arange(w) - (w - 1) / 2  # [W]
    return _minmax(np.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / (2 * sigma**2)))


def full_map(h, w):
    """[H,W] all ones: the whole-image box at every tau."""
    return np.ones((h, w))


MODEL_FREE = ("center", "full", "sobel")  # the same map whatever the model: sanity similarity 1


def random_map(item_id, seed, h, w):
    """[H,W] float32 U(0,1) noise seeded by (seed, image id)."""
    rng = np.random.default_rng([seed, zlib.crc32(str(item_id).encode())])
    return rng.random((h, w), dtype=np.float32)


def sobel_map(pixels):
    """pixels [3,H,W] in [0,1] (tensor or array) -> [H,W] float32 edge magnitude in [0,1]."""
    rgb = np.asarray(pixels, np.float64).transpose(1, 2, 0)
    return _minmax(sobel(rgb2gray(rgb))).astype(np.float32)  # a flat image: all zeros


def baseline_maps(name, pixels, ids, seed=0):
    """[B,H,W] float32 maps of baseline `name` for images pixels [B,3,H,W] in [0,1] with ids [B]."""
    if name not in MAP_BASELINES:
        raise ValueError(f"unknown baseline {name!r}: use one of {MAP_BASELINES}")
    n, _, h, w = pixels.shape
    if name in ("center", "full"):
        one = center_map(h, w) if name == "center" else full_map(h, w)
        return torch.from_numpy(one).float().expand(n, h, w).contiguous()
    if name == "random":
        return torch.from_numpy(np.stack([random_map(i, seed, h, w) for i in ids]))
    return torch.from_numpy(np.stack([sobel_map(p) for p in pixels.cpu().numpy()]))
