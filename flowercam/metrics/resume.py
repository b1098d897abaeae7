"""Resuming an interrupted evaluate.py run (--cam-metrics, --sanity): each finished batch is
written atomically to OUT/NAME.partial/ under the run's settings; a rerun with the same settings
reads those batches back and measures only the others.

    python evaluate.py -d model/RUN --cam-metrics  # interrupted? the same command continues it
    python evaluate.py -d model/RUN --sanity --no-resume   # discard the partial run, start afresh

A partial run of other settings (checkpoint, images, rows, seed, layers, ...) is refused with one
line; a finished run removes its partial folder after writing its files. The files are those of a
run without a break (the batches are the same); only the timings add up.
"""

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from flowercam.core import UserError, atomic_save_json, atomic_write
from flowercam.model import checkpoints

# MetricsConfig fields that change no batch's figures: how the run is told its checkpoint (the
# checkpoint itself is hashed), where it writes, what it computes after the batches
NOT_IN_BATCHES = ("model_dir", "checkpoint", "methods", "baselines", "backbone_weights",
                  "num_workers", "refine_workers", "bootstrap", "compare", "tau_from",
                  "validate_tau_on", "output_dir", "resume")


def _plain(obj):
    return json.loads(json.dumps(obj))  # tuples -> lists: what settings.json reads back


def run_settings(cfg, ckpt, key):
    """What a run's batches depend on: MetricsConfig cfg's fields (but NOT_IN_BATCHES), the
    checkpoint's content and the caller's key (backbone, image ids, rows, ...). No absolute path:
    a partial run committed in a repository continues in any clone of it."""
    fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_IN_BATCHES}
    return {**fields, "checkpoint_sha256": checkpoints.content_sha256(ckpt),
            "data_dir": os.path.normpath(cfg.data_dir), **key}


def _tensors(obj):  # numpy arrays -> tensors, in any nesting of dicts, lists and tuples
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, dict):
        return {k: _tensors(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_tensors(v) for v in obj)
    return obj


def _arrays(obj):  # the inverse of _tensors
    if torch.is_tensor(obj):
        return obj.numpy()
    if isinstance(obj, dict):
        return {k: _arrays(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_arrays(v) for v in obj)
    return obj


class Partial:
    """OUT/NAME.partial/: settings.json, batch_00000.pt, ... (one per finished batch: numpy
    arrays and plain types in dicts, lists and tuples) and STATE.pt files (tensors, plain types:
    what a run trains once, e.g. --sanity's permuted-label head). resume=False discards one found.
    """

    def __init__(self, out_dir, name, settings, resume=True):
        self.folder, self.settings = Path(out_dir) / f"{name}.partial", _plain(settings)
        self.what = name.replace("_", "-")
        if self.folder.exists() and not resume and self._holds_work():
            print(f"discarded the partial {self.what} run in {self.folder}")
        if self.folder.exists() and (not resume or not self._holds_work()):
            shutil.rmtree(self.folder)  # nothing to resume in a run stopped before any work
        if self.folder.exists():
            self._check()
        else:
            atomic_save_json(self.folder / "settings.json", self.settings)

    def _holds_work(self):
        return any(self.folder.glob("*.pt"))

    def _check(self):
        try:
            stored = json.loads((self.folder / "settings.json").read_text())
        except (OSError, ValueError):
            stored = {}
        if stored != self.settings:
            differ = sorted(k for k in {*stored, *self.settings}
                            if stored.get(k) != self.settings.get(k))
            raise UserError(f"{self.folder} holds an unfinished {self.what} run of other "
                            f"settings ({', '.join(differ)}): discard it or use another output "
                            "folder", topic="partial")

    def _batch_path(self, index):
        return self.folder / f"batch_{index:05d}.pt"

    def batch(self, index):
        """The finished batch `index` as it was saved (numpy arrays), or None."""
        path = self._batch_path(index)
        if not path.exists():
            return None
        return _arrays(self._load(path, (dict, tuple)))  # sanity's dicts, measuring's tuples

    def _load(self, path, kind):
        """torch.load of a file this folder wrote; damaged (truncated, foreign, not a `kind`):
        one UserError naming it and --no-resume."""
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            why = None if isinstance(saved, kind) else f"a {type(saved).__name__}"
        except Exception as err:
            why = type(err).__name__
        if why:
            raise UserError(f"{path} of the unfinished {self.what} run is damaged ({why}): rerun "
                            "with --no-resume to start it afresh", topic="partial")
        return saved

    def batches(self) -> list:
        """The finished batches 0, 1, ... up to the first missing one."""
        out = []
        while (saved := self.batch(len(out))) is not None:
            out.append(saved)
        return out

    def save_batch(self, index, batch):
        saved = _tensors(batch)
        atomic_write(self._batch_path(index), lambda f: torch.save(saved, f))

    def state(self, name):
        """The STATE saved by save_state (tensors as saved), or None."""
        path = self.folder / f"{name}.pt"
        return self._load(path, object) if path.exists() else None

    def save_state(self, name, obj):
        atomic_write(self.folder / f"{name}.pt", lambda f: torch.save(obj, f))


def discard(out_dir, name):
    """Remove OUT/NAME.partial/ (after the finished run's files are written)."""
    shutil.rmtree(Path(out_dir) / f"{name}.partial", ignore_errors=True)
