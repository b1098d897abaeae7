"""The rows of --cam-metrics: each map method and baseline, plain or refined from the image
(METHOD+REFINER, flowercam.refine), and the maps of one batch for every row.

    python -c "from flowercam.metrics import maprows; \
print(maprows.expand(['CAM', 'center', 'full'], ['none', 'crf'], ['CAM']))"

A base map is computed once per batch and refined by each refiner; a row's seconds per image
are its base map's plus its refinement's (the cost of making that pseudo-mask).
"""

import time

from flowercam.cam import compute, methods
from flowercam.metrics import baselines
from flowercam.metrics.config import MapOptions
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
            return baselines.baseline_maps(name, pixels, ids, opts.seed)
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
