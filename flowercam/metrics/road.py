"""ROAD, RemOve And Debias (Rong et al., ICML 2022): the most (MoRF) or least (LeRF) relevant
pixels removed at fixed fractions and filled by noisy linear imputation, the class probability
tracked. Imputing from the neighbours leaks no removal mask shape to the classifier the way a
constant fill does (the "debias").

    python -c "from flowercam.metrics import road; print(road.FRACTIONS)"
    python evaluate.py -d model/RUN --cam-metrics --figures road --perturb-limit 17

Noisy linear imputation: every removed pixel is the weighted mean of its 8 neighbours (1/6 for
the 4 direct ones, 1/12 for the diagonals, renormalised at the border), removed neighbours being
unknowns too: one sparse linear system per image (scipy.sparse, all channels at once), then
Gaussian noise (std 0.01, pixel units [0,1]) on the filled pixels. Figures per image: MoRF = mean
probability over the fractions (lower = more faithful), LeRF = the same when the least relevant go
first (higher = more faithful), combined = (LeRF - MoRF) / 2 (pytorch-grad-cam's ROADCombined).
"""

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import spsolve

from flowercam.metrics import formulas

FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)  # removed share of the pixels
NOISE = 0.01
FIGURES = ("road_morf", "road_lerf", "road_combined")  # per-image arrays when ROAD was measured
# (row offset, column offset, weight): Rong et al.'s (and pytorch-grad-cam's) neighbour weights
NEIGHBOURS = ((1, 1, 1 / 12), (0, 1, 1 / 6), (-1, 1, 1 / 12), (1, -1, 1 / 12), (0, -1, 1 / 6),
              (-1, -1, 1 / 12), (1, 0, 1 / 6), (-1, 0, 1 / 6))


def _system(removed, flat):
    """removed [H,W] bool, flat [C,H*W] -> (A [n,n] csc, b [n,C]) with A x = b for the n removed
    pixels: sum_known w_j v_j + sum_unknown w_j x_j - (sum_inside w_j) x_i = 0."""
    h, w = removed.shape
    idx = np.flatnonzero(removed)
    n = len(idx)
    var = np.full(h * w, -1)
    var[idx] = np.arange(n)
    r0, c0, me = idx // w, idx % w, np.arange(n)
    diag, b = np.zeros(n), np.zeros((n, flat.shape[0]))
    rows, cols, vals = [], [], []
    for dy, dx, weight in NEIGHBOURS:
        r, c = r0 + dy, c0 + dx
        inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        diag[inside] += weight
        j, i = r[inside] * w + c[inside], me[inside]
        unknown = removed.ravel()[j]
        rows.append(i[unknown])
        cols.append(var[j[unknown]])
        vals.append(np.full(int(unknown.sum()), weight))
        b[i[~unknown]] -= weight * flat[:, j[~unknown]].T
    rows.append(me)
    cols.append(me)
    vals.append(-diag)
    a = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                   shape=(n, n))
    return a.tocsc(), b


def impute(image, removed, noise=NOISE, rng=None):
    """image [C,H,W] (array), removed [H,W] bool -> [C,H,W] float64 with the removed pixels
    filled by noisy linear imputation; the others unchanged."""
    image = np.asarray(image, np.float64)
    removed = np.asarray(removed, bool)
    flat = image.reshape(image.shape[0], -1).copy()
    if not removed.any():
        return flat.reshape(image.shape)
    a, b = _system(removed, flat)
    solved = np.asarray(spsolve(a, b)).reshape(len(b), -1)  # [n,C]
    idx = np.flatnonzero(removed)
    flat[:, idx] = solved.T
    if noise:
        rng = np.random.default_rng(0) if rng is None else rng
        flat[:, idx] += noise * rng.standard_normal((flat.shape[0], len(idx)))
    return flat.reshape(image.shape)


def removal_masks(maps, fraction, order, generator=None):
    """[N,H,W] maps -> [N,H,W] bool removed pixels: the round(fraction * H*W) highest (order
    "morf") or lowest ("lerf") by map value; ties in seeded random order (formulas.pixel_ranks)."""
    n, h, w = maps.shape
    ranks = formulas.pixel_ranks(maps, generator).view(n, h, w)  # 0 = highest
    k = round(fraction * h * w)
    return (ranks < k) if order == "morf" else (ranks >= h * w - k)


def road_curves(score_fn, pixels, maps, targets, fractions=FRACTIONS, noise=NOISE, seed=0):
    """-> {"morf": [N,F], "lerf": [N,F]} class probabilities of images pixels [N,3,H,W] in [0,1]
    with each fraction of their pixels removed (score_fn as formulas.make_score_fn)."""
    rng, generator = np.random.default_rng([seed, 3]), torch.Generator().manual_seed(seed)
    out = {}
    for order in ("morf", "lerf"):
        imputed = []
        for f in fractions:
            removed = removal_masks(maps, f, order, generator).numpy()
            imputed += [impute(p, m, noise, rng) for p, m in zip(pixels.numpy(), removed,
                                                                  strict=True)]
        batch = torch.from_numpy(np.stack(imputed)).float()  # fraction-major, not clipped
        scores = score_fn(batch, targets.repeat(len(fractions)))
        out[order] = scores.view(len(fractions), len(pixels)).T.numpy()
    return out


def road_figures(curves):
    """{"morf", "lerf"} [N,F] -> per image [N]: road_morf, road_lerf (means over the fractions),
    road_combined = (LeRF - MoRF) / 2."""
    morf, lerf = curves["morf"].mean(1), curves["lerf"].mean(1)
    return {"road_morf": morf, "road_lerf": lerf, "road_combined": (lerf - morf) / 2}


def per_image(score_fn, maps, pixels, targets, keep, seed=0):
    """ROAD figures [B] of the batch's images `keep` (bool [B]; NaN for the others): maps
    [B,H,W], pixels [B,3,H,W] in [0,1], targets [B]."""
    out = {k: np.full(len(maps), np.nan) for k in FIGURES}
    if keep.any():
        idx = torch.from_numpy(np.flatnonzero(keep))
        curves = road_curves(score_fn, pixels[idx], maps[idx], targets[idx], seed=seed)
        for key, values in road_figures(curves).items():
            out[key][keep] = values
    return out
