"""flowercam.metrics.tables: the markdown tables (daggers against the center baseline)."""

import math

from flowercam.metrics import tables


def fig(value, lo=None, hi=None, n=5, **extra):
    return {"value": value, "ci95": [lo, hi], "n": n, **extra}


def cells(line):
    return [c.strip() for c in line.strip("|").split("|")]


def test_dagger_marks_figures_whose_paired_difference_does_not_beat_center():
    center = {"pxap": fig(60.0), "average_drop": fig(20.0)}
    rows = [("A", {"pxap": fig(65.0), "average_drop": fig(10.0)}),
            ("B", {"pxap": fig(70.0), "average_drop": fig(30.0)}),
            ("center (baseline)", center)]
    versus = {"A": {"pxap": fig(5.0, -1.0, 9.0), "average_drop": fig(-10.0, -12.0, -8.0)},
              "B": {"pxap": fig(10.0, 2.0, 15.0), "average_drop": fig(10.0, 8.0, 12.0)},
              "center (baseline)": {"pxap": fig(0.0, -1.0, 1.0)}}
    columns = [c for c in tables.all_columns() if c.key in ("pxap", "average_drop")]
    head, _, a, b, c = tables._table(rows, columns, versus=versus)
    assert cells(head) == ["", "images", "AD % ↓", "PxAP % ↑"]
    assert cells(a) == ["A", "5", "10.0", "65.0 †"]  # interval of +5 reaches below 0
    assert cells(b) == ["B", "5", "30.0 †", "70.0"]  # AD is worse (↓), PxAP's interval > 0
    assert cells(c) == ["center (baseline)", "5", "20.0", "60.0"]  # baselines: no mark


def test_cells_show_interval_tau_and_missing_values():
    columns = [c for c in tables.all_columns() if c.key in ("miou", "max_box_acc_v2")]
    rows = [("m", {"miou": fig(61.25, 56.7, 65.7, tau=0.27),
                   "max_box_acc_v2": fig(math.nan, tau=[0.1, 0.2, 0.3])})]
    line = tables._table(rows, columns)[-1]
    assert cells(line) == ["m", "5", "61.2 [56.7, 65.7] @0.27", "-"]
    assert tables._table([("m", {})], columns) == []  # no figure of these columns: no table


def test_untested_figures_and_unmeasured_columns_get_no_mark_and_no_column():
    columns = [c for c in tables.all_columns() if c.key in ("pxap", "average_drop")]
    rows = [("A", {"pxap": fig(65.0), "average_drop": fig(None, n=0)})]
    head, _, a = tables._table(rows, columns, versus={"A": {}})  # no paired pxap: not tested
    assert cells(head) == ["", "images", "PxAP % ↑"]  # no image scored for AD: no column
    assert cells(a) == ["A", "5", "65.0"]
