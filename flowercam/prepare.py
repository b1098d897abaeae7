"""Prepare data/: get Flower-17 (or your own class folders), check the images, augment them.

    python augment.py --source ../shared/flowers17      # Oxford layout already on disk (holds jpg/)
    python augment.py --source my_photos --data-dir data_mine   # my_photos/<class name>/*.jpg|png
    python augment.py                                    # downloads 17flowers.tgz + datasplits.mat
"""

import argparse
import hashlib
import multiprocessing
import os
import random
import shutil
import tarfile
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from flowercam import core, dataset
from flowercam.core import UserError, atomic_save_json, atomic_write, run_main

BASE_URL = "https://www.robots.ox.ac.uk/~vgg/data/flowers/17/"
SPLITS_MD5 = "4828cddfd0d803c5abbdebcb1e148a1e"
FLOWER17_CLASSES = ["Daffodil", "Snowdrop", "LilyValley", "Bluebell", "Crocus", "Iris",
                    "Tigerlily", "Tulip", "Fritillary", "Sunflower", "Daisy", "ColtsFoot",
                    "Dandelion", "Cowslip", "Buttercup", "Windflower", "Pansy"]
IMAGES_PER_CLASS = 80  # Oxford layout: image_N belongs to class (N - 1) // 80
LAYOUT_HINT = "expected DIR/jpg/image_0001.jpg.. (Oxford layout) or DIR/<class name>/*.jpg|png"


def download(url, dest, md5=None):
    """Stream url to dest with a progress bar; a leftover dest.part is resumed (HTTP Range)."""
    dest, part = Path(dest), Path(str(dest) + ".part")
    done = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            if response.status != 206:  # server ignored the range: start again
                done = 0
            total = int(response.headers.get("Content-Length") or 0) + done
            bar = tqdm(total=total or None, initial=done, unit="B", unit_scale=True, desc=dest.name)
            with open(part, "ab" if done else "wb") as f, bar:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise UserError(f"download of {url} failed ({reason}); rerun to resume, or use "
                        "--source DIR with the images already on disk") from err
    if md5 and hashlib.md5(part.read_bytes()).hexdigest() != md5:
        part.unlink()
        raise UserError(f"{url} downloaded with a wrong md5 checksum; rerun, or use --source DIR")
    os.replace(part, dest)


def fetch_oxford(data_dir, base_url=BASE_URL):
    """data/jpg/ and data/datasplits.mat from the Oxford VGG page, unless already there."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    if not (data_dir / "datasplits.mat").exists():
        download(base_url + "datasplits.mat", data_dir / "datasplits.mat", SPLITS_MD5)
    if (data_dir / "jpg").is_dir():
        return
    tgz = data_dir / "17flowers.tgz"
    if not tgz.exists():
        download(base_url + "17flowers.tgz", tgz)
    tmp = data_dir / ".extract-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with tarfile.open(tgz) as tar:
            tar.extractall(tmp, filter="data")
    except (tarfile.TarError, OSError) as err:
        tgz.unlink()
        raise UserError(f"{tgz} is damaged ({err}); deleted it, rerun to download again") from err
    os.replace(tmp / "jpg", data_dir / "jpg")  # atomic: data/jpg appears complete or not at all
    shutil.rmtree(tmp, ignore_errors=True)


def scan_oxford(jpg_dir, limit=None):
    """Index images of an Oxford-layout jpg/ folder (image_NNNN.jpg; class from the number)."""
    per_class: dict[int, int] = {}
    images = []
    for path in sorted(jpg_dir.glob("image_*.jpg")):
        number = path.stem[len("image_"):]
        if not number.isdigit():
            continue
        label = (int(number) - 1) // IMAGES_PER_CLASS
        if label >= len(FLOWER17_CLASSES):
            raise UserError(f"{path} is beyond Flower-17's 1360 images: remove it, or use "
                            "the class-folder layout")
        per_class[label] = per_class.get(label, 0) + 1
        if limit is None or per_class[label] <= limit:
            images.append({"id": path.stem, "label": label, "source": os.path.abspath(path)})
    return images


def scan_folders(root, limit=None):
    """(class names, images) of an ImageFolder layout: root/<class name>/<image files>."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    images, empty = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir()
                       if p.is_file() and not p.name.startswith("."))[:limit]
        empty += [] if files else [name]
        images += [{"id": p.stem, "label": label, "source": os.path.abspath(p)} for p in files]
    if classes and empty:
        raise UserError(f"class folders without images in {root}: {', '.join(empty)}; add images "
                        "or remove the folders")
    if len({im["id"] for im in images}) != len(images):  # same name in two classes
        for im in images:
            im["id"] = f"{classes[im['label']]}_{im['id']}"
    ids = Counter(im["id"] for im in images)
    if len(ids) != len(images):
        twins = sorted(os.path.relpath(im["source"], root) for im in images if ids[im["id"]] > 1)
        raise UserError(f"image names differ only by extension in {root}: {', '.join(twins)}; "
                        "rename them")
    return classes, images


def scan_source(source, limit=None) -> dict:
    """The index.json dict of a source folder, in either layout."""
    root = Path(source)
    if not root.is_dir():
        raise UserError(f"source folder {root} not found: {LAYOUT_HINT}")
    jpg_dir = root / "jpg" if (root / "jpg").is_dir() else root
    images = scan_oxford(jpg_dir, limit)
    if images:
        index = {"dataset": "flowers17", "classes": FLOWER17_CLASSES}
    else:
        classes, images = scan_folders(root, limit)
        index = {"dataset": Path(os.path.abspath(root)).name, "classes": classes}
    if not images:
        raise UserError(f"no images found in {root}: {LAYOUT_HINT}")
    return {**index, "source": os.path.abspath(root), "images": images}


def check_image(path):
    """None if path decodes fully to RGB, else the error text (runs in worker processes)."""
    try:
        with Image.open(path) as im:
            im.load()
            im.convert("RGB")
    except Exception as err:  # any decoder failure means the file is unusable
        return f"{type(err).__name__}: {err}"
    return None


def copy_rng(seed, image_id, k):
    """Random state of one copy, from seed and image id only: same bytes for any worker count."""
    digest = hashlib.sha256(f"{seed}/{image_id}/{k}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


def augment_copy(image, rng, degrees=20.0, translate=0.2):
    """The report's RandomAffine(degrees=20, translate=(0.2, 0.2)) + RandomHorizontalFlip(p=0.5)."""
    width, height = image.size
    angle = rng.uniform(-degrees, degrees)
    shift = (round(rng.uniform(-translate * width, translate * width)),
             round(rng.uniform(-translate * height, translate * height)))
    out = image.rotate(angle, resample=Image.NEAREST, translate=shift, fillcolor=(0, 0, 0))
    if rng.random() < 0.5:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    return out


def augment_image(task):
    """Write the missing copies <id>_0..<id>_{copies-1}.jpg of one image; returns how many."""
    image_id, source, out_dir, copies, size, seed = task
    paths = [Path(out_dir) / f"{image_id}_{k}.jpg" for k in range(copies)]
    todo = [k for k, p in enumerate(paths) if not p.exists()]
    if todo:
        resized = dataset.open_rgb(source).resize((size, size), Image.BILINEAR)
    for k in todo:
        out = resized if k == 0 else augment_copy(resized, copy_rng(seed, image_id, k))
        atomic_write(paths[k], lambda f, out=out: out.save(f, format="JPEG", quality=95))
    return len(todo)


def run_pool(fn, tasks, num_workers, desc):
    """[fn(task) for task in tasks] in a process pool, in order, with a progress bar."""
    if num_workers <= 1 or len(tasks) <= 1:
        return [fn(t) for t in tqdm(tasks, desc=desc, unit="img")]
    with multiprocessing.Pool(min(num_workers, len(tasks))) as pool:
        results = pool.imap(fn, tasks, chunksize=4)
        return list(tqdm(results, total=len(tasks), desc=desc, unit="img"))


def verify_images(index, num_workers):
    """Decode every image once; one error line naming all unreadable files, before any output."""
    paths = [im["source"] for im in index["images"]]
    errors = run_pool(check_image, paths, num_workers, "check")
    bad = [os.path.relpath(p, index["source"]) for p, e in zip(paths, errors, strict=True) if e]
    if bad:
        raise UserError(f"{len(bad)} unreadable or non-image file(s) in {index['source']}: "
                        f"{', '.join(bad)}; remove or replace them")


def check_data_dir(data_dir, index, settings):
    """Refuse to mix a different source or other size/seed into an existing data folder."""
    old_index, old_aug = data_dir / "index.json", data_dir / "augment.json"
    if old_index.exists() and dataset.read_index(data_dir)["source"] != index["source"]:
        raise UserError(f"{data_dir} already holds {dataset.read_index(data_dir)['source']}: "
                        "use another --data-dir or delete it")
    if old_aug.exists():
        old = dataset.read_json(old_aug)
        if (old["size"], old["seed"]) != (settings["size"], settings["seed"]):
            raise UserError(f"{data_dir / 'auged'} was made with --size {old['size']} --seed "
                            f"{old['seed']}: use those, another --data-dir, or delete {data_dir}")


def find_mat(index, data_dir):
    if index["dataset"] != "flowers17":
        return None
    root = Path(index["source"])
    for folder in (root, root.parent, data_dir):
        if (folder / "datasplits.mat").is_file():
            return folder / "datasplits.mat"
    return None


def make_splits(data_dir, index):
    """splits.json content: from datasplits.mat when present, else generated (fixed seed)."""
    mat = find_mat(index, data_dir)
    if mat:
        return dataset.read_mat_splits(mat, {im["id"] for im in index["images"]})
    return dataset.generate_splits(index["images"])


def save_splits(data_dir, splits):
    """Written once: an existing identical data/splits.json is left untouched."""
    path = data_dir / "splits.json"
    if not path.exists() or dataset.read_json(path) != splits:
        atomic_save_json(path, splits)


def resolve_source(args, data_dir):
    """--source, else the source recorded in data/index.json, else data/ (downloading if needed)."""
    if args.source:
        return args.source
    if (data_dir / "index.json").exists():
        return dataset.read_index(data_dir)["source"]
    fetch_oxford(data_dir, args.base_url)
    return data_dir


def get_args_parser():
    parser = core.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data-dir", default="data", help="output folder (index, splits, auged/)")
    parser.add_argument("--source", default=None,
                        help="images on disk: Oxford layout (DIR/jpg/) or DIR/<class name>/*.jpg; "
                             "default: data/jpg, downloaded when missing")
    parser.add_argument("--copies", default=10, type=int,
                        help="copies per image (copy 0 = resized only)")
    parser.add_argument("--size", default=256, type=int, help="output size in pixels (square)")
    parser.add_argument("-s", "--seed", default=0, type=int, help="augmentation seed")
    parser.add_argument("--num-workers", default=os.cpu_count() or 1, type=int,
                        help="worker processes")
    parser.add_argument("--limit-per-class", default=None, type=int,
                        help="use only the first N images of each class (quick runs)")
    parser.add_argument("--base-url", default=BASE_URL, help="where to download Flower-17 from")
    return parser


def main(args):
    data_dir = Path(args.data_dir)
    if args.copies < 1 or args.size < 32 or (args.limit_per_class or 1) < 1:
        raise UserError("--copies and --limit-per-class must be >= 1, --size >= 32")
    index = scan_source(resolve_source(args, data_dir), args.limit_per_class)
    settings = {"copies": args.copies, "size": args.size, "seed": args.seed}
    check_data_dir(data_dir, index, settings)
    splits = make_splits(data_dir, index)  # before any output: a bad datasplits.mat stops here
    out_dir = data_dir / "auged"
    tasks = [(im["id"], im["source"], str(out_dir), args.copies, args.size, args.seed)
             for im in index["images"]]
    pending = [i for i, t in enumerate(tasks)
               if not all((out_dir / f"{t[0]}_{k}.jpg").exists() for k in range(args.copies))]
    # images whose copies all exist were decoded by an earlier run: check only the others
    verify_images({**index, "images": [index["images"][i] for i in pending]}, args.num_workers)
    atomic_save_json(data_dir / "index.json", index)
    labels = "".join(name + "\n" for name in index["classes"])
    atomic_write(data_dir / "labels.txt", lambda f: f.write(labels), "w")
    atomic_save_json(data_dir / "augment.json", {**settings, "complete": False})
    written = sum(run_pool(augment_image, [tasks[i] for i in pending], args.num_workers, "augment"))
    save_splits(data_dir, splits)
    atomic_save_json(data_dir / "augment.json", {**settings, "complete": True})
    sizes = {k: len(v) for k, v in splits["splits"]["1"].items()}
    print(f"{data_dir}: {len(index['images'])} images x {args.copies} copies in {out_dir} "
          f"({written} new files), {len(index['classes'])} classes, split 1 {sizes} "
          f"({splits['source']})")


if __name__ == "__main__":
    run_main(main, get_args_parser())
