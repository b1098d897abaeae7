"""flowercam.metrics.pseudo: pseudo-mask figures on hand-made masks (known IoU / F1), ignored
pixels left out, the oracle and validated tau, the markdown table."""

import numpy as np
import pytest

from flowercam.core import UserError
from flowercam.metrics import localization, maprows, pseudo
from flowercam.metrics.statistics import figures


def oracle(a, idx, n_boot, seed):
    return figures(pseudo.oracle_stats(a, idx), n_boot, seed)


def validated(a, idx, k, n_boot, seed):
    return figures(pseudo.validated_stats(a, idx, k), n_boot, seed)


def hand_made(ignored_map=1.0, ignored_fg=False):
    """Image 0: 10x10, flower rows 0-4 (50 px), row 9 ignored, map 1 on rows 0-5 and
    ignored_map on row 9 (ignored: never a false positive); image 1: no flower pixel."""
    fg, valid = np.zeros((2, 10, 10), bool), np.ones((2, 10, 10), bool)
    fg[0, :5] = True
    fg[0, 9] = ignored_fg
    valid[:, 9] = False
    maps = np.zeros((2, 10, 10))
    maps[0, :6], maps[0, 9] = 1.0, ignored_map
    maps[1, 2:4] = 0.7
    return localization.mask_tables(maps, (fg & valid, valid, np.array([True, True])))


def test_known_figures_on_a_hand_made_mask():
    a = hand_made()
    figs = oracle(a, np.arange(2), n_boot=20, seed=0)
    # tp 50, fp 10 (row 5; row 9 ignored), fn 0, tn 90 - 50 - 10 = 30
    expected = {"fg_iou": 50 / 60, "bg_iou": 30 / 40, "miou": (50 / 60 + 30 / 40) / 2,
                "precision": 50 / 60, "recall": 1.0, "f1": 100 / 110}
    for name, value in expected.items():
        assert figs[name]["value"] == pytest.approx(value * 100), name
        assert figs[name]["n"] == 1  # the image without a flower is left out
        assert figs[name]["tau"] == pytest.approx(0.01)  # tau 0 would take every pixel
        lo, hi = figs[name]["ci95"]
        assert lo == pytest.approx(value * 100) and hi == pytest.approx(value * 100)


def test_ignored_pixels_change_nothing():
    a, b = hand_made(), hand_made(ignored_map=0.0, ignored_fg=True)
    assert a["n_valid"][0] == 90
    np.testing.assert_allclose(pseudo.per_tau(b, np.arange(1)), pseudo.per_tau(a, np.arange(1)))
    assert np.isnan(pseudo.per_tau(a, np.arange(2))[:, 1]).all()


def test_validated_tau_is_fixed_and_at_most_the_oracle():
    a = hand_made()
    at_zero = validated(a, np.arange(2), 0, n_boot=20, seed=0)
    assert at_zero["fg_iou"]["value"] == pytest.approx(50 / 90 * 100)  # every valid pixel
    assert at_zero["recall"]["value"] == 100 and at_zero["fg_iou"]["tau"] == 0.0
    best = oracle(a, np.arange(2), 20, 0)
    assert all(at_zero[f]["value"] <= best[f]["value"] + 1e-9 for f in ("fg_iou", "miou", "f1"))
    assert validated(a, np.arange(2), None, 20, 0) == {}


def test_stats_of_the_mask_images_at_both_taus():
    a = hand_made()
    s = figures(pseudo.stats(a, np.arange(2), (50, 0, [0, 0, 0])), 10, 0)
    assert set(s) == {"oracle_tau", "validated_tau"}
    assert s["validated_tau"]["fg_iou"]["tau"] == 0.5
    assert s["validated_tau"]["fg_iou"]["value"] == pytest.approx(50 / 60 * 100)
    a["has_mask"][:] = False
    assert pseudo.stats(a, np.arange(2), None) == {}


def test_rows_refined_are_the_methods_and_center():
    rows = maprows.expand(["CAM", "center", "full", "few-shot-5"], ["none", "crf"], ["CAM"])
    assert rows == ["CAM", "CAM+crf", "center", "center+crf", "full", "few-shot-5"]
    with pytest.raises(UserError, match="unknown refinement"):
        maprows.expand(["CAM"], ["nope"])
