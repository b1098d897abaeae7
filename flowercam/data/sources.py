"""Which source images and masks changed since the last augment.py run: DATA_DIR/sources.json
records each one's size, mtime and content hash, so a replaced image gets its copies redone and a
replaced mask is copied again (a mask gone from the source is removed from the data folder).

    python -c "from flowercam.data import sources; print(sources.stamp('photo.jpg'))"

Rule: an image whose size and mtime are as recorded is unchanged (one os.stat each: about 9 ms for
Flower-17's 1360 images); otherwise its content hash (BLAKE2b) decides, so a file only touched
(copied again, checked out) is not redone. An image with no record (a data folder made before this
file existed) counts as unchanged. The record is written after the copies are complete.
"""

import hashlib
import os
from pathlib import Path

from flowercam.core import UserError, atomic_save_json
from flowercam.data import dataset

NAME = "sources.json"
VERSION = 1


def stamp(path) -> list:
    """[size, mtime_ns] of a file."""
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def digest(path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "blake2b").hexdigest()[:32]


def read_record(data_dir, kind="images") -> dict:
    """{image id: [size, mtime_ns, digest]} of the last complete run's images (kind "masks": of
    its source masks); {} when there is none (or it is unreadable: then nothing counts as
    changed, and the record is written anew)."""
    path = Path(data_dir) / NAME
    if not path.is_file():
        return {}
    try:
        record = dataset.read_json(path)
    except UserError:
        return {}
    if not isinstance(record, dict) or record.get("version") != VERSION:
        return {}
    entries = record.get(kind)
    if not isinstance(entries, dict):
        return {}
    # a hand-edited entry that is not [size, mtime_ns, digest] counts as no record (rehashed)
    return {i: e for i, e in entries.items() if isinstance(e, list) and len(e) == 3}


def current(images, old) -> dict:
    """The record of index images (or masks: {"id", "source"} each) now: the old entry when size
    and mtime match, else hashed."""
    record = {}
    for im in images:
        now = stamp(im["source"])
        prev = old.get(im["id"])
        record[im["id"]] = prev if prev and prev[:2] == now else now + [digest(im["source"])]
    return record


def changed(old, new) -> list[str]:
    """Ids whose content differs from the last run's record."""
    return [i for i, entry in new.items() if i in old and old[i][2] != entry[2]]


def gone(old, new) -> list[str]:
    """Ids recorded by the last run that are no longer there."""
    return sorted(set(old) - set(new))


def save_record(data_dir, record, mask_record=None):
    atomic_save_json(Path(data_dir) / NAME, {"version": VERSION, "images": record,
                                             "masks": mask_record or {}})
