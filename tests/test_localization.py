"""flowercam.metrics.localization: oracle vs validated tau figures on hand-made IoU tables."""

import math

import metric_helpers as helpers
import numpy as np
import pytest

from flowercam.metrics import localization

T = len(localization.THRESHOLDS)


def tables(box_rows, correct):
    """Arrays as the runner keeps them; box rows [N,T] serve both box tables, pixel IoU = box."""
    box = np.asarray(box_rows, float)
    n_fg = np.where(np.isnan(box).all(1), 0, 100)
    tp = np.nan_to_num(box * 100).round().astype(np.int64)  # IoU = tp / (n_fg + fp), fp = 0
    return {"box_largest": box, "box_all": box, "tp": tp, "fp": np.zeros_like(tp), "n_fg": n_fg,
            "hit": np.ones(len(box)), "has_mask": np.ones(len(box), bool),
            "correct": np.asarray(correct, bool)}


def step_rows(cuts):
    """Row i: IoU 0.6 for tau index < cuts[i], else 0.2 (a box that is good up to its cut)."""
    return [np.where(np.arange(T) < c, 0.6, 0.2) for c in cuts]


def test_oracle_picks_the_best_tau_and_loc_uses_it():
    # IoU >= 0.5 for tau indices < 10, 20, 30, 30: best BoxAcc 100% at index 0..9 -> index 0
    a = tables(step_rows([10, 20, 30, 30]), correct=[True, False, True, True])
    f = helpers.oracle(a, np.arange(4), n_boot=0, seed=0)
    assert f["max_box_acc"]["value"] == 100.0 and f["max_box_acc"]["tau"] == 0.0
    assert f["gt_known_loc"]["value"] == 100.0  # GT-known Loc at MaxBoxAcc's tau = MaxBoxAcc
    assert f["top1_loc"]["value"] == 75.0  # 3 of 4 right class
    # V2, deltas 0.3/0.5/0.7: 100, 100, 0
    assert f["max_box_acc_v2"]["value"] == pytest.approx(200 / 3)
    assert f["miou"]["value"] == pytest.approx(60.0) and f["miou"]["n"] == 4


def test_validated_tau_comes_from_the_other_set():
    k = np.arange(T)
    chooser = tables([np.where((k >= 40) & (k < 60), 0.6, 0.2)] * 2, [True, True])  # 0.40..0.59
    late = tables([np.where(k >= 50, 0.6, 0.2)] * 2, [True, True])  # good from tau 0.50
    taus = localization.choose_taus(chooser)
    assert taus[1] == 40 and taus[2] == [40, 40, 0]  # delta 0.7: never reached, index 0
    f = helpers.validated(late, np.arange(2), taus, n_boot=0, seed=0)
    assert f["max_box_acc"]["value"] == 0.0 and f["max_box_acc"]["tau"] == 0.4  # 0.40 < 0.50
    assert helpers.oracle(late, np.arange(2), 0, 0)["max_box_acc"]["value"] == 100.0
    # V2 at taus 0.40, 0.40, 0.00: IoU 0.2 there, below every delta
    assert f["max_box_acc_v2"]["value"] == 0.0 and f["max_box_acc_v2"]["tau"] == [0.4, 0.4, 0.0]


def test_images_without_foreground_are_skipped_and_no_taus_without_any():
    rows = step_rows([10, 10]) + [np.full(T, np.nan)]
    f = helpers.oracle(tables(rows, [True] * 3), np.arange(3), 0, 0)
    assert f["max_box_acc"]["value"] == 100.0 and f["max_box_acc"]["n"] == 2
    assert localization.choose_taus(tables([np.full(T, np.nan)], [True])) is None
    assert helpers.validated(tables(rows, [True] * 3), np.arange(3), None, 0, 0) == {}


def test_oracle_interval_rechooses_tau_and_brackets_the_value():
    rng = np.random.default_rng(0)
    a = tables(rng.random((30, T)), rng.random(30) > 0.5)
    f = helpers.oracle(a, np.arange(30), n_boot=200, seed=1)
    for key in ("miou", "max_box_acc", "max_box_acc_v2", "top1_loc", "gt_known_loc"):
        lo, hi = f[key]["ci95"]
        assert not math.isnan(lo) and lo <= hi
    assert f["max_box_acc"]["ci95"][0] <= f["max_box_acc"]["value"]
