"""Flower-17 splits, the report's dataset class and seeded loaders (reads what augment.py wrote).

    python dataloader.py                              # split sizes of data/ and one loaded batch
    python dataloader.py --data-dir data --split 2 --batch-size 4
    python -c "import dataloader; print(len(dataset.split_items('data', 'train')))"
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from flowercam import core
from flowercam.core import UserError, run_main
from flowercam.models import IMAGENET_MEAN, IMAGENET_STD

SUBSETS = ("train", "valid", "test")
SPLITS = ("1", "2", "3")
SPLIT_SEED = 0  # generated splits are fixed by this seed, never by a script's --seed


def read_json(path):
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found: run `python augment.py` first")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{path} is unreadable ({err}): rerun `python augment.py`") from err


def read_index(data_dir) -> dict:
    """data/index.json: {"dataset", "source", "classes", "images": [{"id", "label", "source"}]}."""
    return read_json(Path(data_dir) / "index.json")


def class_names(data_dir) -> list[str]:
    return list(read_index(data_dir)["classes"])


def read_augment_info(data_dir) -> dict:
    """data/augment.json {"copies", "size", "seed", "complete"}; UserError while unfinished."""
    info = read_json(Path(data_dir) / "augment.json")
    if not info.get("complete", False):
        raise UserError(f"{Path(data_dir) / 'auged'} is incomplete: rerun `python augment.py`")
    return info


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
        from scipy.io import loadmat
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


def load_split(data_dir, split=1) -> dict:
    """{"train": [ids], "valid": [ids], "test": [ids]} of split 1, 2 or 3 from data/splits.json."""
    splits = read_json(Path(data_dir) / "splits.json")["splits"]
    if str(split) not in splits:
        raise UserError(f"split {split} is not in {Path(data_dir) / 'splits.json'}: use 1, 2 or 3")
    return splits[str(split)]


def split_items(data_dir, subset, split=1) -> list[tuple[str, str, int]]:
    """(item_id, path, label) of a subset: train = all augmented copies, valid/test = copy 0."""
    if subset not in SUBSETS:
        raise UserError(f"unknown subset {subset!r}: use one of {', '.join(SUBSETS)}")
    labels = {im["id"]: im["label"] for im in read_index(data_dir)["images"]}
    copies = read_augment_info(data_dir)["copies"] if subset == "train" else 1
    auged = Path(data_dir) / "auged"
    items = []
    for image_id in load_split(data_dir, split)[subset]:
        if image_id not in labels:
            raise UserError(f"{image_id} of splits.json is not in index.json: rerun "
                            "`python augment.py`")
        for k in range(copies):
            items.append((f"{image_id}_{k}", str(auged / f"{image_id}_{k}.jpg"), labels[image_id]))
    return items


def image_transform(size=256):
    """PIL image -> normalised float tensor [3, size, size] (ImageNet mean/std)."""
    return transforms.Compose([
        transforms.Resize((size, size)),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def open_rgb(path) -> Image.Image:
    """Fully decoded RGB image, EXIF rotation applied; UserError naming a missing/corrupt file."""
    try:
        with Image.open(path) as im:
            im.load()
            return ImageOps.exif_transpose(im).convert("RGB")  # phone photos: upright as shown
    except FileNotFoundError as err:
        raise UserError(f"image {path} not found: check the path or rerun "
                        "`python augment.py`") from err
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise UserError(f"image {path} is unreadable ({err}): replace or remove it") from err


def load_image(path, size=256):
    """(tensor [3, size, size] normalised, PIL RGB original) of one image file."""
    image = open_rgb(path)
    return image_transform(size)(image), image


class FlowerDataset(Dataset):
    """The report's dataset: augmented image file -> (normalised tensor [3, size, size], label)."""

    def __init__(self, items, size=256):
        self.items = list(items)  # [(item_id, path, label)] from split_items
        self.transform = image_transform(size)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        _, path, label = self.items[i]
        return self.transform(open_rgb(path)), label


def make_loader(items, batch_size, shuffle, seed, num_workers, size=256) -> DataLoader:
    """DataLoader whose shuffling comes from its own seeded generator, not the global stream."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(FlowerDataset(items, size), batch_size=batch_size, shuffle=shuffle,
                      num_workers=num_workers, generator=generator,
                      persistent_workers=False)


def get_args_parser():
    parser = core.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data-dir", default="data", help="folder prepared by augment.py")
    parser.add_argument("--split", default=1, type=int, choices=(1, 2, 3), help="which split")
    parser.add_argument("--batch-size", default=8, type=int, help="batch size of the loaded batch")
    parser.add_argument("--size", default=256, type=int, help="input size in pixels")
    parser.add_argument("-s", "--seed", default=0, type=int, help="loader shuffling seed")
    parser.add_argument("--num-workers", default=0, type=int, help="DataLoader worker processes")
    return parser


def main(args):
    for subset in SUBSETS:
        items = split_items(args.data_dir, subset, args.split)
        print(f"split {args.split} {subset}: {len(items)} items")
    loader = make_loader(items, args.batch_size, True, args.seed, args.num_workers, args.size)
    images, labels = next(iter(loader))
    print(f"test batch: images {tuple(images.shape)}, labels {labels.tolist()}")


if __name__ == "__main__":
    run_main(main, get_args_parser())
