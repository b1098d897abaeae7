"""Training runs on disk: run folders, the training log, and the one best-checkpoint rule.

    python -c "from flowercam.train import runs; print(runs.latest_run('model'))"
    python -c "from flowercam.train import runs; print(runs.best_checkpoint('model/RUN'))"

A run folder (model/TS<time>_<type>[_<normaliser>][_<tag>]/) holds config.json (what the run
records: flowercam/train/records.py), training_logs.txt (one JSON row per epoch: epoch, train_loss,
valid_loss, valid_top1/3/5, seconds, overfit and, when it was saved, checkpoint), epoch_N.pth
whenever the validation loss improved, and state.pth (head, Adam and RNG states after the last
epoch, for `main.py --resume RUN`).

Resume rule (after a crash, Ctrl-C or a full disk): each epoch writes its checkpoint, then its
log row, then state.pth, each atomically. state.pth names the last complete epoch; resuming
continues after it, and everything later -- log rows beyond it, checkpoints without a log row
(written just before an interruption), leftover .tmp-* files -- is deleted and redone. Training
is deterministic from the saved states, so the redone epochs give the same numbers.

Two epochs are named, on purpose by two rules:
- best_checkpoint: the checkpoint every figure and map metric uses: the lowest validation loss
  among the saved epochs that were not overfitting (the epoch that halts training is saved too,
  since its loss improved, but the report discards it).
- table_epoch: the epoch Table 2 reports, as the report did: the best validation top-1 among the
  epochs that were not overfitting (ties: lower validation loss). It may be an unsaved epoch, and
  it may differ from best_checkpoint; grid.py writes both.
"""

import contextlib
import fcntl
import json
import math
import os
import re
import time
from pathlib import Path

from flowercam.core import (
    UserError,
    atomic_write,
    check_fields,
    is_int,
    is_number,
    remove_temporaries,
)

OVERFIT_RATIO = 2.0  # an epoch overfits when valid_loss > OVERFIT_RATIO * train_loss
LOG_NAME = "training_logs.txt"
STATE_NAME = "state.pth"  # written after every epoch: what --resume continues from


def overfitting(row) -> bool:
    """The report's rule: training loss below 1/OVERFIT_RATIO of the validation loss."""
    return row["valid_loss"] > OVERFIT_RATIO * row["train_loss"]


def make_run_dir(output_dir, settings, tag="") -> Path:
    """New output_dir/TS<timestamp>_<type>[_<normaliser>][_<tag>]/ (suffix -2, -3.. if taken)."""
    name = f"TS{time.strftime('%Y%m%d-%H%M%S')}_{settings.model_type}"
    name += f"_{settings.normalize_by}" if settings.normalize_by else ""
    name += f"_{tag}" if tag else ""
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        run_dir = Path(output_dir) / (name if n == 1 else f"{name}-{n}")
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            continue
    raise UserError(f"too many runs named {name} in {output_dir}: clean it up")


def write_log(run_dir, history):
    """The whole log, atomically: one JSON row per epoch."""
    lines = "".join(json.dumps(row) + "\n" for row in history)
    atomic_write(Path(run_dir) / LOG_NAME, lambda f: f.write(lines), mode="w")


def discard_after(run_dir, epoch) -> list[dict]:
    """The resume rule (module docstring): keep the log rows up to epoch, delete later rows,
    checkpoints without a row and leftover temporaries -> the rows kept."""
    run_dir = Path(run_dir)
    remove_temporaries(run_dir)
    rows = [row for row in read_log(run_dir, missing_ok=True) if row["epoch"] <= epoch]
    if len(rows) != epoch:
        raise UserError(f"{run_dir / LOG_NAME} lacks epochs that {STATE_NAME} has: start a new "
                        "run instead")
    logged = {row.get("checkpoint") for row in rows}
    for path in run_dir.glob("epoch_*.pth"):
        if path.name not in logged:
            path.unlink()
    write_log(run_dir, rows)
    return rows


def _percent(v):
    return is_number(v) and (math.isnan(v) or 0 <= v <= 100)


# what each epoch row holds (training.run_epoch): checked when the log is read back
LOG_NEEDS = ("epoch", "train_loss", "valid_loss", "valid_top1")
LOG_FIELDS = {
    "epoch": (lambda v: is_int(v) and v >= 1, "an epoch number >= 1"),
    "train_loss": (is_number, "a number"),
    "valid_loss": (is_number, "a number"),
    "valid_top1": (_percent, "a percentage (0 to 100)"),
    "valid_top3": (_percent, "a percentage (0 to 100)"),
    "valid_top5": (_percent, "a percentage (0 to 100)"),
    "seconds": (lambda v: is_number(v) and v >= 0, "a number of seconds >= 0"),
    "overfit": (lambda v: isinstance(v, bool), "true or false"),
    "checkpoint": (lambda v: isinstance(v, str) and re.fullmatch(r"epoch_\d+\.pth", v),
                   "a file name epoch_N.pth"),
}


def read_log(run_dir, missing_ok=False) -> list[dict]:
    """The rows of run_dir/training_logs.txt, each checked (LOG_FIELDS); [] when missing and
    missing_ok. A bad row is one UserError naming the file, the line and the field."""
    path = Path(run_dir) / LOG_NAME
    if not path.is_file():
        if missing_ok:
            return []
        raise UserError(f"{path} not found: pass a run directory written by main.py")
    try:
        lines = path.read_text().splitlines()
    except (OSError, ValueError) as err:
        raise UserError(f"{path} is unreadable ({err}): retrain or delete the run") from None
    rows = []
    for number, line in enumerate(lines, start=1):
        row = _json_or_none(line) if line.strip() else {}
        if not isinstance(row, dict) or (line.strip() and "epoch" not in row):
            raise UserError(f"line {number} of {path} is not an epoch row ({line[:40]!r}): "
                            "delete that line, or retrain the run")
        if line.strip():
            where = f"line {number} of {path}"
            missing = [k for k in LOG_NEEDS if k not in row]
            if missing:
                raise UserError(f"{where} lacks {missing[0]}: restore it, or retrain the run")
            check_fields(row, LOG_FIELDS, where, "restore it, or retrain the run")
            rows.append(row)
    if [row["epoch"] for row in rows] != list(range(1, len(rows) + 1)):
        raise UserError(f"{path} does not number its epochs 1, 2, ...: restore it, or retrain "
                        "the run")
    return rows


def _json_or_none(text):
    try:
        return json.loads(text)
    except ValueError:
        return None


def run_checkpoints(run_dir):
    """[(epoch, path)] of run_dir/epoch_N.pth sorted by epoch; UserError when there are none."""
    run_dir = Path(run_dir)
    if run_dir.is_file():
        what = "a checkpoint" if run_dir.suffix == ".pth" else "a file"
        raise UserError(f"{run_dir} is {what}, not a run directory: pass its folder "
                        f"{run_dir.parent}")
    if not run_dir.is_dir():
        raise UserError(f"model directory {run_dir} not found: pass a run directory of main.py")
    found = [(int(m.group(1)), p) for p in run_dir.glob("epoch_*.pth")
             if (m := re.fullmatch(r"epoch_(\d+)\.pth", p.name))]
    if not found:
        raise UserError(f"{run_dir} has no epoch_N.pth checkpoints: pass a run directory "
                        "written by main.py")
    return sorted(found)


def latest_run(root="model"):
    """The newest run directory under root (by modification time) that holds a checkpoint."""
    found = [d for d in Path(root).glob("*/") if d.is_dir() and any(d.glob("epoch_*.pth"))]
    if not found:
        raise UserError(f"no trained run under {root}/: train one with `python main.py` "
                        "or pass a checkpoint")
    return max(found, key=lambda d: (d.stat().st_mtime, d.name))


def best_checkpoint(path="model"):
    """The checkpoint figures and metrics use (see the module docstring): a file as is; a run
    directory -> its lowest-validation-loss checkpoint among non-overfitting epochs (the last
    saved one when the log is missing); the model root -> its newest run's."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir() and not any(path.glob("epoch_*.pth")) and any(path.glob("*/epoch_*.pth")):
        path = latest_run(path)
    saved = dict((p.name, p) for _, p in run_checkpoints(path))
    eligible = [row["checkpoint"] for row in read_log(path, missing_ok=True)
                if row.get("checkpoint") in saved and not row.get("overfit")]
    return saved[eligible[-1]] if eligible else run_checkpoints(path)[-1][1]


def resolve_checkpoint(name, grid_runs=None) -> Path:
    """What a user names as a model -> a checkpoint file: a run directory (or the model root) ->
    its best checkpoint; a file as it is; a configuration name of grid_runs.json (grid.py's
    record of its runs) -> that configuration's best checkpoint."""
    if os.path.isdir(name):
        return best_checkpoint(name)
    if os.path.isfile(name):
        return Path(name)
    if not grid_runs:
        raise UserError(f"{name} not found: pass a run folder of main.py (its best epoch is "
                        "used) or a checkpoint .pth it wrote")
    try:
        entries = json.loads(Path(grid_runs).read_text())
        if not isinstance(entries, dict):
            raise ValueError("not a mapping")
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read the grid's run list {grid_runs} ({type(err).__name__}): "
                        "run grid.py first or name checkpoint files") from None
    # "CAM_lr0.0001" and "CAM-lr0.0001" name the same configuration
    found = [k for k in entries if k.replace("-", "_") == str(name).replace("-", "_")]
    if not found:
        raise UserError(f"{name} is neither a file nor a configuration of {grid_runs} (it has: "
                        f"{', '.join(sorted(entries)) or 'none'})")
    best = entries[found[0]].get("best_checkpoint")
    if not best:
        raise UserError(f"configuration {found[0]} of {grid_runs} saved no checkpoint: rerun it")
    return Path(best)


def table_epoch(history) -> dict:
    """The log row Table 2 reports (see the module docstring); all rows if every one overfits."""
    rows = [r for r in history if not overfitting(r)] or history
    return max(rows, key=lambda r: (r["valid_top1"], -r["valid_loss"]))


@contextlib.contextmanager
def training_lock(run_dir):
    """Exclusive, non-blocking lock on the run folder itself (fcntl.flock on its descriptor; no
    file is left) while a process trains in it: a second one (another --resume of the same run,
    or a resume of a run still training) is a UserError, not two writers of one log."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{run_dir} is being trained by another process: wait for it to "
                            "finish (or stop it), then resume") from None
        yield
    finally:
        os.close(fd)  # releases the lock (the kernel also does if this process dies)
