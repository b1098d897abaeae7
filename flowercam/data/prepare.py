"""Prepare data/: index Flower-17 (or your own class folders), check the images, augment them.

    python augment.py --source ../shared/flowers17      # the command; this module is what it runs
    python -c "from flowercam.data import prepare as p; \
print(p.scan_source('my_photos')['classes'])"

Writes data/index.json, labels.txt, augment.json, splits.json (flowercam/data/splits.py) and
auged/<id>_<k>.jpg (copy 0 = resized only, copies 1.. = the report's random affine + flip) and,
when the source has a masks/ folder, masks/<id>.png (flowercam/data/masks.py).
"""

import dataclasses
import hashlib
import multiprocessing
import os
import random
import signal
from collections import Counter
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from flowercam import core
from flowercam.core import UserError, atomic_save_json, atomic_write
from flowercam.data import dataset, download, masks, sources, splits

FLOWER17_CLASSES = ["Daffodil", "Snowdrop", "LilyValley", "Bluebell", "Crocus", "Iris",
                    "Tigerlily", "Tulip", "Fritillary", "Sunflower", "Daisy", "ColtsFoot",
                    "Dandelion", "Cowslip", "Buttercup", "Windflower", "Pansy"]
LAYOUT_HINT = "expected DIR/jpg/image_0001.jpg.. (Oxford layout) or DIR/<class name>/*.jpg|png"


def scan_oxford(jpg_dir, limit=None):
    """Index images of an Oxford-layout jpg/ folder (image_NNNN.jpg; class from the number)."""
    per_class: dict[int, int] = {}
    images = []
    for path in sorted(jpg_dir.glob("image_*.jpg")):
        number = path.stem[len("image_"):]
        if not number.isdigit():
            continue
        label = (int(number) - 1) // masks.FLOWERS17_PER_CLASS
        if label >= len(FLOWER17_CLASSES):
            raise UserError(f"{path} is beyond Flower-17's 1360 images: remove it, or use "
                            "the class-folder layout")
        per_class[label] = per_class.get(label, 0) + 1
        if limit is None or per_class[label] <= limit:
            images.append({"id": path.stem, "label": label, "source": os.path.abspath(path)})
    return images


def check_links(root, entries):
    """UserError naming the broken symbolic links among entries (target missing, or a loop): they
    would be skipped without a word."""
    broken = sorted(os.path.relpath(p, root) for p in entries
                    if p.is_symlink() and not p.exists())
    if broken:
        raise UserError(f"{len(broken)} broken symbolic link(s) in {root} (target missing, or a "
                        f"link loop): {', '.join(broken[:10])}{' ...' if len(broken) > 10 else ''}"
                        "; fix or remove them")


def class_folders(root) -> list[str]:
    """The class folder names of root (root/masks/ holds segmentation masks, never a class)."""
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and p.name != masks.FOLDER)


def scan_folders(root, limit=None):
    """(class names, images) of an ImageFolder layout: root/<class name>/<image files>."""
    classes = class_folders(root)
    entries = {name: [p for p in (root / name).iterdir() if not p.name.startswith(".")]
               for name in classes}
    check_links(root, [p for p in root.iterdir() if not p.name.startswith(".")]
                + [p for found in entries.values() for p in found])
    images, empty = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in entries[name] if p.is_file())[:limit]
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
    if images and jpg_dir == root and class_folders(root):
        raise UserError(f"{root} holds both Oxford-named images ({Path(images[0]['source']).name}"
                        f"{' ...' if len(images) > 1 else ''}) and class folders "
                        f"({', '.join(class_folders(root)[:3])}): move the images into their "
                        f"class folder, or the Oxford images into {root / 'jpg'}/")
    if images:
        index = {"dataset": masks.FLOWERS17_DATASET, "classes": FLOWER17_CLASSES}
    else:
        classes, images = scan_folders(root, limit)
        index = {"dataset": Path(os.path.abspath(root)).name, "classes": classes}
    if not images:
        raise UserError(f"no images found in {root}: {LAYOUT_HINT}")
    return {**index, "source": os.path.abspath(root), "images": images}


def check_image(task):
    """None if the image of task (path, max_pixels, size) decodes fully to RGB, else
    ("large", message) or ("bad", error text) (runs in worker processes)."""
    path, max_pixels, size = task
    try:
        dataset.open_rgb(path, max_pixels, size)
    except UserError as err:
        return ("bad" if "unreadable" in str(err) or "not found" in str(err) else "large",
                str(err))
    except Exception as err:  # any decoder failure means the file is unusable
        return "bad", f"{type(err).__name__}: {err}"
    return None


def is_complete_jpeg(path) -> bool:
    """Cheap completeness check of a file we wrote: JPEG start (FFD8) and end (FFD9) markers.
    A copy truncated by an earlier version (or a full disk) lacks the end marker."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(-2, os.SEEK_END)
            return head == b"\xff\xd8" and f.read(2) == b"\xff\xd9"
    except OSError:  # missing, or shorter than 2 bytes
        return False


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
    image_id, source, out_dir, copies, size, seed, max_pixels = task
    paths = [Path(out_dir) / f"{image_id}_{k}.jpg" for k in range(copies)]
    todo = [k for k, p in enumerate(paths) if not is_complete_jpeg(p)]
    if todo:
        image = dataset.open_rgb(source, max_pixels, size)
        resized = image.resize((size, size), Image.BILINEAR)
    for k in todo:
        out = resized if k == 0 else augment_copy(resized, copy_rng(seed, image_id, k))
        # atomic: a copy appears complete under its name or not at all
        atomic_write(paths[k], lambda f, out=out: out.save(f, format="JPEG", quality=95),
                     durable=False)  # synced once, before augment.json says "complete"
    return len(todo)


def ignore_sigint():
    """Pool worker initializer: Ctrl-C reaches the whole process group; only the main process
    handles it (and stops the pool), so no worker prints a half traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_pool(fn, tasks, num_workers, desc):
    """[fn(task) for task in tasks] in a process pool, in order, with a progress bar."""
    if num_workers <= 1 or len(tasks) <= 1:
        return [fn(t) for t in tqdm(tasks, desc=desc, unit="img")]
    with multiprocessing.Pool(min(num_workers, len(tasks)), initializer=ignore_sigint) as pool:
        results = pool.imap(fn, tasks, chunksize=4)
        return list(tqdm(results, total=len(tasks), desc=desc, unit="img"))


def verify_images(index, num_workers, max_pixels=dataset.MAX_PIXELS, size=None):
    """Decode every image once; one error line naming all unreadable (or too large) files,
    before any output."""
    paths = [im["source"] for im in index["images"]]
    errors = run_pool(check_image, [(p, max_pixels, size) for p in paths], num_workers, "check")
    large = [text for e in errors if e and e[0] == "large" for text in e[1:]]
    if large:
        raise UserError(large[0] if len(large) == 1 else f"{len(large)} images above "
                        f"--max-pixels {max_pixels} ({large[0]}, ...): downscale them or pass "
                        "a larger --max-pixels")
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


def resolve_source(source, data_dir, base_url=download.BASE_URL):
    """source, else the source recorded in data/index.json, else data/ (downloading if needed)."""
    if source:
        return source
    if (Path(data_dir) / "index.json").exists():
        return dataset.read_index(data_dir)["source"]
    download.fetch_oxford(data_dir, base_url)
    return data_dir


@dataclasses.dataclass(frozen=True)
class AugmentSettings:
    """What the augmented files depend on (data/augment.json without "complete")."""

    copies: int = 10  # copies per image; copy 0 = resized only
    size: int = 256  # output size in pixels (square)
    seed: int = 0


def prepare(data_dir, settings, source=None, num_workers=1, limit_per_class=None,
            base_url=download.BASE_URL, max_pixels=dataset.MAX_PIXELS,
            mask_values=None) -> dict:
    """Index, check and augment the images of source into data_dir (resuming an earlier run).

    mask_values: masks.MaskValues the user declared for SOURCE/masks (recorded in index.json;
    None: those declared by an earlier run, else Flower-17's for Flower-17, else found, see
    masks.copy_masks).
    -> {"index", "splits", "written" (new files), "out_dir", "redone" (ids whose source changed
    since the last run: their copies are written anew, data/sources.py), "remasked" (ids whose
    source mask changed: copied again)}; data/augment.json says "complete": true only once every
    file is written."""
    data_dir = Path(data_dir)
    index = scan_source(resolve_source(source, data_dir, base_url), limit_per_class)
    info = dataclasses.asdict(settings)
    check_data_dir(data_dir, index, info)
    split_table = splits.make_splits(data_dir, index)  # before any output: bad .mat stops here
    out_dir = data_dir / "auged"
    old = sources.read_record(data_dir)
    stamps = sources.current(index["images"], old)
    redone = set(sources.changed(old, stamps))
    tasks = [(im["id"], im["source"], str(out_dir), settings.copies, settings.size,
              settings.seed, max_pixels) for im in index["images"]]
    pending = [i for i, t in enumerate(tasks) if t[0] in redone or not all(
        is_complete_jpeg(out_dir / f"{t[0]}_{k}.jpg") for k in range(settings.copies))]
    # images whose copies are all complete were decoded by an earlier run: check only the others
    verify_images({**index, "images": [index["images"][i] for i in pending]}, num_workers,
                  max_pixels, settings.size)
    mask_stamps, remasked = track_masks(data_dir, index)
    record = masks.copy_masks(index["source"], data_dir, [im["id"] for im in index["images"]],
                              settings.size, mask_values or declared_before(data_dir),
                              masks.is_flowers17_index(index), remasked)
    index = write_index(data_dir, index, info, record)
    drop_copies(out_dir, sorted(redone), settings.copies)  # after "complete": false
    try:
        written = sum(run_pool(augment_image, [tasks[i] for i in pending], num_workers,
                               "augment"))
    finally:  # workers stopped mid-write (an error elsewhere, Ctrl-C) leave temporaries
        core.remove_temporaries(out_dir)
    splits.save_splits(data_dir, split_table)
    os.sync()  # every copy on disk before "complete" says so (one sync, not one per file)
    # after the copies: an interruption redoes them again
    sources.save_record(data_dir, stamps, mask_stamps)
    atomic_save_json(data_dir / "augment.json", {**info, "complete": True})
    return {"index": index, "splits": split_table, "written": written, "out_dir": out_dir,
            "redone": sorted(redone), "remasked": remasked}


def track_masks(data_dir, index) -> tuple[dict, list[str]]:
    """(the sources.json record of the source's masks now, ids whose mask changed since the last
    run); the copies of masks gone from the source are deleted (they would still be read)."""
    found = masks.source_masks(index["source"], [im["id"] for im in index["images"]])
    old = sources.read_record(data_dir, "masks")
    now = sources.current([{"id": i, "source": str(p)} for i, p in found.items()], old)
    for image_id in sources.gone(old, now):
        (Path(data_dir) / masks.FOLDER / f"{image_id}.png").unlink(missing_ok=True)
    return now, sources.changed(old, now)


def declared_before(data_dir):
    """The mask values an earlier run was given (--mask-values/--ignore-values), so that a rerun
    without them keeps them; None when there are none."""
    path = Path(data_dir) / "index.json"
    if not path.exists():
        return None
    record = dataset.read_index(data_dir).get("masks")
    values = record.get("values") if isinstance(record, dict) else None
    if isinstance(values, dict) and values.get("from") == "declared":
        return masks.MaskValues.from_record(values, path)
    return None


def write_index(data_dir, index, info, record) -> dict:
    """index.json (with the masks' record, when there are masks), labels.txt and augment.json
    ("complete": false) -> the index."""
    index = {**index, "masks": record} if record else index
    atomic_save_json(data_dir / "index.json", index)
    labels = "".join(name + "\n" for name in index["classes"])
    atomic_write(data_dir / "labels.txt", lambda f: f.write(labels), "w")
    atomic_save_json(data_dir / "augment.json", {**info, "complete": False})
    return index


def drop_copies(out_dir, image_ids, copies):
    """Delete the copies of these images (their source changed): they are written again."""
    for image_id in image_ids:
        for k in range(copies):
            (Path(out_dir) / f"{image_id}_{k}.jpg").unlink(missing_ok=True)
