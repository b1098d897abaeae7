"""How alike two maps of the same image are (the sanity checks of Adebayo et al. 2018): Spearman
rank correlation of the maps and of their absolute values, SSIM, and HOG similarity.

    python -c "from flowercam.sanity import similarity as s; import numpy as np; \
a = np.random.rand(1, 32, 32); print(s.similarities(a, a, a, a))"

Per image pair: raw maps (signed, before normalisation: the Spearman figures) and min-max
normalised maps in [0,1] (SSIM, HOG). Spearman = Pearson correlation of the pixel ranks (ties get
their mean rank); |Spearman| ranks |raw|. SSIM: scikit-image, data_range 1 (Wang et al. 2004).
HOG similarity: Pearson correlation of the two maps' HOG descriptors (9 orientations, 16 px
cells, 2x2 blocks; Dalal and Triggs 2005), as Adebayo et al. 2018. A constant map (no ranks, no
gradients) scores 0 against a varying map and 1 against another constant one (pearson), so a
randomisation whose maps vanish scores 0 like one whose maps changed: "constant" (100 when the
randomised model's raw map is constant, else 0; its mean is the share of such images) tells the
two apart.
"""

import numpy as np
from scipy.stats import rankdata
from skimage.feature import hog
from skimage.metrics import structural_similarity

from flowercam.metrics import statistics

# the similarities of two maps (1: alike), then the share of vanished maps; their titles in tables,
# plots and report.html (recorded in sanity.json)
SIMILARITIES = ("spearman", "spearman_abs", "ssim", "hog")
MEASURES = (*SIMILARITIES, "constant")
TITLES = {"spearman": "Spearman", "spearman_abs": "Spearman of |map|", "ssim": "SSIM",
          "hog": "HOG similarity", "constant": "Constant maps %"}
HOG_CELL = 16


def pearson(a, b):
    """Pearson correlation of two flat arrays. A constant array carries no ordering: against a
    varying one 0 (nothing in common), against another constant one 1 (the same: nothing)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    sa, sb = (a * a).sum(), (b * b).sum()
    if sa == 0 or sb == 0:
        return 1.0 if sa == sb else 0.0
    return float((a * b).sum() / np.sqrt(sa * sb))


def spearman(a, b):
    """Rank correlation of two maps [H,W] (ties: mean ranks)."""
    return pearson(rankdata(np.ravel(a)), rankdata(np.ravel(b)))


def ssim(a, b):
    """SSIM of two maps [H,W] in [0,1]."""
    return float(structural_similarity(np.asarray(a, np.float64), np.asarray(b, np.float64),
                                       data_range=1.0))


def _hog(x, cell):
    return hog(np.asarray(x, np.float64), orientations=9, pixels_per_cell=(cell, cell),
               cells_per_block=(2, 2))


def _cell(shape):
    return min(HOG_CELL, min(shape) // 2)


class Reference:
    """The first maps of similarities() ([N,H,W] raw, [N,H,W] in [0,1]) prepared once for many
    comparisons (the sanity checks compare them with every state): their ranks, the ranks of
    their absolute values and their HOG descriptors. The same numbers as similarities()."""

    def __init__(self, raw, maps):
        self.raw, self.maps = raw, maps
        self.ranks = [rankdata(np.ravel(a)) for a in raw]
        self.abs_ranks = [rankdata(np.ravel(np.abs(a))) for a in raw]
        self.hogs = [_hog(m, _cell(np.shape(m))) for m in maps]
        self._itself = None  # compare(raw, maps): computed once (maps that ignore the model)

    def compare(self, raw_b, maps_b):
        """-> {measure: [N] float array} of these maps against raw_b, maps_b [N,H,W]."""
        if np.array_equal(raw_b, self.raw) and np.array_equal(maps_b, self.maps):
            if self._itself is None:
                self._itself = self._compare(raw_b, maps_b)
            return {m: v.copy() for m, v in self._itself.items()}
        return self._compare(raw_b, maps_b)

    def _compare(self, raw_b, maps_b):
        out = {m: np.full(len(self.raw), np.nan) for m in MEASURES}
        for i in range(len(self.raw)):
            out["spearman"][i] = pearson(self.ranks[i], rankdata(np.ravel(raw_b[i])))
            out["spearman_abs"][i] = pearson(self.abs_ranks[i],
                                             rankdata(np.ravel(np.abs(raw_b[i]))))
            out["ssim"][i] = ssim(self.maps[i], maps_b[i])
            out["hog"][i] = pearson(self.hogs[i], _hog(maps_b[i], _cell(np.shape(self.maps[i]))))
            out["constant"][i] = 100.0 * (np.ptp(raw_b[i]) == 0)
        return out


def similarities(raw_a, raw_b, maps_a, maps_b):
    """Per image of [N,H,W] stacks -> {measure: [N] float array} (MEASURES)."""
    return Reference(raw_a, maps_a).compare(raw_b, maps_b)


def summarise(per_image, n_boot=1000, seed=0):
    """{measure: [N]} -> {measure: {"value", "ci95", "n"}}: the mean over images, 95% bootstrap."""
    out = {}
    for measure, values in per_image.items():
        mean, ci, n = statistics.mean_ci(values, n_boot, seed)
        out[measure] = {"value": mean, "ci95": list(ci), "n": int(n)}
    return out
