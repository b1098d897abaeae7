"""flowercam.table2: the report's Table 2 read from its facts file and set beside ours."""

import csv

import pytest

from flowercam.core import UserError
from flowercam.report import table2

FACTS = """# facts
## Table 2 (validation)
| model | lr 1e-5 | lr 1e-4 |
|---|---|---|
| CAM | ep 40: 81.47 / 96.18 / 99.12, 1.0036 | ep 22: 92.94 / 99.12 / 99.71, 0.2714 |
| ReCAM relu | ep 39: 88.82 / 97.65 / 99.12, 0.3816 | - |

More text.
"""


def row(model_type, normalize_by, lr, top1):
    return {"config": "x", "model_type": model_type, "normalize_by": normalize_by, "lr": lr,
            "table_epoch": 7, "top1": top1, "top3": 99.0, "top5": 100.0, "valid_loss": 0.3,
            "train_loss": 0.2, "epochs_run": 9, "halted_at": 9, "run_dir": "r",
            "best_checkpoint": "r/epoch_6.pth"}


def test_read_report_cells(tmp_path):
    path = tmp_path / "facts.md"
    path.write_text(FACTS)
    report = table2.read_report(path)
    assert set(report) == {("CAM", None, 1e-5), ("CAM", None, 1e-4), ("ReCAM", "relu", 1e-5)}
    assert report[("CAM", None, 1e-4)] == {"epoch": 22, "top1": 92.94, "top3": 99.12,
                                           "top5": 99.71, "loss": 0.2714}
    assert table2.read_report(tmp_path / "missing.md") == {} and table2.read_report(None) == {}


def test_no_table_is_one_line(tmp_path):
    path = tmp_path / "facts.md"
    path.write_text("# nothing here\n")
    with pytest.raises(UserError, match="no Table 2"):
        table2.read_report(path)


def test_ours_beside_the_report(tmp_path):
    path = tmp_path / "facts.md"
    path.write_text(FACTS)
    rows = table2.with_report([row("CAM", None, 1e-4, 90.0), row("ReCAM", "minmax", 1e-4, 80.0)],
                              table2.read_report(path))
    assert rows[0]["report_epoch"] == 22 and rows[0]["top1_diff"] == pytest.approx(-2.94)
    assert rows[1]["report_top1"] is None and rows[1]["top1_diff"] is None
    table2.write_markdown(tmp_path / "t.md", rows, 40)
    table2.write_csv(tmp_path / "t.csv", rows)
    text = (tmp_path / "t.md").read_text()
    assert "| CAM | 0.0001 | ep 7: 90.00 / 99.00 / 100.00 |" in text
    assert "ep 22: 92.94 / 99.12 / 99.71 | -2.94 |" in text and "| - | - |" in text
    with open(tmp_path / "t.csv") as f:
        first = next(csv.DictReader(f))
    assert first["report_top1"] == "92.94" and first["top1"] == "90.0"


@pytest.mark.real
def test_the_report_facts_file(shared_dir):
    report = table2.read_report(shared_dir / "report-facts.md")
    assert len(report) == 16  # 4 models x 4 learning rates
    assert report[("CAM", None, 1e-4)]["epoch"] == 22
    assert report[("ReCAM", "sigmoid", 5e-5)]["top5"] == 100.0
