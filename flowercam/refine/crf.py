"""Dense CRF refinement of a foreground map (Kraehenbuehl & Koltun 2011) with IRN's settings
(Ahn et al. 2019, misc/imutils.crf_inference_label): 10 mean-field iterations, Potts compat.

    python -c "from flowercam.refine import crf; print(crf.IRN)"
    python -c "import numpy as np; from flowercam.refine import crf; \
print(crf.dense_crf(np.zeros((8, 8, 3), np.uint8), np.eye(8)).shape)"

The message passing is pydensecrf2's permutohedral lattice (C++; requirements.txt). The unary
is IRN's label unary made soft: P(fg) = (1 - g) + (2g - 1) * map, so a map of 1 (0) gives the
label's gt_prob g = 0.7 (0.3), as pydensecrf.utils.unary_from_labels does for a hard label; the
output is the foreground marginal Q [H,W] in [0,1], thresholded like any map. Pixel settings
are IRN's unchanged (their images are ~500 px, ours the input size).

That unary is undecided where the map is 0.5, so it assumes maps that are above 0.5 on most of the
object. VGG16's LayerCAM maps are (their best threshold is 0.46); EfficientNet-Lite0's are not
(0.24), and the CRF makes them all background or all foreground (docs/refinement.md).
`dense_crf_at_mean` ("crf-mean") first moves each map's own mean to 0.5, so the undecided point no
longer depends on how a backbone's maps are scaled.
"""

import dataclasses

import numpy as np
import pydensecrf.densecrf as dcrf

from flowercam.core import UserError


@dataclasses.dataclass(frozen=True)
class CRFSettings:
    """IRN's crf_inference_label: Gaussian (sxy 3, compat 3), bilateral (sxy 50, srgb 5,
    compat 10), gt_prob 0.7, 10 iterations."""

    gt_prob: float = 0.7
    gauss_sxy: float = 3.0
    gauss_compat: float = 3.0
    bilateral_sxy: float = 50.0
    bilateral_srgb: float = 5.0
    bilateral_compat: float = 10.0
    iterations: int = 10


IRN = CRFSettings()


def unary_probability(fg_map, gt_prob=IRN.gt_prob):
    """P(fg) [H,W] of the unary: (1 - g) + (2g - 1) * map."""
    m = np.clip(np.asarray(fg_map, np.float64), 0.0, 1.0)
    return (1.0 - gt_prob) + (2.0 * gt_prob - 1.0) * m


def unary(fg_map, gt_prob=IRN.gt_prob):
    """[H,W] map in [0,1] -> [2,H,W] float32 energies -log P (background, foreground)."""
    p = unary_probability(fg_map, gt_prob)
    return -np.log(np.stack([1.0 - p, p])).astype(np.float32)


def dense_crf(image, fg_map, settings: CRFSettings = IRN):
    """image [H,W,3] uint8, fg_map [H,W] in [0,1] -> foreground marginal [H,W] float32."""
    image = np.array(image, np.uint8, order="C")  # a writable copy (pydensecrf2 asks for one)
    h, w = fg_map.shape
    if image.shape != (h, w, 3):
        raise UserError(f"the CRF needs an {h}x{w} RGB image for an {h}x{w} map, got "
                        f"{image.shape}: pass the image the map was computed on")
    d = dcrf.DenseCRF2D(w, h, 2)
    d.setUnaryEnergy(np.ascontiguousarray(unary(fg_map, settings.gt_prob).reshape(2, -1)))
    d.addPairwiseGaussian(sxy=settings.gauss_sxy, compat=settings.gauss_compat)
    d.addPairwiseBilateral(sxy=settings.bilateral_sxy, srgb=settings.bilateral_srgb,
                           rgbim=image, compat=settings.bilateral_compat)
    q = np.asarray(d.inference(settings.iterations), np.float32).reshape(2, h, w)
    return q[1]


def centred_at(fg_map, t):
    """[H,W] map in [0,1] -> the same map with t moved to 0.5, piecewise linear: m/t * 0.5 below t,
    0.5 + 0.5 (m - t)/(1 - t) above; 0 and 1 stay (t is kept inside [0.001, 0.999])."""
    m = np.clip(np.asarray(fg_map, np.float64), 0.0, 1.0)
    t = float(np.clip(t, 1e-3, 1.0 - 1e-3))
    return np.where(m < t, 0.5 * m / t, 0.5 + 0.5 * (m - t) / (1.0 - t))


def dense_crf_at_mean(image, fg_map, settings: CRFSettings = IRN):
    """dense_crf of the map with its own mean as the undecided point (centred_at(map, mean)):
    pixels above the image's average map value lean to the object, whatever the map's scale."""
    m = np.asarray(fg_map, np.float64)
    return dense_crf(image, centred_at(m, m.mean()).astype(np.float32), settings)
