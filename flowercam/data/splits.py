"""Train/valid/test splits: Flower-17's official datasplits.mat, else three generated ones.

    python augment.py --source ../shared/flowers17     # writes data/splits.json (this module)
    python -c "from flowercam.data import splits; print(splits.split_sizes(80))"

data/splits.json: {"source": "datasplits.mat"|"generated", "seed", "splits": {"1": {"train":
[ids], "valid": [ids], "test": [ids]}, "2": .., "3": ..}}.
"""

import json
import sys
from pathlib import Path

import numpy as np

from flowercam.core import UserError, atomic_save_json

SUBSETS = ("train", "valid", "test")
SPLITS = ("1", "2", "3")
SPLIT_SEED = 0  # generated splits are fixed by this seed, never by a script's --seed


def split_sizes(n: int) -> tuple[int, int, int]:
    """Per-class train/valid/test counts: 50/25/25 percent (Flower-17's official 40/20/20 of 80)."""
    n_train, n_valid = (n + 1) // 2, n // 4
    return n_train, n_valid, n - n_train - n_valid


def generate_splits(images: list[dict], seed: int = SPLIT_SEED) -> dict:
    """Three stratified random splits of index images; ids keep index order inside each subset."""
    order = {im["id"]: i for i, im in enumerate(images)}
    by_class: dict[int, list[str]] = {}
    for im in images:
        by_class.setdefault(im["label"], []).append(im["id"])
    splits = {}
    for split in SPLITS:
        parts = {name: [] for name in SUBSETS}
        for label, ids in sorted(by_class.items()):
            # one RNG per (seed, split, class): adding a class never reshuffles the others
            perm = np.random.default_rng([seed, int(split), label]).permutation(len(ids))
            n_train, n_valid, _ = split_sizes(len(ids))
            chosen = [ids[i] for i in perm]
            parts["train"] += chosen[:n_train]
            parts["valid"] += chosen[n_train:n_train + n_valid]
            parts["test"] += chosen[n_train + n_valid:]
        splits[split] = {name: sorted(v, key=order.__getitem__) for name, v in parts.items()}
    return {"source": "generated", "seed": seed, "splits": splits}


def read_mat_splits(mat_path, ids: set[str]) -> dict:
    """Official datasplits.mat (trn1/val1/tst1.. hold 1-based image numbers), kept to `ids`."""
    try:
        from scipy.io import loadmat  # slow optional import, needed only for this file
    except ImportError as err:
        raise UserError(f"reading {mat_path} needs scipy: `pip install scipy`, or delete the file "
                        "to use a generated split") from err
    try:
        mat = loadmat(str(mat_path))
    except Exception as err:  # scipy raises several types for a damaged file
        raise UserError(f"{mat_path} is unreadable ({err}): delete it to use a generated "
                        "split") from err
    splits = {}
    for split in SPLITS:
        parts = {}
        for name, key in zip(SUBSETS, ("trn", "val", "tst"), strict=True):
            if key + split not in mat:
                raise UserError(f"{mat_path} has no {key}{split}: delete it to use a generated "
                                "split")
            numbers = sorted(int(n) for n in np.asarray(mat[key + split]).ravel())
            parts[name] = [f"image_{n:04d}" for n in numbers if f"image_{n:04d}" in ids]
        splits[split] = parts
    return {"source": "datasplits.mat", "seed": None, "splits": splits}


def find_mat(index, data_dir):
    """datasplits.mat beside a Flower-17 source (or its parent, or data_dir); None otherwise."""
    if index["dataset"] != "flowers17":
        return None
    root = Path(index["source"])
    for folder in (root, root.parent, Path(data_dir)):
        if (folder / "datasplits.mat").is_file():
            return folder / "datasplits.mat"
    return None


def make_splits(data_dir, index) -> dict:
    """splits.json content: from datasplits.mat when present, else generated (fixed seed)."""
    mat = find_mat(index, data_dir)
    if mat:
        table = read_mat_splits(mat, {im["id"] for im in index["images"]})
    else:
        table = generate_splits(index["images"])
    for line in missing_subsets(index, table):
        print(f"warning: {line}", file=sys.stderr)
    return table


def missing_subsets(index, table) -> list[str]:
    """One line per class that some subset of split 1 lacks (a class of 1-3 images: it is
    trained on but never validated or tested; accuracy then says nothing about it)."""
    labels = {im["id"]: im["label"] for im in index["images"]}
    count = [0] * len(index["classes"])
    for im in index["images"]:
        count[im["label"]] += 1
    lines = []
    for label, name in enumerate(index["classes"]):
        lacking = [subset for subset in SUBSETS if label not in
                   {labels[i] for i in table["splits"]["1"][subset] if i in labels}]
        if lacking and count[label]:
            lines.append(f"class {name!r} has {count[label]} image(s): split 1 has none of it in "
                         f"{' or '.join(lacking)} (4 or more give every subset one)")
    return lines


def save_splits(data_dir, splits):
    """Written once: an existing identical data/splits.json is left untouched."""
    path = Path(data_dir) / "splits.json"
    try:
        same = json.loads(path.read_text()) == splits
    except (OSError, ValueError):  # missing or damaged: write it
        same = False
    if not same:
        atomic_save_json(path, splits)
