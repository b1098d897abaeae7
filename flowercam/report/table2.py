"""Table 2 files: our grid's figures beside the report's, cell by cell (table2.md, table2.csv).

    python grid.py --report-facts ../shared/report-facts.md     # the command that writes them
    python -c "from flowercam.report import table2 as t; \
print(t.read_report('../shared/report-facts.md'))"

The report's figures are read from its facts file (never copied into the code): the markdown table
under "## Table 2" with cells "ep 22: 92.94 / 99.12 / 99.71, 0.2714" (epoch: top-1 / top-3 / top-5,
loss) and learning-rate columns "lr 1e-4". No file: the tables carry our figures alone.
"""

import csv
import io
import re
from pathlib import Path

from flowercam.core import UserError, atomic_write

COLUMNS = ("config", "model_type", "normalize_by", "cut", "lr", "table_epoch", "top1", "top3",
           "top5", "valid_loss", "train_loss", "epochs_run", "halted_at", "report_epoch",
           "report_top1", "report_top3", "report_top5", "report_loss", "top1_diff", "run_dir",
           "best_checkpoint")
CELL = re.compile(r"ep\s*(\d+):\s*([\d.]+)\s*/\s*([\d.]+)\s*/\s*([\d.]+),\s*([\d.]+)")


def _model_key(name):
    """'CAM' -> ('CAM', None); 'ReCAM minmax' -> ('ReCAM', 'minmax')."""
    parts = name.split()
    return parts[0], (parts[1] if len(parts) > 1 else None)


def read_report(path) -> dict:
    """{(model_type, normalize_by, lr): {"epoch", "top1", "top3", "top5", "loss"}} of the facts
    file's Table 2; {} when path is None or missing."""
    if not path or not Path(path).is_file():
        return {}
    text = Path(path).read_text()
    section = text.split("## Table 2", 1)[-1] if "## Table 2" in text else ""
    rows = [line for line in section.splitlines() if line.startswith("|")]
    if len(rows) < 3:
        raise UserError(f"{path} has no Table 2 under '## Table 2': pass the report's facts file")
    lrs = [float(cell.split()[-1]) for cell in rows[0].strip("|").split("|")[1:]]
    found = {}
    for line in rows[2:]:
        name, *cells = [c.strip() for c in line.strip("|").split("|")]
        for lr, cell in zip(lrs, cells, strict=False):
            m = CELL.search(cell)
            if m:
                epoch, *values = m.groups()
                found[(*_model_key(name), lr)] = dict(
                    zip(("epoch", "top1", "top3", "top5", "loss"),
                        [int(epoch), *map(float, values)], strict=True))
    return found


def with_report(table, report) -> list[dict]:
    """Our rows with the report's figures of the same configuration (any cut; CAM-paper, a head
    the report did not train: beside its CAM) and the top-1 difference."""
    out = []
    for row in table:
        kind = "CAM" if row["model_type"] == "CAM-paper" else row["model_type"]
        ref = report.get((kind, row["normalize_by"], float(row["lr"])))
        extra = {f"report_{k}": (ref or {}).get(k) for k in ("epoch", "top1", "top3", "top5",
                                                            "loss")}
        extra["top1_diff"] = row["top1"] - ref["top1"] if ref else None
        out.append({**row, **extra})
    return out


def write_csv(path, rows):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, lambda f: f.write(buf.getvalue()), mode="w")


def _ours(r):
    return f"ep {r['table_epoch']}: {r['top1']:.2f} / {r['top3']:.2f} / {r['top5']:.2f}"


def _theirs(r):
    if r["report_epoch"] is None:
        return "-", "-"
    cell = (f"ep {r['report_epoch']}: {r['report_top1']:.2f} / {r['report_top3']:.2f} / "
            f"{r['report_top5']:.2f}")
    return cell, f"{r['top1_diff']:+.2f}"


def write_markdown(path, rows, epochs):
    lines = [f"# Table 2: validation accuracy, ours beside the report's (at most {epochs} "
             "epochs; per configuration the best top-1 epoch among epochs that are not "
             "overfitting)", "",
             "| configuration | lr | ours: epoch: top-1 / 3 / 5 % | valid loss | halted | "
             "report: epoch: top-1 / 3 / 5 % | top-1 ours - report (points) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        theirs, diff = _theirs(r)
        name = r["model_type"] + (f" {r['normalize_by']}" if r["normalize_by"] else "")
        name += f" @{r['cut']}" if r.get("cut", "pool5") != "pool5" else ""
        lines.append(f"| {name} | {r['lr']:g} | {_ours(r)} | {r['valid_loss']:.4f} | "
                     f"{r['halted_at'] or '-'} | {theirs} | {diff} |")
    text = "\n".join(lines) + "\n"
    atomic_write(path, lambda f: f.write(text), mode="w")
