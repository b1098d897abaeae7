"""A figure as a statistic of resampled images, its bootstrap interval, and paired differences.

    python -c "from flowercam.metrics import statistics as s; import numpy as np; \
print(s.difference(s.Mean(np.ones(5)), s.Mean(np.zeros(5)), 1000, 0))"

Mean: the mean of per-image values (NaN = not scored: no mask, no deletion curve). OverRows: a
set-level statistic of row indices (PxAP, a best-tau figure that chooses its tau on the rows).
figure(stat) is {"value", "ci95": [lo, hi], "n"}: the percentile interval over bootstrap
resamples of the images (bootstrap_ci; mean_ci for a plain mean). difference(a, b) is the same
for a - b with the SAME resamples of the same images for both maps (a paired bootstrap: what the
images share cancels, so the interval is much narrower than the gap between two unpaired
intervals suggests). Two identical maps give exactly 0 [0, 0].
"""

import dataclasses
import math
from collections.abc import Callable

import numpy as np


def _nanmean(values):
    values = np.asarray(values, np.float64)
    ok = ~np.isnan(values)
    return float(values[ok].mean()) if ok.any() else math.nan


def bootstrap_ci(stat_fn, n, n_boot=1000, seed=0, level=0.95):
    """Percentile interval of stat_fn(indices) over n_boot resamples of range(n) with replacement.

    The same seed gives the same resamples for every statistic (paired comparisons across methods).
    """
    if n == 0 or n_boot <= 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    stats = np.array([stat_fn(rng.integers(0, n, n)) for _ in range(n_boot)], np.float64)
    stats = stats[~np.isnan(stats)]
    if len(stats) == 0:
        return math.nan, math.nan
    lo, hi = np.percentile(stats, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(lo), float(hi)


def mean_ci(values, n_boot=1000, seed=0):
    """(mean ignoring NaN, (lo, hi), count) of per-image values."""
    values = np.asarray(values, np.float64)
    values = values[~np.isnan(values)]
    ci = bootstrap_ci(lambda idx: values[idx].mean(), len(values), n_boot, seed)
    return _nanmean(values), ci, len(values)


@dataclasses.dataclass(frozen=True)
class Mean:
    values: np.ndarray  # [N] per-image values; NaN = not scored
    extra: dict = dataclasses.field(default_factory=dict)  # shown beside the figure (its tau)


@dataclasses.dataclass(frozen=True)
class OverRows:
    fn: Callable  # row indices (into range(n)) -> value
    n: int  # rows that are resampled
    count: int  # images the figure scores (its "n")
    extra: dict = dataclasses.field(default_factory=dict)


def as_figure(value, ci, n, **extra):
    return {"value": value, "ci95": list(ci), "n": int(n), **extra}


def figure(stat, n_boot, seed):
    """One Stat -> {"value", "ci95", "n", **extra}."""
    if isinstance(stat, Mean):
        return as_figure(*mean_ci(stat.values, n_boot, seed), **stat.extra)
    ci = bootstrap_ci(stat.fn, stat.n, n_boot, seed)
    return as_figure(stat.fn(np.arange(stat.n)), ci, stat.count, **stat.extra)


def figures(stats, n_boot, seed):
    """Nested {name: Stat or dict} -> the same nesting of figures."""
    return {k: figures(v, n_boot, seed) if isinstance(v, dict) else figure(v, n_boot, seed)
            for k, v in stats.items()}


def difference(a, b, n_boot, seed):
    """The paired difference a - b of two Stats of the same images, as a figure."""
    if isinstance(a, Mean) and isinstance(b, Mean):
        values_a, values_b = np.asarray(a.values, np.float64), np.asarray(b.values, np.float64)
        both = ~np.isnan(values_a) & ~np.isnan(values_b)  # images scored for both maps
        return figure(Mean(values_a[both] - values_b[both]), n_boot, seed)
    if isinstance(a, OverRows) and isinstance(b, OverRows) and a.n == b.n:
        return figure(OverRows(lambda rows: a.fn(rows) - b.fn(rows), a.n, min(a.count, b.count)),
                      n_boot, seed)
    raise ValueError(f"cannot pair a {type(a).__name__} with a {type(b).__name__}")


def differences(stats_a, stats_b, n_boot, seed):
    """Paired differences of every figure the two nested Stat dicts share."""
    return {k: differences(v, stats_b[k], n_boot, seed) if isinstance(v, dict)
            else difference(v, stats_b[k], n_boot, seed)
            for k, v in stats_a.items() if k in stats_b}


def beats(diff, lower_is_better=False):
    """True when a paired difference's 95% interval lies above 0 (below 0 for a ↓ figure), False
    when it does not; None when there is nothing to test: no difference, or no interval (no
    bootstrap resamples: a bare difference is no verdict)."""
    if not diff or diff.get("value") is None or np.isnan(diff["value"]):
        return None
    lo, hi = diff["ci95"]
    if lo is None or hi is None or np.isnan(lo) or np.isnan(hi):
        return None
    return bool(hi < 0 if lower_is_better else lo > 0)
