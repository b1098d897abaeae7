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


@dataclasses.dataclass(frozen=True)
class LabelSettings:
    fg_threshold: float = 0.5  # refined map >= this: flower
    bg_threshold: float = 0.15  # map <= this (and refined below fg_threshold): background

    def check(self):
        if not 0 <= self.bg_threshold < self.fg_threshold <= 1:
            raise UserError(f"the background threshold {self.bg_threshold} must be below the "
                            f"foreground threshold {self.fg_threshold}, both in [0, 1]")


DEFAULT = LabelSettings()


def confident(fg_map, refined, s: LabelSettings = DEFAULT) -> np.ndarray:
    """fg_map, refined [H,W] in [0,1] -> labels [H,W] uint8 (1, 0 or IGNORED)."""
    fg_map, refined = np.asarray(fg_map), np.asarray(refined)
    out = np.full(fg_map.shape, IGNORED, np.uint8)
    fg = refined >= s.fg_threshold
    out[fg] = 1
    out[~fg & (fg_map <= s.bg_threshold)] = 0
    return out


def at_side(labels, side) -> np.ndarray:
    """labels [H,W] -> [side,side] by nearest neighbour (as the masks are resized)."""
    return masks.resize_labels(labels, side).astype(np.uint8)


def sample(labels, n, rng) -> tuple[np.ndarray, np.ndarray]:
    """(flat indices, targets float32) of up to n // 2 flower and n // 2 background pixels of
    labels [side,side] (balanced within the image; all of a class that has fewer)."""
    flat = labels.ravel()
    picked = []
    for value in (1, 0):
        where = np.flatnonzero(flat == value)
        picked.append(rng.choice(where, min(n // 2, len(where)), replace=False))
    where = np.concatenate(picked)
    return where, flat[where].astype(np.float32)
