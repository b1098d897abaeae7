"""Refinement of a foreground map from the image's regions: SLIC superpixel averaging
(Achanta et al. 2012, scikit-image). (The colour random walk once here is gone:
docs/refinement.md says why.)

    python -c "from flowercam.refine import regions as r; print(r.SUPERPIXELS)"

Takes image [H,W,3] uint8 and map [H,W] in [0,1] (min-max normalised) and returns a map
[H,W] float32 in [0,1] of the same shape, thresholded like any map.
"""

import dataclasses

import numpy as np
from skimage import segmentation


@dataclasses.dataclass(frozen=True)
class SuperpixelSettings:
    """SLIC: about n_segments regions (~ 18x18 px at 256 px), compactness 10 (scikit-image's)."""

    n_segments: int = 200
    compactness: float = 10.0


SUPERPIXELS = SuperpixelSettings()


def superpixels(image, fg_map, s: SuperpixelSettings = SUPERPIXELS):
    """The map averaged inside each SLIC superpixel of the image [H,W]."""
    fg_map = np.clip(np.asarray(fg_map, np.float64), 0.0, 1.0)
    segments = segmentation.slic(np.asarray(image), n_segments=s.n_segments,
                                 compactness=s.compactness, start_label=0, channel_axis=-1)
    sums = np.bincount(segments.ravel(), weights=fg_map.ravel())
    counts = np.bincount(segments.ravel())
    return (sums / np.maximum(counts, 1))[segments].astype(np.float32)
