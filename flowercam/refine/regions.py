"""Refinement of a foreground map from the image's regions: a random walk from the map's
confident pixels (Grady 2006; seeds as IRN's, Ahn et al. 2019) and SLIC superpixel averaging
(Achanta et al. 2012), both scikit-image.

    python -c "import numpy as np; from flowercam.refine import regions as r; \
print(r.random_walk(np.zeros((8, 8, 3), np.uint8), np.eye(8)).shape)"
    python -c "from flowercam.refine import regions as r; print(r.WALK, r.SUPERPIXELS)"

Both take image [H,W,3] uint8 and map [H,W] in [0,1] (min-max normalised) and return a map
[H,W] float32 in [0,1] of the same shape, thresholded like any map.
"""

import dataclasses
import warnings

import numpy as np
from skimage import segmentation


@dataclasses.dataclass(frozen=True)
class WalkSettings:
    """Seeds: foreground where map >= fg, background where map < bg (IRN's conf_fg_thres 0.30,
    conf_bg_thres 0.05); beta: edge weight exp(-beta * colour gradient^2), scikit-image's 130."""

    fg: float = 0.30
    bg: float = 0.05
    beta: float = 130.0


@dataclasses.dataclass(frozen=True)
class SuperpixelSettings:
    """SLIC: about n_segments regions (~ 18x18 px at 256 px), compactness 10 (scikit-image's)."""

    n_segments: int = 200
    compactness: float = 10.0


WALK, SUPERPIXELS = WalkSettings(), SuperpixelSettings()


def seeds(fg_map, s: WalkSettings = WALK):
    """[H,W] int: 2 confident foreground, 1 confident background, 0 left to the walk."""
    labels = np.zeros(fg_map.shape, np.int32)
    labels[fg_map < s.bg] = 1
    labels[fg_map >= s.fg] = 2
    return labels


def random_walk(image, fg_map, s: WalkSettings = WALK):
    """P(a walk from the pixel first reaches a foreground seed) [H,W] (a direct sparse solve:
    exact, and faster than conjugate gradients at 256 px); the map unchanged when
    one kind of seed is missing (nothing to walk between)."""
    fg_map = np.clip(np.asarray(fg_map, np.float32), 0.0, 1.0)
    labels = seeds(fg_map, s)
    if not ((labels == 1).any() and (labels == 2).any()):
        return fg_map.copy()
    data = np.asarray(image, np.float64) / 255.0
    with warnings.catch_warnings():  # "the probability range is outside [0, 1]": clipped below
        warnings.simplefilter("ignore")
        prob = segmentation.random_walker(data, labels, beta=s.beta, mode="bf",
                                          channel_axis=-1, return_full_prob=True)
    return np.clip(prob[1], 0.0, 1.0).astype(np.float32)  # [2,H,W]: background, foreground


def superpixels(image, fg_map, s: SuperpixelSettings = SUPERPIXELS):
    """The map averaged inside each SLIC superpixel of the image [H,W]."""
    fg_map = np.clip(np.asarray(fg_map, np.float64), 0.0, 1.0)
    segments = segmentation.slic(np.asarray(image), n_segments=s.n_segments,
                                 compactness=s.compactness, start_label=0, channel_axis=-1)
    sums = np.bincount(segments.ravel(), weights=fg_map.ravel())
    counts = np.bincount(segments.ravel())
    return (sums / np.maximum(counts, 1))[segments].astype(np.float32)
