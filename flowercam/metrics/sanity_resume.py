"""Resuming an interrupted evaluate.py --sanity: each finished batch's per-image similarities (and
the figure images' maps) are written atomically to OUT/sanity.partial/, beside the permuted-label
head, under the run's settings; a rerun with the same settings skips those batches.

    python evaluate.py -d model/RUN --sanity      # interrupted? the same command continues it
    python evaluate.py -d model/RUN --sanity --no-resume   # discard the partial run, start afresh

A partial run of other settings (checkpoint, images, methods, states, seed, layers, ...) is
refused with one line; a finished run removes its partial folder after writing its files. The
files are those of a run without a break (the batches are the same); only the timings add up.
"""

import hashlib
import json
import shutil
from pathlib import Path

import torch

from flowercam.core import UserError, atomic_save_json, atomic_write

FOLDER = "sanity.partial"


def _plain(obj):
    return json.loads(json.dumps(obj))  # tuples -> lists: what settings.json reads back


def run_settings(cfg, ckpt, key):
    """What a sanity run's maps depend on: MetricsConfig cfg's, the checkpoint (path and content)
    and the caller's key (backbone, image ids, rows, states, ...)."""
    return {"checkpoint": str(Path(ckpt).resolve()),
            "checkpoint_sha256": hashlib.sha256(Path(ckpt).read_bytes()).hexdigest(),
            "data_dir": str(Path(cfg.data_dir).resolve()), "split": cfg.split,
            "subset": cfg.split_name, "layers": cfg.layers, "target": cfg.target,
            "seed": cfg.seed, "batch_size": cfg.map_batch_size, "no_cache": cfg.no_cache,
            "device": cfg.device, **key}


def _to_tensors(batch):
    per = {row: {state: {m: torch.from_numpy(v) for m, v in sims.items()}
                 for state, sims in states.items()} for row, states in batch["per_image"].items()}
    figure = {key: torch.from_numpy(maps) for key, maps in batch["figure"].items()}
    return {"per_image": per, "figure": figure, "seconds": float(batch["seconds"])}


def _from_tensors(saved):
    per = {row: {state: {m: v.numpy() for m, v in sims.items()} for state, sims in states.items()}
           for row, states in saved["per_image"].items()}
    figure = {key: maps.numpy() for key, maps in saved["figure"].items()}
    return {"per_image": per, "figure": figure, "seconds": saved["seconds"]}


class Partial:
    """OUT/sanity.partial/: settings.json, permuted.pt (the permuted-label head and its facts),
    batch_00000.pt, ... (one per finished batch, in order). resume=False discards one found."""

    def __init__(self, out_dir, settings, resume=True):
        self.folder, self.settings = Path(out_dir) / FOLDER, _plain(settings)
        if self.folder.exists() and not resume and self._holds_work():
            print(f"discarded the partial sanity run in {self.folder}")
        if self.folder.exists() and (not resume or not self._holds_work()):
            shutil.rmtree(self.folder)  # nothing to resume in a run stopped before any work
        if self.folder.exists():
            self._check()
        else:
            atomic_save_json(self.folder / "settings.json", self.settings)

    def _holds_work(self):
        return (self.folder / "permuted.pt").exists() or self._batch_path(0).exists()

    def _check(self):
        try:
            stored = json.loads((self.folder / "settings.json").read_text())
        except (OSError, ValueError):
            stored = {}
        if stored != self.settings:
            differ = sorted(k for k in {*stored, *self.settings}
                            if stored.get(k) != self.settings.get(k))
            raise UserError(f"{self.folder} holds an unfinished sanity run of other settings "
                            f"({', '.join(differ)}): discard it or use another output folder",
                            topic="partial")

    def _batch_path(self, index):
        return self.folder / f"batch_{index:05d}.pt"

    def batches(self) -> list[dict]:
        """The finished batches, in order: {"per_image": {row: {state: {measure: [B]}}},
        "figure": {(row, state): [K,H,W] float16}, "seconds"}."""
        out = []
        while self._batch_path(len(out)).exists():
            saved = torch.load(self._batch_path(len(out)), map_location="cpu", weights_only=True)
            out.append(_from_tensors(saved))
        return out

    def save_batch(self, index, batch):
        saved = _to_tensors(batch)
        atomic_write(self._batch_path(index), lambda f: torch.save(saved, f))

    def permuted(self):
        """-> (head state dict, facts) of the permuted-label head saved before, or None."""
        path = self.folder / "permuted.pt"
        if not path.exists():
            return None
        saved = torch.load(path, map_location="cpu", weights_only=True)
        return saved["state_dict"], json.loads(saved["facts"])

    def save_permuted(self, head, facts):
        saved = {"state_dict": {k: v.detach().cpu() for k, v in head.state_dict().items()},
                 "facts": json.dumps(facts)}
        atomic_write(self.folder / "permuted.pt", lambda f: torch.save(saved, f))


def discard(out_dir):
    """Remove OUT/sanity.partial/ (after the finished run's files are written)."""
    shutil.rmtree(Path(out_dir) / FOLDER, ignore_errors=True)
