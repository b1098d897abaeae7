"""flowercam.metrics.statistics: figures as statistics of resampled images, paired differences."""

import math

import metric_helpers as helpers
import numpy as np
import pytest

from flowercam.metrics import localization, registry, statistics
from flowercam.metrics.statistics import Mean, OverRows

T = len(localization.THRESHOLDS)


def random_tables(rng, n=40):
    """Per-image tables as the runner keeps them, from random pixel counts and box IoUs."""
    n_fg = rng.integers(50, 200, n)
    tp = np.sort(rng.integers(0, 50, (n, T)), 1)[:, ::-1]  # fewer hits as tau grows
    box = rng.random((n, T))
    return {"tp": tp, "fp": rng.integers(0, 80, (n, T)), "n_fg": n_fg, "box_largest": box,
            "box_all": box, "hit": (rng.random(n) > 0.3).astype(float),
            "hit_peak": (rng.random(n) > 0.4).astype(float),
            "has_mask": np.ones(n, bool), "correct": rng.random(n) > 0.2}


def all_stats(a, taus):
    idx = np.arange(len(a["n_fg"]))
    out = {}
    for metric in registry.METRICS:
        if metric.family == "localization":  # pointing, PxAP, the box and IoU figures
            registry.merge(out, metric.stats(a, idx, taus))
    return out


def test_identical_maps_differ_by_exactly_zero_on_every_figure():
    a = random_tables(np.random.default_rng(0))
    taus = localization.choose_taus(a)
    diffs = statistics.differences(all_stats(a, taus), all_stats(a, taus), 200, 0)
    flat = [diffs["pointing_game"], diffs["pxap"], *diffs["oracle_tau"].values(),
            *diffs["validated_tau"].values()]
    assert len(flat) == 12
    for d in flat:
        assert d["value"] == 0 and d["ci95"] == [0, 0]
        assert not statistics.beats(d) and not statistics.beats(d, lower_is_better=True)


def test_figures_from_statistics_equal_the_figure_functions():
    a = random_tables(np.random.default_rng(1))
    stats = localization.oracle_stats(a, np.arange(40))
    assert statistics.figures(stats, 100, 3) == helpers.oracle(a, np.arange(40), 100, 3)


def test_paired_interval_is_narrower_than_the_unpaired_gap_suggests():
    # 60 images of very different difficulty; map a is 2 points better on every image
    rng = np.random.default_rng(2)
    base = rng.uniform(20, 90, 60)
    a, b = Mean(base + 2 + rng.normal(0, 0.5, 60)), Mean(base)
    fa, fb = statistics.figure(a, 1000, 0), statistics.figure(b, 1000, 0)
    assert fa["ci95"][0] < fb["ci95"][1]  # the two intervals overlap ...
    d = statistics.difference(a, b, 1000, 0)
    assert d["value"] == pytest.approx(fa["value"] - fb["value"])
    assert 1.5 < d["ci95"][0] < 2 < d["ci95"][1] < 2.5  # ... the paired one lies above 0
    assert statistics.beats(d) and not statistics.beats(statistics.difference(b, a, 1000, 0))


def test_images_not_scored_for_either_map_are_left_out_of_a_mean_difference():
    a = Mean(np.array([1.0, 2.0, np.nan, 4.0]))
    b = Mean(np.array([0.0, np.nan, 1.0, 1.0]))
    d = statistics.difference(a, b, 0, 0)
    assert d["value"] == pytest.approx(2.0) and d["n"] == 2  # images 0 and 3: (1 + 3) / 2


def test_set_statistics_pair_on_the_same_rows_and_mixed_kinds_refuse():
    values = np.arange(10.0)
    a = OverRows(lambda r: values[r].max(), 10, 10)
    b = OverRows(lambda r: values[r].min(), 10, 10)
    d = statistics.difference(a, b, 300, 0)
    assert d["value"] == 9 and d["ci95"][0] >= 0  # max >= min on every resample
    with pytest.raises(ValueError, match="cannot pair"):
        statistics.difference(a, Mean(values), 10, 0)


def test_beats_reads_the_direction_and_gives_no_verdict_without_an_interval():
    below = {"value": -3.0, "ci95": [-5.0, -1.0], "n": 9}
    assert statistics.beats(below, lower_is_better=True) is True
    assert statistics.beats(below) is False
    assert statistics.beats({"value": 1.0, "ci95": [None, None], "n": 9}) is None  # --bootstrap 0
    assert statistics.beats({"value": 1.0, "ci95": [-0.5, 2.0], "n": 9}) is False
    assert statistics.beats(None) is None
    assert statistics.beats({"value": None, "ci95": [0, 0]}) is None


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    values = np.random.default_rng(0).normal(5, 1, 200)
    mean, (lo, hi), n = statistics.mean_ci(values, n_boot=300, seed=3)
    assert n == 200 and lo < mean < hi and hi - lo < 0.5
    assert statistics.mean_ci(values, n_boot=300, seed=3)[1] == (lo, hi)
    assert all(math.isnan(x) for x in statistics.bootstrap_ci(np.mean, 0))
