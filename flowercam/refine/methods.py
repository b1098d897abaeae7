"""The refinements of a map from its image, by name: the one registry (CLI choices come from
it) and the batch driver (in this process or in worker processes).

    python -c "from flowercam.refine import methods as m; print(list(m.REFINERS))"
    python evaluate.py -d model/RUN --cam-metrics --figures pseudo-masks --refine none crf \
        superpixels

A refined row is named METHOD+REFINER (CAM+crf); the plain map is refiner "none".
"""

from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

from flowercam.core import UserError
from flowercam.refine import crf, regions


def _identity(image, fg_map):
    return np.asarray(fg_map, np.float32)


# name -> f(image [H,W,3] uint8, map [H,W] in [0,1]) -> map [H,W] in [0,1]
# (no random walk: a colour walk from the map's seeds floods the image, docs/refinement.md)
# crf-mean: the CRF with each map's mean as its undecided point (any backbone's maps)
REFINERS = {"none": _identity, "crf": crf.dense_crf, "crf-mean": crf.dense_crf_at_mean,
            "superpixels": regions.superpixels}
SEPARATOR = "+"


def row_name(base, refiner):
    """CAM, crf -> CAM+crf; refiner none -> CAM."""
    return base if refiner == "none" else f"{base}{SEPARATOR}{refiner}"


def split_row(row):
    """CAM+crf -> (CAM, crf); CAM -> (CAM, none)."""
    base, _, refiner = row.rpartition(SEPARATOR)
    return (base, refiner) if base and refiner in REFINERS else (row, "none")


def check(refiners):
    unknown = [r for r in refiners if r not in REFINERS]
    if unknown:
        raise UserError(f"unknown refinement {unknown}: use {', '.join(REFINERS)}")


def _one(job):  # (refiner, image, map): a top-level function, so worker processes can run it
    name, image, fg_map = job
    return REFINERS[name](image, fg_map)


def refine_batch(name, pixels, maps, workers=0):
    """pixels [B,3,H,W] in [0,1], maps [B,H,W] in [0,1] -> refined maps [B,H,W] float32 tensor;
    workers > 0: that many worker processes (the refiners are single-threaded C / numpy)."""
    check([name])
    if name == "none":
        return maps.float().clone()
    images = (pixels.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    jobs = [(name, image, m) for image, m in zip(images, maps.float().cpu().numpy(), strict=True)]
    if workers > 0 and len(jobs) > 1:
        with ProcessPoolExecutor(min(workers, len(jobs))) as pool:
            out = list(pool.map(_one, jobs))
    else:
        out = [_one(job) for job in jobs]
    return torch.from_numpy(np.stack(out)).float()
