"""The rows of --cam-metrics: each map method and baseline, plain or refined from the image
(METHOD+REFINER, flowercam.refine), and the maps of one batch for every row.

    python -c "from flowercam.metrics import maprows; \
print(maprows.expand(['CAM', 'center', 'full'], ['none', 'crf'], ['CAM']))"

A base map is computed once per batch and refined by each refiner; a row's seconds per image
are its base map's plus its refinement's (the cost of making that pseudo-mask).
"""

import time

from flowercam.cam import compute, methods
from flowercam.refine import methods as refiners

# the baselines refined beside the methods: center (what the image alone adds to a prior); full
# is all ones (nothing to refine) and the few-shot rows are trained on masks (scored plain)
REFINED_BASELINES = ("center",)


def method_maps(model, method, images, shared, cfg):
    """[B,H,W] min-max normalised maps at input size (fp32, one call per batch); cfg.scales /
    cfg.flip aggregate every method over rescaled and flipped images, cfg.layers picks the
    layers of every method that takes some (methods.layer_options)."""
    targets = shared["targets"].to(cfg.device)
    options = methods.layer_options(method, cfg.layers)
    agg = compute.Aggregation(tuple(cfg.scales), cfg.flip)
    result = compute.maps_reusing(model, images.to(cfg.device), method, shared, targets, agg,
                                  normalize_by="minmax", **options)
    return result.maps.detach().float().cpu()


def expand(rows, refine, methods=()):
    """Every method (and REFINED_BASELINES) row with every refiner ("none": the plain map), the
    other rows plain; rows outer."""
    refiners.check(refine)
    return [refiners.row_name(row, how) for row in rows for how in refine
            if how == "none" or row in methods or row in REFINED_BASELINES]


def batch_maps(rows, base_fn, pixels, workers=0):
    """{row: (maps [B,H,W] in [0,1], seconds per image)} of one batch, in row order.

    base_fn(name) -> [B,H,W] base map of a method or baseline; pixels [B,3,H,W] in [0,1]: the
    images the refiners read; workers: refinement worker processes (0: this one).
    """
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
