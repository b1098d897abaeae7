"""The feature cache built by several processes (torchrun): the missing rows are split across
the ranks in whole batches, and rank 0 alone keeps the record (disk.py).

    torchrun --nproc-per-node 2 cache.py --subset train          # features.py calls build()
    FLOWERCAM_CACHE_LAYOUT=gather torchrun --nproc-per-node 2 cache.py --subset valid

Two layouts, found by rank 0 leaving a file in its cache folder that the others look for:
- shared (every rank sees it): each rank writes and flushes its rows into the one .npy, then
  says which rows it wrote; rank 0 records them as done.
- gather (some rank does not): the rows travel to rank 0 over the process group; rank 0 writes
  them. Afterwards the other ranks get the whole cache from rank 0 (in memory).
env FLOWERCAM_CACHE_LAYOUT=shared|gather forces one. The batches are the single process's
(consecutive runs of batch_size missing rows; rank r computes batches r, r+W, ...), one per rank
per round, so the bytes equal a single process's at equal thread counts. The cache is marked
complete, with its checksums, by rank 0 after the last round, when every rank has finished.
"""

import contextlib
import dataclasses
import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from flowercam import dist
from flowercam.cache import disk
from flowercam.core import TMP_PREFIX, UserError, disk_errors
from flowercam.data import dataset

LAYOUT_ENV = "FLOWERCAM_CACHE_LAYOUT"
LAYOUTS = ("shared", "gather")
PHASES = {}  # seconds per phase of this process's last build() (benchmarks.scaling reads it)


@dataclasses.dataclass(frozen=True)
class Build:
    """One cache to build: its files and key (features.cache_paths / cache_key), the items
    (rows in order), and how a batch of images becomes rows."""

    npy_path: Path
    meta_path: Path
    key: dict
    items: list
    size: int
    batch_size: int
    num_workers: int
    run_batch: Callable  # images [B,3,H,W] -> float32 numpy [B,C,h,w] (the backbone at its cut)


def layout(folder) -> str:
    """"shared" when every rank sees rank 0's cache folder (env LAYOUT_ENV decides if set)."""
    forced = os.environ.get(LAYOUT_ENV)
    if forced:
        if forced not in LAYOUTS:
            raise UserError(f"{LAYOUT_ENV}={forced!r}: use one of {', '.join(LAYOUTS)}")
        return forced
    token = None
    if dist.is_root():
        with disk_errors(folder):
            Path(folder).mkdir(parents=True, exist_ok=True)
            fd, token = tempfile.mkstemp(dir=folder, prefix=TMP_PREFIX + "rank0-")
            os.close(fd)
    token = dist.broadcast(token)
    seen = dist.all_gather(os.path.exists(token))
    if dist.is_root():
        os.remove(token)
    return "shared" if all(seen) else "gather"


def check_same_items(items):
    """Every rank must list the same images (ids, names, sizes) in the same order."""
    digest = hashlib.sha256()
    for item_id, path, label in items:
        size = os.path.getsize(path) if os.path.exists(path) else -1
        digest.update(f"{item_id}|{os.path.basename(path)}|{size}|{label}\n".encode())
    seen = dist.all_gather(digest.hexdigest())
    odd = [r for r, d in enumerate(seen) if d != seen[0]]
    if odd:
        raise UserError(f"rank(s) {odd} list other images than rank 0 in their data folder: "
                        "give every machine the same data folder")


def build(job: Build) -> torch.Tensor:
    """[N,C,h,w] features of job.items on every rank (VGG16: [N,512,7,7] float32); missing rows
    built together."""
    PHASES.clear()
    start = time.perf_counter()
    check_same_items(job.items)
    how = layout(job.npy_path.parent)
    store, done = None, None
    lock = disk.build_lock(job.npy_path) if dist.is_root() else contextlib.nullcontext()
    with lock:
        if dist.is_root() and not disk.check_complete(job.npy_path, job.meta_path,
                                                             job.key):
            store, done = disk.open_for_build(job.npy_path, job.meta_path, job.key)
        todo = dist.broadcast(None if done is None else np.flatnonzero(~done))
        if todo is not None:
            if how == "shared" and not dist.is_root():
                store = np.load(job.npy_path, mmap_mode="r+")
            _rounds(job, todo, how, (store, done))
        dist.wait_all()  # complete on disk before anyone maps it
    feats = _spread(job) if how == "gather" else np.load(job.npy_path, mmap_mode="c")
    PHASES["total"] = time.perf_counter() - start
    return torch.from_numpy(feats)


def _timed(phase, fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    PHASES[phase] = PHASES.get(phase, 0.0) + time.perf_counter() - start
    return out


def _rounds(job, todo, how, target):
    """Round k: rank r computes batch k*W + r, then rank 0 records (and, gathered, writes) it."""
    store, done = target
    chunks = [todo[i:i + job.batch_size] for i in range(0, len(todo), job.batch_size)]
    mine = dist.shard(chunks)
    loader = iter(DataLoader(dataset.FlowerDataset(job.items, job.size),
                             batch_sampler=[c.tolist() for c in mine],
                             num_workers=job.num_workers)) if mine else iter(())
    bar = tqdm(total=len(job.items), initial=len(job.items) - len(todo), desc="feature cache",
               unit="img", disable=not dist.is_root())
    last = [time.monotonic()]
    try:
        with bar, disk_errors(job.npy_path):
            for k in range(-(-len(chunks) // dist.world())):
                rows = mine[k] if k < len(mine) else np.zeros(0, np.int64)
                feats = _compute(job, loader) if len(rows) else None
                if how == "shared" and len(rows):
                    _timed("write", _write, store, rows, feats)
                got = _timed("gather", dist.gather, rows if how == "shared" else (rows, feats))
                if dist.is_root():
                    _timed("write", _record, job, (store, done), got, last)
                    bar.update(sum(len(g if how == "shared" else g[0]) for g in got))
    finally:
        if dist.is_root():
            store.flush()
            disk.save_progress(job.meta_path, job.key, done)  # every recorded row
    if dist.is_root():
        del store
        disk.save_progress(job.meta_path, job.key, done,
                                  _timed("write", disk.checksums, job.npy_path))


def _compute(job, loader):
    images, _ = _timed("decode", next, loader)
    return _timed("backbone", job.run_batch, images)


def _write(store, rows, feats):
    store[rows] = feats
    store.flush()  # on disk before rank 0 records it as done


def _record(job, target, got, last):
    """Rank 0: write the gathered rows (gather layout), then mark every reported row done."""
    store, done = target
    for part in got:
        rows = part if isinstance(part, np.ndarray) else part[0]
        if not isinstance(part, np.ndarray) and len(rows):
            store[rows] = part[1]
        done[rows] = True
    store.flush()
    if time.monotonic() - last[0] > 1.0:
        disk.save_progress(job.meta_path, job.key, done)
        last[0] = time.monotonic()


def _spread(job) -> np.ndarray:
    """Gather layout: rank 0's complete cache, block by block, to every rank."""
    start = time.perf_counter()
    n = len(job.items)
    rows = np.load(job.npy_path, mmap_mode="c") if dist.is_root() else None
    shape, dtype = disk.row_layout(job.key)
    out = rows if dist.is_root() else np.empty((n, *shape), dtype)
    for i in range(0, n, disk.BLOCK_ROWS):
        block = dist.broadcast(np.ascontiguousarray(rows[i:i + disk.BLOCK_ROWS])
                               if dist.is_root() else None)
        if not dist.is_root():
            out[i:i + len(block)] = block
    PHASES["spread"] = time.perf_counter() - start
    return out
