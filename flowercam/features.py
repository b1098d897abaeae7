"""Feature cache: the frozen backbone's pooled output [N,512,7,7] of every image, computed once.

    python cache.py --subset train       # the command; this module is what it runs
    python -c "from flowercam import features; print(features.PRECISIONS)"

Files: data/cache/feats-<hash>.npy (float32 memmap, rows in items order) and feats-<hash>.json
({"key": ..., "done": "0101..."}): the hash covers dataset, image list (ids, file sizes and mtimes),
input size, backbone_id and precision, so a changed input never reuses stale features. Completed
batches are flushed, then marked done, so an interrupted build resumes where it stopped.
"""

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from flowercam import dataset, models
from flowercam.core import UserError, atomic_save_json

PRECISIONS = ("fp32", "bf16")
CACHE_VERSION = 1


def input_size(data_dir) -> int:
    """Image size augment.py wrote (data/augment.json "size"); the backbone input size."""
    return int(dataset.read_augment_info(data_dir).get("size", models.INPUT_SIZE))


def cache_key(items, backbone_id, data_dir, size, precision) -> dict:
    """Everything the features depend on; a change in any of it gives another cache file."""
    try:
        dataset_name = dataset.read_index(data_dir).get("dataset", "")
    except UserError:
        dataset_name = ""
    listing = hashlib.sha256()
    for item_id, path, _ in items:
        st = os.stat(path) if os.path.exists(path) else None
        stamp = f"{st.st_size}:{st.st_mtime_ns}" if st else "missing"
        listing.update(f"{item_id}|{os.path.basename(path)}|{stamp}\n".encode())
    return {"version": CACHE_VERSION, "dataset": dataset_name, "n": len(items),
            "images": listing.hexdigest(), "input_size": int(size),
            "backbone": backbone_id, "precision": precision}


def cache_paths(data_dir, key) -> tuple[Path, Path]:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(data_dir) / "cache"
    return folder / f"feats-{digest}.npy", folder / f"feats-{digest}.json"


def autocast(precision, device):
    """bf16 autocast for the backbone (CPU or CUDA); fp32 = no autocast."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


@contextlib.contextmanager
def worker_errors():
    """A UserError raised in a DataLoader worker arrives with the worker's traceback in its
    message; re-raise it as the one line it was."""
    try:
        yield
    except UserError as err:
        lines = [line for line in str(err).splitlines() if line.strip()]
        if len(lines) <= 1:
            raise
        raise UserError(lines[-1].split("UserError: ", 1)[-1]) from None


def _read_progress(meta_path, npy_path, key):
    """Done mask (bool array) of a matching earlier build, else None."""
    try:
        meta = json.loads(Path(meta_path).read_text())
    except (OSError, ValueError):
        return None
    done = meta.get("done", "")
    if meta.get("key") != key or len(done) != key["n"] or not npy_path.is_file():
        return None
    return np.frombuffer(done.encode(), dtype=np.uint8) == ord("1")


def _save_progress(meta_path, key, done):
    mask = "".join("1" if d else "0" for d in done)
    atomic_save_json(meta_path, {"key": key, "shape": [key["n"], *models.FEATURE_SHAPE],
                                 "dtype": "float32", "complete": bool(done.all()), "done": mask})


def _open_store(npy_path, meta_path, key):
    """(memmap [N,512,7,7] r+, done mask); a fresh zero file when there is nothing to resume."""
    done = _read_progress(meta_path, npy_path, key)
    if done is None:
        npy_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = npy_path.with_name(npy_path.name + ".tmp")
        np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                  shape=(key["n"], *models.FEATURE_SHAPE)).flush()
        os.replace(tmp, npy_path)
        done = np.zeros(key["n"], dtype=bool)
        _save_progress(meta_path, key, done)
    return np.load(npy_path, mmap_mode="r+"), done.copy()


def _build(store, done, items, backbone, size, precision, batch_size, num_workers, device,
           on_flush):
    """Run the backbone over the rows not done yet, in items order; flush after every batch."""
    todo = np.flatnonzero(~done)
    subset = [items[i] for i in todo]
    # decoding runs in worker processes while the main process runs the backbone
    loader = DataLoader(dataset.FlowerDataset(subset, size), batch_size=batch_size,
                        shuffle=False, num_workers=num_workers)
    bar = tqdm(total=len(items), initial=int(done.sum()), desc="feature cache", unit="img")
    start = 0
    with bar, torch.inference_mode(), worker_errors():
        for images, _ in loader:
            with autocast(precision, device):
                feats = backbone(images.to(device))  # [B,512,7,7]
            rows = todo[start:start + len(images)]
            store[rows] = feats.float().cpu().numpy()
            store.flush()  # data on disk before the done mask says so
            done[rows] = True
            on_flush(done)
            start += len(images)
            bar.update(len(images))


def feature_cache(items, backbone, data_dir, precision="fp32", batch_size=16, num_workers=2,
                  device="cpu", size=None) -> torch.Tensor:
    """[N,512,7,7] float32 features of items (rows in items order), memory-mapped from data/cache.

    items: [(item_id, path, label)] as dataset.split_items gives; size None = data/augment.json.
    Builds what is missing (resuming an interrupted build), returns the copy-on-write mapping.
    """
    size = input_size(data_dir) if size is None else int(size)
    key = cache_key(items, backbone.backbone_id, data_dir, size, precision)
    npy_path, meta_path = cache_paths(data_dir, key)
    autocast(precision, device)  # validates precision before any file is touched
    if not items:
        return torch.zeros((0, *models.FEATURE_SHAPE))
    store, done = _open_store(npy_path, meta_path, key)
    if not done.all():
        # throttle the progress file to about once a second; always written at the end
        last = [0.0]

        def on_flush(mask):
            if time.monotonic() - last[0] > 1.0 or mask.all():
                _save_progress(meta_path, key, mask)
                last[0] = time.monotonic()

        try:
            _build(store, done, items, backbone, size, precision, batch_size, num_workers,
                   device, on_flush)
        finally:
            store.flush()
            _save_progress(meta_path, key, done)  # keeps every flushed batch on interruption
    del store
    # "c" = private copy-on-write mapping: writable for torch, never changes the file
    return torch.from_numpy(np.load(npy_path, mmap_mode="c"))


def labels_tensor(items) -> torch.Tensor:
    """[N] long labels of items."""
    return torch.tensor([label for _, _, label in items], dtype=torch.long)


class CachedSource:
    """Features from the cache: batches are rows of one [N,512,7,7] tensor (no backbone)."""

    def __init__(self, feats, labels, device="cpu"):
        # on an accelerator the whole tensor moves once; on CPU it stays memory-mapped
        self.feats = feats.to(device)
        self.labels = labels.to(device)

    def __len__(self):
        return len(self.labels)

    def batches(self, order, batch_size):
        """(feats [B,512,7,7], labels [B]) for consecutive chunks of the index tensor order."""
        order = order.to(self.labels.device)
        for idx in order.split(batch_size):
            yield self.feats.index_select(0, idx), self.labels.index_select(0, idx)


class BackboneSource:
    """The report's way: decode the images and run the backbone for every batch, every epoch."""

    def __init__(self, items, backbone, size, precision="fp32", num_workers=2, device="cpu"):
        self.items, self.backbone, self.size = list(items), backbone, size
        self.precision, self.num_workers, self.device = precision, num_workers, device

    def __len__(self):
        return len(self.items)

    def batches(self, order, batch_size):
        chunks = [idx.tolist() for idx in order.split(batch_size)]
        loader = DataLoader(dataset.FlowerDataset(self.items, self.size),
                            batch_sampler=chunks, num_workers=self.num_workers)
        with worker_errors():
            for images, labels in loader:
                # no_grad, not inference_mode: the head's backward needs ordinary tensors
                with torch.no_grad(), autocast(self.precision, self.device):
                    feats = self.backbone(images.to(self.device))
                yield feats.float(), labels.to(self.device)

