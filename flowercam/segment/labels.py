"""Confident pixel labels from a foreground map and its refinement (IRN-style seeds, Ahn et al.
2019): the refined map's foreground is flower, the pixels where the map itself is low are
background, the band between (and any pixel the two disagree on) is ignored.

    python -c "from flowercam.segment import labels; print(labels.DEFAULT)"

Labels: 1 flower, 0 background, IGNORED (255) left out of training.
"""

import dataclasses

import numpy as np

from flowercam.core import UserError
from flowercam.data import masks

IGNORED = 255
SAMPLINGS = ("half", "labels")


@dataclasses.dataclass(frozen=True)
class LabelSettings:
    fg_threshold: float = 0.5  # refined map >= this: flower
    bg_threshold: float = 0.15  # map <= this (and refined below fg_threshold): background
    # refined map <= this (and not flower) is background too (IRN's background from a CRF): the
    # leaves and stems beside the flower that the raw map leaves in the band; None: the raw
    # map's threshold only. 0.3 chosen on the validation mask images (docs/segmenter.md)
    bg_refined_threshold: float | None = 0.3
    # "half": up to n // 2 flower and n // 2 background pixels per image, classes weighted
    # equally in the fit; "labels": n pixels drawn from the image's labelled ones, in their own
    # class proportion, unweighted fit (the prior of the labels, not 50%)
    sampling: str = "half"

    def check(self):
        if not 0 <= self.bg_threshold < self.fg_threshold <= 1:
            raise UserError(f"the background threshold {self.bg_threshold} must be below the "
                            f"foreground threshold {self.fg_threshold}, both in [0, 1]")
        r = self.bg_refined_threshold
        if r is not None and not 0 <= r < self.fg_threshold:
            raise UserError(f"the refined background threshold {r} must be in [0, "
                            f"{self.fg_threshold}) (below the foreground threshold)")
        if self.sampling not in SAMPLINGS:
            raise UserError(f"sampling {self.sampling!r} is not one of {', '.join(SAMPLINGS)}")


DEFAULT = LabelSettings()


def confident(fg_map, refined, s: LabelSettings = DEFAULT) -> np.ndarray:
    """fg_map, refined [H,W] in [0,1] -> labels [H,W] uint8 (1, 0 or IGNORED)."""
    fg_map, refined = np.asarray(fg_map), np.asarray(refined)
    out = np.full(fg_map.shape, IGNORED, np.uint8)
    fg = refined >= s.fg_threshold
    out[fg] = 1
    bg = fg_map <= s.bg_threshold
    if s.bg_refined_threshold is not None:
        bg |= refined <= s.bg_refined_threshold
    out[~fg & bg] = 0
    return out


def at_side(labels, side) -> np.ndarray:
    """labels [H,W] -> [side,side] by nearest neighbour (as the masks are resized)."""
    return masks.resize_labels(labels, side).astype(np.uint8)


def sample(labels, n, rng, sampling="half") -> tuple[np.ndarray, np.ndarray]:
    """(flat indices, targets float32) of labels [side,side]: sampling "half", up to n // 2
    flower and n // 2 background pixels (balanced within the image; all of a class that has
    fewer); "labels", up to n of the labelled pixels, in their own class proportion."""
    flat = labels.ravel()
    if sampling == "labels":
        where = np.flatnonzero(flat != IGNORED)
        where = rng.choice(where, min(n, len(where)), replace=False)
        return where, flat[where].astype(np.float32)
    picked = []
    for value in (1, 0):
        where = np.flatnonzero(flat == value)
        picked.append(rng.choice(where, min(n // 2, len(where)), replace=False))
    where = np.concatenate(picked)
    return where, flat[where].astype(np.float32)
