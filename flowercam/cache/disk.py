"""The feature cache on disk: a .npy of [N,C,h,w] rows (shape and dtype from its key), its
progress/checksum record, and the lock that makes concurrent builders compute every row once.

    python cache.py --subset valid      # builds one; this module keeps it whole
    python -c "from flowercam.cache import disk as s; print(s.BLOCK_ROWS)"

data/cache/feats-<hash>.json: {"key", "shape", "dtype", "complete", "done": "0101..", and once
complete "npy_bytes" (exact file size, from the .npy header) and "crc32" (zlib.crc32 of every
BLOCK_ROWS rows)}. A complete cache is checked on every open (size, then the checksums: a
sequential read of the file) and only ever mapped read-only; damaged blocks are rebuilt.
A complete cache from before the checksums is adopted: checksums recorded once when the folder
is writable, else used unverified with a one-line note.
"""

import contextlib
import fcntl
import json
import os
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np

from flowercam.backbones.vgg16 import VGG16
from flowercam.core import UserError, atomic_save_json, disk_errors

BLOCK_ROWS = 256  # rows per checksum: a damaged block costs 256 backbone rows to rebuild


def row_layout(key) -> tuple[tuple, np.dtype]:
    """(row shape, numpy dtype) of a cache key's rows: its row_shape (Backbone.cache_fields);
    a key without one is VGG16's (keys from before the protocol: pool5 carries no cut)."""
    if "row_shape" in key:
        shape = tuple(int(n) for n in key["row_shape"])
    else:
        shape = VGG16.row_shape(key.get("cut", VGG16.default_cut), key["input_size"])
    return shape, np.dtype(key.get("storage", "float32"))


def read_meta(meta_path, key) -> dict | None:
    """The record of a build of this key (any progress), else None."""
    try:
        meta = json.loads(Path(meta_path).read_text())
    except (OSError, ValueError):
        return None
    if meta.get("key") != key or len(meta.get("done", "")) != key["n"]:
        return None
    return meta


def done_mask(meta) -> np.ndarray:
    return np.frombuffer(meta["done"].encode(), dtype=np.uint8) == ord("1")


def save_progress(meta_path, key, done, sums=None):
    """The record, atomically; sums = (npy_bytes, [crc32 per block]) once complete."""
    shape, dtype = row_layout(key)
    meta = {"key": key, "shape": [key["n"], *shape], "dtype": dtype.name,
            "complete": bool(done.all()), "done": "".join("1" if d else "0" for d in done)}
    if sums is not None:
        meta.update(npy_bytes=sums[0], block_rows=BLOCK_ROWS, crc32=sums[1])
    atomic_save_json(meta_path, meta)


def expected_bytes(key) -> int:
    """Exact .npy size of the key's rows: the header numpy writes plus the data."""
    n, (shape, dtype) = key["n"], row_layout(key)
    header = np.lib.format.header_data_from_array_1_0(np.zeros((0, *shape), dtype=dtype))
    header["shape"] = (n, *shape)
    with tempfile.TemporaryFile() as f:  # the header's padded length, as numpy writes it
        np.lib.format.write_array_header_1_0(f, header)
        length = f.tell()
    return length + n * int(np.prod(shape)) * dtype.itemsize


def checksums(npy_path) -> tuple[int, list[int]]:
    """(file size, zlib.crc32 of every BLOCK_ROWS rows) of a cache file, read sequentially."""
    rows = np.load(npy_path, mmap_mode="r")
    sums = [zlib.crc32(np.ascontiguousarray(rows[i:i + BLOCK_ROWS]).data)
            for i in range(0, len(rows), BLOCK_ROWS)]
    return os.path.getsize(npy_path), sums


def damaged_rows(npy_path, meta) -> np.ndarray | None:
    """Bool mask of the rows whose block fails its checksum; None when the file itself is gone
    or has the wrong size (truncated, extended: everything is rebuilt)."""
    n = meta["key"]["n"]
    try:
        size = os.path.getsize(npy_path)
    except OSError:
        return None
    if size != meta["npy_bytes"] or size != expected_bytes(meta["key"]):
        return None
    _, sums = checksums(npy_path)
    bad = np.zeros(n, dtype=bool)
    for block, (got, want) in enumerate(zip(sums, meta["crc32"], strict=True)):
        bad[block * BLOCK_ROWS:(block + 1) * BLOCK_ROWS] = got != want
    return bad


def folder_writable(folder) -> bool:
    """True when a file can be made in folder (read-only mounts, permissions, even for root)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def note(message):
    print(f"note: {message}", file=sys.stderr)


def check_complete(npy_path, meta_path, key) -> bool:
    """True when a complete, intact cache of key is there (adopting a legacy one); False when
    it must be built or repaired (a damaged one is said in one line on stderr)."""
    meta = read_meta(meta_path, key)
    if meta is None or not meta.get("complete") or not Path(npy_path).is_file():
        return False
    if "crc32" not in meta:  # complete before checksums existed
        if not folder_writable(Path(npy_path).parent):
            note(f"{npy_path} has no checksums and its folder is read-only: used unverified")
            return True
        if os.path.getsize(npy_path) != expected_bytes(key):
            note(f"{npy_path} has the wrong size for {key['n']} rows: rebuilding it")
            return False
        save_progress(meta_path, key, done_mask(meta), checksums(npy_path))
        note(f"{npy_path}: checksums recorded (a cache from an earlier version, adopted)")
        return True
    bad = damaged_rows(npy_path, meta)
    if bad is not None and not bad.any():
        return True
    what = "has the wrong size" if bad is None else (
        f"fails the checksum of {int(np.ceil(bad.sum() / BLOCK_ROWS))} of "
        f"{len(meta['crc32'])} blocks")
    print(f"warning: feature cache {npy_path} {what}: rebuilding "
          f"{'it' if bad is None else 'those rows'}", file=sys.stderr)
    return False


def open_for_build(npy_path, meta_path, key):
    """(memmap r+ [N,C,h,w], done mask) to build into: resumes an interrupted build, keeps the
    intact rows of a damaged one, else a fresh preallocated file (a full disk fails here, as
    one line, rather than as a crash when the mapping is written)."""
    meta = read_meta(meta_path, key)
    done = None
    if meta is not None and Path(npy_path).is_file():
        if "crc32" in meta:
            bad = damaged_rows(npy_path, meta)
            done = None if bad is None else done_mask(meta) & ~bad
        elif os.path.getsize(npy_path) == expected_bytes(key):
            done = done_mask(meta)
    if done is None:
        _create(npy_path, key)
        done = np.zeros(key["n"], dtype=bool)
        save_progress(meta_path, key, done)
    return np.load(npy_path, mmap_mode="r+"), done


def _create(npy_path, key):
    """A zero-filled cache file of the key's rows, its disk space allocated up front."""
    npy_path = Path(npy_path)
    tmp = npy_path.with_name(npy_path.name + ".tmp")
    try:
        with disk_errors(npy_path):
            npy_path.parent.mkdir(parents=True, exist_ok=True)
            shape, dtype = row_layout(key)
            np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype,
                                      shape=(key["n"], *shape)).flush()
            fd = os.open(tmp, os.O_RDWR)
            try:
                with contextlib.suppress(OSError, AttributeError):
                    # real blocks now, so a full disk is an error here, not SIGBUS later
                    os.posix_fallocate(fd, 0, os.path.getsize(tmp))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, npy_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def build_lock(npy_path):
    """Exclusive lock (fcntl.flock on feats-<hash>.lock) held while a cache is built or
    repaired; a second process waits here, then finds the cache complete."""
    lock_path = Path(npy_path).with_suffix(".lock")
    try:
        with disk_errors(lock_path):
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError as err:
        raise UserError(f"cannot build the feature cache in {lock_path.parent} ({err.strerror})"
                        ": make the data folder writable, or build it with cache.py where it "
                        "is") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released by the kernel if this process dies
        yield
    finally:
        os.close(fd)
