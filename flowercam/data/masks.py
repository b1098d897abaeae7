"""Segmentation masks and what their values mean, in one place: SOURCE/masks/<image id>.png
(e.g. Flower-17's, in ../shared/flowers17/masks) copied into DATA_DIR/masks/ at the data's size,
with what their values mean recorded in DATA_DIR/index.json ("masks": {"values": ...}); every
reader (evaluate.py --cam-metrics and --sanity, few-shot rows, inference.py's outlines) takes the
meaning from here (docs/masks.md).

    python augment.py --source ../shared/flowers17     # copies its masks/: Flower-17's values
    python augment.py --source my_photos --mask-values 1 --ignore-values 255   # your own masks
    python -c "from flowercam.data import masks; print(masks.resolve_masks('data'))"

Masks are label images (one value per pixel: a grey or palette PNG). They are resized like copy 0 of
the images (squashed to size x size) with nearest neighbour, so the labels stay labels. A value is
foreground, ignored (left out of localization) or background. Where nobody declared the values, a
folder must hold 0 and at most one other value (background, foreground); more are refused with the
values found, never guessed (Flower-17's raw labels 1-4 would all count as flower).
"""

import dataclasses
import re
from pathlib import Path

import numpy as np
from PIL import Image

from flowercam.core import UserError, atomic_write
from flowercam.data import dataset

FOLDER = "masks"  # in the source and in the data folder

KNOWN_VALUES_FROM = ("flowers17", "declared", "found")  # how a record's values were settled


@dataclasses.dataclass(frozen=True)
class MaskValues:
    """What a folder's mask values mean. foreground None: any nonzero value (a folder of two
    values, 0 and one other); background None: every value neither foreground nor ignored.
    origin (index.json "from"): "flowers17" (Flower-17's, by its README), "declared"
    (--mask-values/--ignore-values), "found" (the one nonzero value of a folder of two values)."""

    foreground: tuple[int, ...] | None
    ignore: tuple[int, ...] = ()
    background: tuple[int, ...] | None = None
    origin: str = dataclasses.field(default="declared", compare=False)

    def __post_init__(self):
        check_declared(self.foreground, self.ignore, self.background)

    def as_record(self) -> dict:
        """The index.json form (DATA_DIR/index.json "masks": {"values": ...})."""
        return {"foreground": _listed(self.foreground), "ignore": list(self.ignore),
                "background": _listed(self.background), "from": self.origin}

    @classmethod
    def from_record(cls, record, where) -> "MaskValues":
        """The values of an index.json record; UserError naming the file and the field when it
        is not what augment.py writes (a hand-edited or damaged file)."""
        if not isinstance(record, dict):
            raise UserError(f"{where}: masks.values is {record!r}, not a record of values: run "
                            "augment.py again")

        def values(name, optional):
            value = record.get(name)
            if value is None and optional:
                return None
            if not (isinstance(value, list) and all(type(v) is int for v in value)):
                raise UserError(f"{where}: masks.values.{name} is {value!r}, not a list of "
                                "whole numbers: run augment.py again")
            return tuple(value)
        origin = record.get("from")
        if origin not in KNOWN_VALUES_FROM:
            raise UserError(f"{where}: masks.values.from is {origin!r}, not one of "
                            f"{', '.join(KNOWN_VALUES_FROM)}: run augment.py again")
        try:
            return cls(values("foreground", True), values("ignore", False),
                       values("background", True), origin)
        except UserError as err:
            raise UserError(f"{where}: {err}") from None


def _listed(values):
    return None if values is None else list(values)


def check_declared(foreground, ignore=(), background=None):
    """UserError when declared values leave no foreground: an empty foreground, a value both
    foreground and ignored (or background), or a negative value (a mask holds none)."""
    named = {"foreground": foreground or (), "ignored": ignore or (),
             "background": background or ()}
    negative = sorted(v for group in named.values() for v in group if v < 0)
    if negative:
        raise UserError(f"mask value {negative[0]} is negative: label masks hold values >= 0")
    if foreground is not None and not foreground:
        raise UserError("no foreground mask value declared: name at least one (--mask-values)")
    names = list(named)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = sorted(set(named[a]) & set(named[b]))
            if shared:
                raise UserError(f"mask value {shared[0]} is declared both {a} and {b} "
                                f"({a} {list(named[a])}, {b} {list(named[b])}): give each value "
                                "one meaning")


def declared_values(mask_values=None, ignore_values=None) -> MaskValues | None:
    """The values a user declared (--mask-values, --ignore-values), or None when neither."""
    if mask_values is None and ignore_values is None:
        return None
    return MaskValues(None if mask_values is None else tuple(mask_values),
                      tuple(ignore_values or ()), None, "declared")


# Flower-17 masks (../shared/flowers17/masks/README.txt): 1 flower; 0 unlabelled, 5 stray;
# 2-4 leaves, background, sky
FLOWERS17 = MaskValues((1,), (0, 5), (2, 3, 4), "flowers17")
FLOWERS17_DATASET = "flowers17"  # index.json "dataset" of an Oxford-layout source
FLOWERS17_PER_CLASS = 80  # Oxford layout: image_N belongs to class (N - 1) // 80


def source_masks(source_root, ids) -> dict:
    """{image id: mask path} of SOURCE/masks/<id>.png for the ids that have one; UserError
    naming the masks that are broken symbolic links (they would be skipped without a word)."""
    folder = Path(source_root) / FOLDER
    if not folder.is_dir():
        return {}
    paths = {i: folder / f"{i}.png" for i in ids}
    broken = sorted(p.name for p in paths.values() if p.is_symlink() and not p.exists())
    if broken:
        raise UserError(f"{len(broken)} mask(s) in {folder} are broken symbolic links (target "
                        f"missing, or a link loop): {', '.join(broken[:10])}"
                        f"{' ...' if len(broken) > 10 else ''}; fix or remove them")
    return {i: p for i, p in paths.items() if p.is_file()}


# the lossless formats a label file may be in, by its name (a JPEG's values are not labels)
LOSSLESS = {".png": "PNG", ".bmp": "BMP", ".gif": "GIF", ".tif": "TIFF", ".tiff": "TIFF"}


def find_mask(folder, *names) -> Path | None:
    """FOLDER/<stem>.png of the first name (an image id or path) that has one, trying each name's
    stem and then the original image id of an augmented copy (image_0001_3 -> image_0001)."""
    stems = [Path(str(n)).stem for n in names]
    stems += [s.rsplit("_", 1)[0] for s in stems if re.fullmatch(r".+_\d+", s)]
    for stem in dict.fromkeys(stems):
        candidate = Path(folder) / f"{stem}.png"
        if candidate.is_file():
            return candidate
    return None


def open_labels(path) -> Image.Image:
    """A mask as a label image (mode L, P or 16-bit I); a grey image saved as RGB(A) is taken as
    grey. UserError naming the file when it is unreadable, lossy (a JPEG whatever its name) or
    colour: every reader of masks goes through here, so they all agree."""
    try:
        with Image.open(path) as im:
            im.load()
            mask, kind = im.copy(), im.format
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise UserError(f"mask {path} is unreadable ({err}): replace or remove it") from None
    expected = LOSSLESS.get(Path(path).suffix.lower())
    if kind != expected:
        raise UserError(f"mask {path} holds {kind or 'unknown'} data, not "
                        f"{expected or 'a lossless image'}: save labels losslessly (PNG)")
    if mask.mode in ("L", "P", "I", "I;16"):
        return mask
    values = np.asarray(mask.convert("RGB"))
    if not (values == values[..., :1]).all():
        raise UserError(f"mask {path} is a colour image: save one label value per pixel "
                        "(grey or palette PNG)")
    return Image.fromarray(values[..., 0])


def read_labels(path, size=None) -> np.ndarray:
    """Label values [h, w] int64 of a mask (open_labels' rules); size: resize_labels to it."""
    labels = np.array(open_labels(path)).astype(np.int64)
    return labels if size is None else resize_labels(labels, size)


def resize_labels(labels, size) -> np.ndarray:
    """[h, w] int64 -> [size, size] by nearest neighbour (PIL's, as augment.py resizes masks)."""
    if labels.shape == (size, size):
        return labels
    image = Image.fromarray(labels.astype(np.int32), mode="I")
    return np.array(image.resize((size, size), Image.NEAREST)).astype(np.int64)


def check_values(labels, allowed, path):
    """UserError when a label is outside `allowed` (the declared foreground, ignore and background
    values): e.g. a mask resaved lossily, or one of another dataset."""
    if allowed is None:
        return
    stray = np.setdiff1d(np.unique(labels), np.asarray(sorted(allowed)))
    if len(stray):
        shown = ", ".join(map(str, stray[:5])) + (" ..." if len(stray) > 5 else "")
        raise UserError(f"mask {path} has values {shown} outside the declared "
                        f"{sorted(allowed)}: fix the mask or declare its values")


def copy_masks(source_root, data_dir, ids, size, declared=None, flowers17=False,
               redo=()) -> dict | None:
    """Write DATA_DIR/masks/<id>.png (size x size, nearest) for every id with a source mask;
    -> the index.json record {"dir", "count", "source", "values"}, or None when the source has no
    masks/. values (what the labels mean, MaskValues.as_record): `declared` (the user's), else
    Flower-17's for a Flower-17 source, else the one nonzero value of a folder of two values
    (UserError listing the values found when there are more: their meaning must be declared).
    A rerun rewrites only the masks of `redo` (their source changed) and those missing or of
    another size."""
    folder = Path(source_root) / FOLDER
    if not folder.is_dir():
        if declared is not None:
            raise UserError(f"mask values were given but {source_root} has no {FOLDER}/ folder: "
                            "drop them, or add the masks")
        return None
    found = source_masks(source_root, ids)
    if not found:
        raise UserError(f"{folder} has no <image id>.png matching any image (e.g. "
                        f"{ids[0] if ids else 'image_0001'}.png): fix the names or remove it")
    out, seen = Path(data_dir) / FOLDER, set()
    for image_id, path in found.items():
        target = out / f"{image_id}.png"
        if image_id not in redo and _has_size(target, size):
            seen |= label_set(read_labels(target))
            continue
        mask = open_labels(path).resize((size, size), Image.NEAREST)
        seen |= label_set(np.asarray(mask))
        atomic_write(target, lambda f, m=mask: m.save(f, format="PNG"))
    values = meaning(seen, folder, declared, flowers17)
    return {"dir": FOLDER, "count": len(found), "source": str(folder),
            "values": values.as_record()}


def label_set(labels) -> set[int]:
    """The distinct values of a label array."""
    labels = np.asarray(labels)
    if labels.dtype == np.uint8:  # grey and palette masks: a histogram is ~10x np.unique
        return set(np.flatnonzero(np.bincount(labels.ravel(), minlength=256)).tolist())
    return set(np.unique(labels).tolist())


def shown(values, most=8) -> str:
    values = sorted(values)
    return ", ".join(map(str, values[:most])) + (" ..." if len(values) > most else "")


def meaning(seen, folder, declared=None, flowers17=False) -> MaskValues:
    """What the values `seen` in the masks of folder mean: declared (its foreground must occur),
    Flower-17's, or that of a folder of two values (0 and one other: background, foreground);
    UserError listing the values when nothing says what they mean."""
    if declared is not None:
        ignored = seen - set(declared.ignore)
        if declared.foreground is not None and not seen & set(declared.foreground):
            raise UserError(f"no mask in {folder} holds the foreground value(s) "
                            f"{shown(declared.foreground)} (values found: {shown(seen)}): "
                            "check --mask-values")
        if declared.foreground is None:
            two_values(ignored, folder)
        return declared
    if flowers17:
        stray = seen - {*FLOWERS17.foreground, *FLOWERS17.ignore, *FLOWERS17.background}
        if stray:
            raise UserError(f"the masks in {folder} hold the values {shown(seen)}, not only "
                            "Flower-17's 0-5: declare what they mean (--mask-values V, "
                            "--ignore-values W)")
        return FLOWERS17
    two_values(seen, folder)
    nonzero = sorted(seen - {0})
    if not nonzero:
        return MaskValues(None, (), None, "found")
    return MaskValues((nonzero[0],), (), (0,), "found")


def two_values(seen, folder):
    """UserError unless the values (those not ignored) are 0 and at most one other: then 0 is
    background and the other foreground; with more, which is which must be declared."""
    if len(set(seen) - {0}) > 1:
        raise UserError(f"the masks in {folder} hold the values {shown(seen)} and nothing says "
                        "what they mean: declare the foreground (--mask-values V) and the values "
                        "to leave out (--ignore-values W); any other value is background")


def folder_values(folder) -> set[int]:
    """The distinct values of every <name>.png mask in folder (open_labels' rules)."""
    seen = set()
    for path in sorted(Path(folder).glob("*.png")):
        seen |= label_set(np.asarray(open_labels(path)))
    return seen


def is_flowers17_index(index) -> bool:
    """Whether an index.json was made from Flower-17 in the Oxford layout (image_N in class
    (N - 1) // 80): the only source whose masks mean Flower-17's values without a record."""
    if index.get("dataset") != FLOWERS17_DATASET:
        return False
    for image in index.get("images", []):
        number = str(image.get("id", ""))[len("image_"):]
        if not (str(image.get("id", "")).startswith("image_") and number.isdigit()
                and (int(number) - 1) // FLOWERS17_PER_CLASS == image.get("label")):
            return False
    return True


def is_flowers17_source(root) -> bool:
    """Whether root is a Flower-17 source in the Oxford layout (root/jpg/image_N.jpg)."""
    return any(p.stem[len("image_"):].isdigit() for p in Path(root).glob("jpg/image_*.jpg"))


def recorded_values(index, where) -> MaskValues | None:
    """What a data folder's masks mean: index.json's record (augment.py writes it with the
    masks), else Flower-17's for a folder made from Flower-17 before records existed, else None."""
    record = index.get("masks") or {}
    if isinstance(record, dict) and "values" in record:
        return MaskValues.from_record(record["values"], where)
    return FLOWERS17 if is_flowers17_index(index) else None


def folder_meaning(folder) -> MaskValues | None:
    """What the masks in folder mean where that is written: the data folder's index.json when
    folder is its masks/ (augment.py), Flower-17's for the masks/ of a Flower-17 source; None
    when nothing says."""
    folder = Path(folder).resolve()
    index_path = folder.parent / "index.json"
    if index_path.is_file():
        index = dataset.read_json(index_path)
        record = index.get("masks") if isinstance(index.get("masks"), dict) else {}
        if folder.name == record.get("dir", FOLDER):
            return recorded_values(index, index_path)
    if folder.name == FOLDER and is_flowers17_source(folder.parent):
        return FLOWERS17
    return None


def _has_size(path, size) -> bool:
    try:
        with Image.open(path) as im:
            return im.size == (size, size)
    except (OSError, ValueError):
        return False


def mask_arrays(labels, mask_values=None, ignore_values=()):
    """Label image [..., H, W] -> (fg, valid) bool; fg = listed values (None: any nonzero)."""
    labels = np.asarray(labels)
    valid = ~np.isin(labels, list(ignore_values))
    fg = labels != 0 if mask_values is None else np.isin(labels, list(mask_values))
    return fg & valid, valid


@dataclasses.dataclass(frozen=True)
class MaskSpec:
    """Where the masks are and what their values mean; exact_size: masks must already be that
    size (the data folder's); background_values None: any value that is not foreground or ignored
    is background, else a mask with another value is refused (a lossy or foreign mask)."""

    folder: str
    mask_values: tuple[int, ...] | None  # foreground values; None: any nonzero
    ignore_values: tuple[int, ...]
    source: str  # "data folder" or "masks folder"
    exact_size: int | None = None
    background_values: tuple[int, ...] | None = None

    def allowed_values(self):
        """Every declared value, or None when any value is allowed."""
        if self.background_values is None or self.mask_values is None:
            return None
        return {*self.mask_values, *self.ignore_values, *self.background_values}

    def recorded(self) -> dict:
        """How the masks were read, as cam_metrics.json records it (--tau-from compares it)."""
        return {"masks_dir": self.folder, "mask_values": self.mask_values,
                "ignore_values": list(self.ignore_values)}


def resolve_masks(data_dir, masks_dir=None, mask_values=None, ignore_values=None, size=None):
    """-> MaskSpec or None: masks_dir (resized nearest), else DATA_DIR/masks (augment.py
    --source wrote them at `size` px), else no masks. What the values mean: what the folder's
    record says (folder_meaning; index.json for a data folder), each of mask_values and
    ignore_values replacing the recorded one when given; a folder with no record takes the
    values given, else must hold 0 and one other value (UserError listing them otherwise). A
    data folder without a record that was not made from Flower-17 needs mask_values."""
    declared_values(mask_values, ignore_values)  # one meaning per value, some foreground
    if masks_dir:
        if not Path(masks_dir).is_dir():
            raise UserError(f"masks folder {masks_dir} is not a folder: name the masks' folder")
        return _spec(masks_dir, folder_meaning(masks_dir), mask_values, ignore_values,
                     "masks folder", None)
    index = dataset.read_index(data_dir)
    record = index.get("masks") if isinstance(index.get("masks"), dict) else {}
    folder = Path(data_dir) / record.get("dir", FOLDER)
    if not folder.is_dir():
        if mask_values is not None or ignore_values is not None:
            raise UserError(f"mask values were given but there are no masks ({folder} does not "
                            "exist)", topic="masks")
        return None
    recorded = recorded_values(index, Path(data_dir) / "index.json")
    if recorded is None and mask_values is None:
        raise UserError(f"{Path(data_dir) / 'index.json'} does not say what the values of "
                        f"{folder} mean (an older augment.py wrote it) and its source is not "
                        f"Flower-17: run augment.py --data-dir {data_dir} --mask-values V "
                        "[--ignore-values W] again, or pass --mask-values")
    return _spec(folder, recorded, mask_values, ignore_values, "data folder", size)


def _spec(folder, recorded, mask_values, ignore_values, source, size) -> MaskSpec:
    """The MaskSpec of folder: recorded values (or None), each replaced by the one given."""
    given = mask_values is not None or ignore_values is not None
    if recorded is None:
        recorded = MaskValues(None, (), None, "found")
        if mask_values is None:  # nobody says: 0 and one other value only
            two_values(folder_values(folder) - set(ignore_values or ()), folder)
    values = MaskValues(recorded.foreground if mask_values is None else tuple(mask_values),
                        recorded.ignore if ignore_values is None else tuple(ignore_values),
                        None if given else recorded.background)
    return MaskSpec(str(folder), values.foreground, values.ignore, source, size,
                    values.background)


def batch_masks(batch_items, spec: MaskSpec | None, size):
    """-> (fg [B,H,W], valid [B,H,W], has_mask [B] bool); images without a mask: all False."""
    fg = np.zeros((len(batch_items), size, size), bool)
    valid, has = fg.copy(), np.zeros(len(batch_items), bool)
    for i, (item_id, path, _) in enumerate(batch_items):
        found = find_mask(spec.folder, item_id, path) if spec else None
        if found is not None:
            labels = read_labels(found)
            if spec.exact_size is not None and labels.shape != (size, size):
                raise UserError(f"mask {found} is {labels.shape[1]}x{labels.shape[0]} px but the "
                                f"images are {size}x{size}: prepare the data folder again",
                                topic="data")
            check_values(labels, spec.allowed_values(), found)
            labels = resize_labels(labels, size)
            fg[i], valid[i] = mask_arrays(labels, spec.mask_values, spec.ignore_values)
            has[i] = True
    return fg, valid, has
