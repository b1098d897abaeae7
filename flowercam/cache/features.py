"""Feature cache: the frozen backbone's output at its cut of every image, computed once
([N,512,7,7] float32 at VGG16's pool5; [N,512,16,16] float16 at conv5_3, 256 px; other
backbones: Backbone.cache_fields).

    python cache.py --subset train       # the command; this module is what it runs
    python -c "from flowercam.cache import features; print(features.PRECISIONS)"

Files: data/cache/feats-<hash>.npy (float32 memmap, rows in items order) and feats-<hash>.json
({"key": ..., "done": "0101...", checksums}; cache/disk.py): the hash covers dataset,
image list (ids, file sizes and mtimes), input size, backbone_id, precision and the backbone's
cache_fields (cut, storage dtype, row shape; VGG16's pool5 keys stay as they were), so a changed
input never reuses stale features. Completed batches are flushed, then marked done, so an
interrupted build resumes where it stopped; a complete cache is verified on open (disk.py).
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

from flowercam import dist
from flowercam.backbones import protocol
from flowercam.cache import disk, shards
from flowercam.core import UserError, disk_errors
from flowercam.data import dataset

PRECISIONS = ("fp32", "bf16")
CACHE_VERSION = 1


def input_size(data_dir) -> int:
    """Image size augment.py wrote (data/augment.json "size"); the backbone input size."""
    return int(dataset.read_augment_info(data_dir).get("size", dataset.DEFAULT_SIZE))


def cache_key(items, backbone: protocol.Backbone, data_dir, size, precision) -> dict:
    """Everything the features depend on; a change in any of it gives another cache file: the
    images, the input size, the precision, the backbone's weights id (its name first) and what
    its cache_fields say (cut, storage, row shape)."""
    try:
        dataset_name = dataset.read_index(data_dir).get("dataset", "")
    except UserError:
        dataset_name = ""
    listing = hashlib.sha256()
    for item_id, path, _ in items:
        st = os.stat(path) if os.path.exists(path) else None
        stamp = f"{st.st_size}:{st.st_mtime_ns}" if st else "missing"
        listing.update(f"{item_id}|{os.path.basename(path)}|{stamp}\n".encode())
    key = {"version": CACHE_VERSION, "dataset": dataset_name, "n": len(items),
           "images": listing.hexdigest(), "input_size": int(size),
           "backbone": backbone.backbone_id, "precision": precision}
    key.update(backbone.cache_fields(int(size)))
    return key



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


def _build(store, done, job: shards.Build, on_flush):
    """Run the backbone over the rows not done yet, in items order; flush after every batch."""
    todo = np.flatnonzero(~done)
    subset = [job.items[i] for i in todo]
    # decoding runs in worker processes while the main process runs the backbone
    loader = DataLoader(dataset.FlowerDataset(subset, job.size), batch_size=job.batch_size,
                        shuffle=False, num_workers=job.num_workers)
    bar = tqdm(total=len(job.items), initial=int(done.sum()), desc="feature cache", unit="img")
    start = 0
    with bar, worker_errors():
        for images, _ in loader:
            rows = todo[start:start + len(images)]
            store[rows] = job.run_batch(images)  # [B,C,h,w] float32, stored as the key says
            store.flush()  # data on disk before the done mask says so
            done[rows] = True
            on_flush(done)
            start += len(images)
            bar.update(len(images))


def feature_cache(items, backbone, data_dir, precision="fp32", batch_size=16, num_workers=2,
                  device="cpu", size=None) -> torch.Tensor:
    """[N,C,h,w] features of items at backbone.cut (rows in items order), memory-mapped from
    data/cache, stored as the backbone's storage says (VGG16: float32 at pool5, float16 at
    conv5_3; consumers take .float() per batch).

    items: [(item_id, path, label)] as dataset.split_items gives; size None = data/augment.json.
    Builds what is missing or damaged (resuming an interrupted build; one builder at a time),
    returns a read-only copy-on-write mapping (a complete cache is never opened for writing).
    """
    size = input_size(data_dir) if size is None else int(size)
    key = cache_key(items, backbone, data_dir, size, precision)
    npy_path, meta_path = cache_paths(data_dir, key)
    autocast(precision, device)  # validates precision before any file is touched
    if not items:
        return torch.zeros((0, *disk.row_layout(key)[0]))
    job = shards.Build(npy_path=npy_path, meta_path=meta_path, key=key, items=list(items),
                             size=size, batch_size=batch_size, num_workers=num_workers,
                             run_batch=batch_runner(backbone, precision, device))
    if dist.world() > 1:  # under torchrun: the ranks build it together (shards.py)
        with worker_errors():
            return shards.build(job)
    if not disk.check_complete(npy_path, meta_path, key):
        with disk.build_lock(npy_path):
            # another process may have finished it while this one waited for the lock
            if not disk.check_complete(npy_path, meta_path, key):
                _build_locked(job)
    # "c" = private copy-on-write mapping: writable for torch, never changes the file
    return torch.from_numpy(np.load(npy_path, mmap_mode="c"))


def batch_runner(backbone, precision, device):
    """images [B,3,H,W] -> their float32 features as numpy [B,C,h,w] (every build's rows)."""
    def run(images):
        with torch.inference_mode():
            with autocast(precision, device):
                feats = backbone(images.to(device))
            return feats.float().cpu().numpy()
    return run


def _build_locked(job: shards.Build):
    """Compute the missing rows into the store; record progress (about once a second, and at
    the end), then the checksums once complete."""
    npy_path, meta_path, key = job.npy_path, job.meta_path, job.key
    store, done = disk.open_for_build(npy_path, meta_path, key)
    last = [0.0]

    def on_flush(mask):
        if time.monotonic() - last[0] > 1.0 or mask.all():
            disk.save_progress(meta_path, key, mask)
            last[0] = time.monotonic()

    try:
        with disk_errors(npy_path):
            _build(store, done, job, on_flush)
    finally:
        store.flush()
        del store
        disk.save_progress(meta_path, key, done)  # keeps every flushed batch
    disk.save_progress(meta_path, key, done, disk.checksums(npy_path))


def labels_tensor(items) -> torch.Tensor:
    """[N] long labels of items."""
    return torch.tensor([label for _, _, label in items], dtype=torch.long)


class CachedSource:
    """Features from the cache: batches are rows of one [N,C,h,w] tensor (no backbone), as
    float32 whatever the storage."""

    def __init__(self, feats, labels, device="cpu"):
        # on an accelerator the whole tensor moves once; on CPU it stays memory-mapped
        self.feats = feats.to(device)
        self.labels = labels.to(device)
        self.channels = int(feats.shape[1])  # what a head trained on them reads

    def __len__(self):
        return len(self.labels)

    def batches(self, order, batch_size):
        """(feats [B,C,h,w], labels [B]) for consecutive chunks of the index tensor order."""
        order = order.to(self.labels.device)
        for idx in order.split(batch_size):
            yield self.feats.index_select(0, idx).float(), self.labels.index_select(0, idx)


class BackboneSource:
    """The report's way: decode the images and run the backbone for every batch, every epoch."""

    def __init__(self, items, backbone, size, precision="fp32", num_workers=2, device="cpu"):
        self.items, self.backbone, self.size = list(items), backbone, size
        self.precision, self.num_workers, self.device = precision, num_workers, device
        self.channels = backbone.channels

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

