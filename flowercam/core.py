"""Shared plumbing: one-line user errors, atomic writes, finding training runs and checkpoints.

    python -c "import common; print(core.latest_run('model'))"
    python -c "import common; print(core.best_checkpoint('model/RUN'))"
"""

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path


class UserError(Exception):
    """Bad input the user can fix; the message is one line naming the thing and what to do."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the house habits: defaults shown in --help, a bad option is one line."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):  # no usage block: one line and exit 2, like a UserError
        self.exit(2, f"error: {message} (see --help)\n")


def run_main(main, parser, argv=None):
    """Parse arguments and run main(args); user errors become one line on stderr and exit code 2."""
    args = parser.parse_args(argv)
    try:
        return main(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def atomic_write(path, write_fn, mode="wb"):
    """Call write_fn(file) on a temporary file beside `path`, then rename it over `path`."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    except OSError as err:
        raise UserError(f"cannot write {path} ({err.strerror or err}): "
                        "choose a writable output folder") from None
    try:
        with os.fdopen(fd, mode) as f:
            write_fn(f)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def check_writable_dir(path, flag="--output-dir"):
    """Fail now, not after the work is done, if an output folder cannot be made or written;
    folders made for the check are removed again (nothing is left behind on an error later)."""
    path = Path(path).absolute()
    first_new = next((p for p in [*reversed(path.parents), path] if not p.exists()), None)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise UserError(f"cannot write to {flag} {path} ({err.strerror or err}): "
                        "choose a writable folder") from None
    finally:
        if first_new is not None and first_new.is_dir():
            shutil.rmtree(first_new, ignore_errors=True)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_save_json(path, obj):
    atomic_write(path, lambda f: json.dump(obj, f, indent=2), mode="w")


def atomic_torch_save(obj, path):
    import torch  # lazy: augment.py and the tests of plain helpers need no torch

    atomic_write(path, lambda f: torch.save(obj, f))




def run_checkpoints(run_dir):
    """[(epoch, path)] of run_dir/epoch_N.pth sorted by epoch; UserError when there are none."""
    run_dir = Path(run_dir)
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
    runs = [d for d in Path(root).glob("*/") if d.is_dir() and any(d.glob("epoch_*.pth"))]
    if not runs:
        raise UserError(f"no trained run under {root}/: train one with `python main.py` "
                        "or pass a checkpoint")
    return max(runs, key=lambda d: (d.stat().st_mtime, d.name))


def best_checkpoint(path="model"):
    """The checkpoint to use: a file as is; a run directory -> its lowest-validation-loss
    checkpoint among the epochs that were not overfitting (main.py saves on every improvement,
    also at the epoch that halts training, which the report's rule excludes); the model root ->
    its newest run's."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir() and not any(path.glob("epoch_*.pth")) and any(path.glob("*/epoch_*.pth")):
        path = latest_run(path)
    saved = dict((p.name, p) for _, p in run_checkpoints(path))
    eligible = [row["checkpoint"] for row in _log_rows(path / "training_logs.txt")
                if row.get("checkpoint") in saved and not row.get("overfit")]
    return saved[eligible[-1]] if eligible else run_checkpoints(path)[-1][1]


def run_config(path) -> dict:
    """config.json of a run directory or of a checkpoint's folder; {} if absent or unreadable."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    try:
        return json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return {}


def _log_rows(path):
    """JSON lines of a training log; none when the file is missing or unreadable."""
    try:
        return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return []
