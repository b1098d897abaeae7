"""Reading a data folder augment.py wrote: index, split items, the report's dataset and loaders.

    python dataloader.py                              # split sizes of data/ and one loaded batch
    python -c "from flowercam.data import dataset; print(len(dataset.split_items('data', 'train')))"
"""

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from flowercam.core import UserError
from flowercam.data import splits
from flowercam.model.vgg import IMAGENET_MEAN, IMAGENET_STD

SUBSETS, SPLITS = splits.SUBSETS, splits.SPLITS  # the names every script uses
MAX_PIXELS = 400_000_000  # default --max-pixels: e.g. a 20000 x 20000 photo (1.2 GB as RGB)
DRAFT_ABOVE_PIXELS = 89_478_485  # Pillow's default limit: below it nothing changes


def read_json(path):
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found: the data folder is not prepared", topic="data")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{path} is unreadable ({err}): prepare the data folder again",
                        topic="data") from err


def read_index(data_dir) -> dict:
    """data/index.json: {"dataset", "source", "classes", "images": [{"id", "label", "source"}]}."""
    return read_json(Path(data_dir) / "index.json")


def class_names(data_dir) -> list[str]:
    return list(read_index(data_dir)["classes"])


def read_augment_info(data_dir) -> dict:
    """data/augment.json {"copies", "size", "seed", "complete"}; UserError while unfinished."""
    info = read_json(Path(data_dir) / "augment.json")
    if not info.get("complete", False):
        raise UserError(f"{Path(data_dir) / 'auged'} is incomplete: finish preparing the data "
                        "folder", topic="data")
    return info


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
            raise UserError(f"{image_id} of splits.json is not in index.json: prepare the "
                            "data folder again", topic="data")
        for k in range(copies):
            items.append((f"{image_id}_{k}", str(auged / f"{image_id}_{k}.jpg"), labels[image_id]))
    return items


def sample_items(items, n, seed, in_order=False):
    """n items drawn without replacement by numpy Generator(seed) (all when n is None or larger),
    in the order drawn or, in_order, in the list's order. The one seeded image sample."""
    n = len(items) if n is None else n
    if n < 1:
        raise UserError(f"cannot sample {n} images: ask for at least one")
    picked = np.random.default_rng(seed).choice(len(items), size=min(n, len(items)),
                                                replace=False)
    return [items[i] for i in (sorted(picked) if in_order else picked)]


DEFAULT_SIZE = 256  # augment.py's image size; a data folder's own is in its augment.json


def image_transform(size=256):
    """PIL image -> normalised float tensor [3, size, size] (ImageNet mean/std)."""
    return transforms.Compose([
        transforms.Resize((size, size)),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def open_rgb(path, max_pixels=MAX_PIXELS, size=None) -> Image.Image:
    """Fully decoded RGB image, EXIF rotation applied; UserError naming a missing, corrupt or
    too large (width x height > max_pixels) file. Above Pillow's own limit (DRAFT_ABOVE_PIXELS)
    a JPEG is decoded at the smallest 1/2, 1/4 or 1/8 scale still >= size (when size is given);
    smaller images decode exactly as always."""
    try:
        im = _open_unbounded(path)
        with im:
            width, height = im.size
            if width * height > max_pixels:
                raise UserError(f"image {path} is {width}x{height} = {width * height / 1e6:.0f} MP,"
                                f" above --max-pixels {max_pixels}: downscale it or pass a larger "
                                "--max-pixels") from None
            if size and width * height > DRAFT_ABOVE_PIXELS and im.format == "JPEG":
                im.draft("RGB", (size, size))
            im.load()
            # phone photos: upright as shown
            return eight_bits(ImageOps.exif_transpose(im)).convert("RGB")
    except FileNotFoundError as err:
        raise UserError(f"image {path} not found: check the path (an augmented copy: "
                        "prepare the data folder again)", topic="data") from err
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise UserError(f"image {path} is unreadable ({err}): replace or remove it") from err


HIGH_BIT_DEPTH = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # one grey channel, > 8 bits


def eight_bits(image) -> Image.Image:
    """A grey image of more than 8 bits (16-bit PNG/TIFF, 32-bit int or float) scaled to mode L:
    Pillow's RGB conversion clips such values at 255 (a 16-bit photo turns white). 16-bit and
    integer values in 0..65535 are divided by 257 (65535 -> 255); floats in 0..1 are multiplied
    by 255; any other range is stretched from its minimum to its maximum. Other modes: as is."""
    if image.mode not in HIGH_BIT_DEPTH:
        return image
    values = np.asarray(image, dtype=np.float64)
    finite = values[np.isfinite(values)]
    low, high = (finite.min(), finite.max()) if finite.size else (0.0, 0.0)
    if image.mode == "F" and low >= 0 and high <= 1:
        scaled = values * 255
    elif image.mode != "F" and low >= 0 and high <= 65535:
        scaled = values / 257
    else:
        scaled = (values - low) * (255 / (high - low)) if high > low else values * 0
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


def _open_unbounded(path) -> Image.Image:
    """Image.open without Pillow's decompression-bomb check: open_rgb applies max_pixels
    instead (header only; nothing is decoded here)."""
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        return Image.open(path)
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def load_image(path, size=256, max_pixels=MAX_PIXELS):
    """(tensor [3, size, size] normalised, PIL RGB original) of one image file."""
    image = open_rgb(path, max_pixels, size)
    return image_transform(size)(image), image


class FlowerDataset(Dataset):
    """The report's dataset: augmented image file -> (normalised tensor [3, size, size], label)."""

    def __init__(self, items, size=256, max_pixels=MAX_PIXELS):
        self.items = list(items)  # [(item_id, path, label)] from split_items
        self.transform = image_transform(size)
        self.max_pixels, self.size = max_pixels, size

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        _, path, label = self.items[i]
        return self.transform(open_rgb(path, self.max_pixels, self.size)), label


def make_loader(items, batch_size, shuffle, seed, num_workers, size=256,
                max_pixels=MAX_PIXELS) -> DataLoader:
    """DataLoader whose shuffling comes from its own seeded generator, not the global stream."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(FlowerDataset(items, size, max_pixels), batch_size=batch_size,
                      shuffle=shuffle, num_workers=num_workers, generator=generator,
                      persistent_workers=False)
