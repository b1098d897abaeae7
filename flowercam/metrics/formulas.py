"""Pure metric functions for class activation maps (faithfulness and pixel localization).

The runner is flowercam.metrics.runner (tables: flowercam.metrics.tables, box metrics:
flowercam.metrics.boxes); evaluate.py --cam-metrics runs it:

    python evaluate.py -d model/RUN --cam-metrics --limit 20
    python -c "from flowercam.metrics import formulas as f; print(f.auc([[1.0, 0.5, 0.0]]))"

Conventions: maps are [N,H,W] in [0,1] (min-max normalised), images are [N,3,H,W] in pixel
space [0,1], masks are fg/valid boolean arrays [N,H,W]. Figures in percent: AD, IC, pointing,
PxAP, mIoU; AUCs in probability units; thresholds in map units.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

# ---------------------------------------------------------------- localization


POINTING_TOLERANCE = 15  # px at the map's input resolution (Zhang et al. 2018)


def pointing_game_per_image(maps, fg, valid, tolerance=POINTING_TOLERANCE):
    """[N] the published pointing game (Zhang et al. 2018; TorchRay's PointingGame): the map's
    maximum (the first in raster order among ties) is a hit (1) when a foreground pixel lies
    closer than `tolerance` px to it, else a miss (0); ignored pixels are never foreground, so a
    peak on or near one alone is a miss. NaN: no foreground pixel."""
    maps = np.asarray(maps, dtype=np.float64)
    hits = np.full(len(maps), np.nan)
    for i, (m, f, v) in enumerate(zip(maps, fg, valid, strict=True)):
        ys, xs = np.nonzero(f & v)  # [K] foreground pixels
        if len(ys) == 0:
            continue
        y, x = np.unravel_index(int(np.argmax(m)), m.shape)
        hits[i] = float((((ys - y) ** 2 + (xs - x) ** 2) < tolerance**2).any())
    return hits


def peak_on_foreground_per_image(maps, fg, valid):
    """[N] the former, lenient pointing game (pointing_game_peak): the highest map value among
    the non-ignored pixels, no tolerance; tied peaks share the credit; NaN: no foreground."""
    maps = np.asarray(maps, dtype=np.float64)
    hits = np.full(len(maps), np.nan)
    for i, (m, f, v) in enumerate(zip(maps, fg, valid, strict=True)):
        if not (f & v).any():
            continue
        peak = v & (m == m[v].max())  # ignored pixels cannot hold the peak
        hits[i] = (f & v)[peak].mean()
    return hits


def threshold_counts(maps, fg, valid, thresholds):
    """Per image and threshold: tp [N,T], fp [N,T]; foreground pixels n_fg [N] (all int64)."""
    maps = np.clip(np.asarray(maps, dtype=np.float64), 0.0, 1.0)
    n_thr = len(thresholds)
    tp = np.zeros((len(maps), n_thr), np.int64)
    fp = np.zeros_like(tp)
    for i, (m, f, v) in enumerate(zip(maps, fg, valid, strict=True)):
        # bin k = number of thresholds <= value: positive at thresholds 0..k-1
        bins = np.searchsorted(thresholds, m, side="right")
        for out, sel in ((tp, f & v), (fp, ~f & v)):
            hist = np.bincount(bins[sel], minlength=n_thr + 1)
            out[i] = hist[::-1].cumsum()[::-1][1:]
    n_fg = np.asarray([(f & v).sum() for f, v in zip(fg, valid, strict=True)], np.int64)
    return tp, fp, n_fg


def pr_curve(tp, fp, n_fg):
    """Set-level (precision [T], recall [T]) of the pixels, thresholds high to low; None
    without a foreground pixel."""
    tp_sum, fp_sum, pos = tp.sum(0)[::-1], fp.sum(0)[::-1], n_fg.sum()
    if pos == 0:
        return None
    predicted = tp_sum + fp_sum
    return np.where(predicted > 0, tp_sum / np.maximum(predicted, 1), 1.0), tp_sum / pos


def pxap_from_counts(tp, fp, n_fg):
    """Set-level pixel AP in %: sum_n (R_n - R_{n-1}) P_n, thresholds high to low, R_0 = 0."""
    curve = pr_curve(tp, fp, n_fg)
    if curve is None:
        return math.nan
    precision, recall = curve
    return float((np.diff(recall, prepend=0.0) * precision).sum() * 100)



def iou_per_threshold(tp, fp, n_fg):
    """[N,T] IoU = tp / (fg + fp) per image and threshold; NaN rows: images without foreground."""
    union = (n_fg[:, None] + fp).astype(np.float64)
    iou = tp / np.maximum(union, 1)
    iou[n_fg == 0] = np.nan
    return iou


def best_iou_from_ious(ious, thresholds):
    """(mean IoU in %, threshold) at the one threshold that maximises the mean over images."""
    if len(ious) == 0 or np.isnan(ious).all():
        return math.nan, math.nan
    mean = np.nanmean(ious, axis=0)
    k = int(np.argmax(mean))  # lowest threshold among equals
    return float(mean[k] * 100), float(thresholds[k])



# ---------------------------------------------------------------- faithfulness


def drop_per_image(y, o):
    """Chattopadhyay 2018, per image in %: max(0, Y - O) / Y."""
    y, o = np.asarray(y, np.float64), np.asarray(o, np.float64)
    return np.maximum(0.0, y - o) / np.maximum(y, 1e-12) * 100


IC_TOLERANCE = 1e-4  # probability units: an increase smaller than this is a tie, not an increase


def increase_per_image(y, o, tolerance=IC_TOLERANCE):
    """Chattopadhyay 2018's increase in confidence, per image in %: 100 when O exceeds Y by more
    than `tolerance` (float rounding of one score computed in two batches is no increase)."""
    return (np.asarray(o, np.float64) - np.asarray(y, np.float64) > tolerance) * 100.0



def auc(curves):
    """Trapezoid area under curves [..., S+1] sampled at fractions 0, 1/S, ..., 1."""
    curves = np.asarray(curves, np.float64)
    return np.trapezoid(curves, dx=1.0 / (curves.shape[-1] - 1), axis=-1)


def blur(images, kernel_size=11, sigma=5.0):
    """Petsiuk 2018 insertion start: Gaussian blur (klen 11, sigma 5) of [N,3,H,W] images."""
    return TF.gaussian_blur(images, [kernel_size, kernel_size], [sigma, sigma])


def pixel_ranks(maps, generator=None):
    """[N,H,W] -> [N,H*W] rank of each pixel, 0 = highest map value; ties in seeded random order."""
    flat = maps.flatten(1).float()
    n, p = flat.shape
    perm = torch.stack([torch.randperm(p, generator=generator) for _ in range(n)])
    order = perm.gather(1, torch.argsort(flat.gather(1, perm), dim=1, descending=True, stable=True))
    return torch.empty_like(order).scatter_(1, order, torch.arange(p).expand(n, p).contiguous())


def skip_pixel_ranks(generator, n, pixels):
    """Draw from generator what pixel_ranks draws for n maps of `pixels` pixels, so that a
    process measuring only some batches sees the draws of one process measuring them all."""
    for _ in range(n):
        torch.randperm(pixels, generator=generator)


def perturbation_curve(score_fn, start, end, maps, targets, steps, generator=None, ends=None):
    """[N,S+1] scores while the top k/S of pixels (by map) go from `start` to `end`, k = 0..S.

    score_fn(images [M,3,H,W], targets [M]) -> [M]; ends = (score of start, score of end) if known.
    The intermediate images of all steps are scored in one call (score_fn batches them).
    """
    if start.shape != end.shape or start.shape[-2:] != maps.shape[-2:]:
        raise ValueError(f"shapes differ: start {start.shape}, end {end.shape}, maps {maps.shape}")
    n, _, h, w = start.shape
    ranks = pixel_ranks(maps, generator).view(n, 1, h, w)
    counts = [round(k * h * w / steps) for k in range(1, steps)]
    middle = [torch.where(ranks < c, end, start) for c in counts]  # step-major [S-1] x [N,3,H,W]
    scores = torch.zeros(n, 0)
    if middle:
        scores = score_fn(torch.cat(middle), targets.repeat(len(middle))).view(len(middle), n).T
    first, last = ends if ends is not None else (score_fn(start, targets), score_fn(end, targets))
    return torch.cat([first.view(n, 1).float(), scores.float(), last.view(n, 1).float()], 1)


def deletion_curve(score_fn, images, maps, targets, steps, baseline, generator=None, ends=None):
    """Petsiuk 2018 deletion: most salient pixels replaced by `baseline` first."""
    return perturbation_curve(score_fn, images, baseline, maps, targets, steps, generator, ends)


def insertion_curve(score_fn, images, maps, targets, steps, blurred, generator=None, ends=None):
    """Petsiuk 2018 insertion: most salient pixels revealed into the blurred image first."""
    return perturbation_curve(score_fn, blurred, images, maps, targets, steps, generator, ends)


def make_score_fn(model, mean, std, precision="fp32", batch_size=32, device="cpu"):
    """score_fn(images01 [M,3,H,W], targets [M]) -> softmax prob of targets [M] (cpu float32).

    Images are normalised with mean/std here and fed to `model` in chunks of batch_size.
    """
    device = torch.device(device)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    @torch.no_grad()
    def score_fn(images, targets):
        out = []
        for i in range(0, len(images), batch_size):
            x = ((images[i : i + batch_size] - mean_t) / std_t).to(device)
            with torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
                logits = model(x)
            prob = F.softmax(logits.float(), dim=1)
            out.append(prob.gather(1, targets[i : i + batch_size, None].to(device))[:, 0].cpu())
        return torch.cat(out) if out else torch.zeros(0)

    return score_fn
