"""The one builder of synthetic test data: source folders (both layouts augment.py reads), a
prepared data folder in the contract's layout, and seeded random backbone weights."""

import builtins
import errno
import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

import main as main_cli
from flowercam import core, flags
from flowercam.backbones import vgg16
from flowercam.model import heads

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("Red", "Green", "Blue")
# class colours: the dominant channel of classes 0..2 is red, green, blue
COLOURS = [(220, 40, 40), (40, 180, 60), (50, 70, 220), (230, 200, 40), (160, 60, 200)]


def synthetic_image(label, i, size=(40, 30), rng=None):
    """Class-distinct image: class colour background, class shape (rectangle/ellipse/triangle)
    at a position set by i; rng given: plus uniform noise (learnable from random VGG features)."""
    width, height = size
    image = Image.new("RGB", size, COLOURS[label % len(COLOURS)])
    draw = ImageDraw.Draw(image)
    x, y = 2 + (i * 3) % (width // 2), 2 + (i * 2) % (height // 2)
    box = (x, y, x + width // 3, y + height // 3)
    shape = label % 3
    if shape == 0:
        draw.rectangle(box, fill=(255, 255, 255))
    elif shape == 1:
        draw.ellipse(box, fill=(0, 0, 0))
    else:
        draw.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) // 2, box[1])],
                     fill=(128, 128, 128))
    if rng is None:
        return image
    noise = rng.integers(-40, 41, size=(height, width, 3))
    pixels = (np.asarray(image, dtype=np.int64) + noise).clip(0, 255)
    return Image.fromarray(pixels.astype(np.uint8))


def make_folder_dataset(root, classes=("cat", "dog", "fox"), per_class=6, size=(40, 30)):
    """root/<class name>/<class>_NN.jpg|png (ImageFolder layout); returns root."""
    root = Path(root)
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            ext = "png" if i % 3 == 2 else "jpg"  # both formats in every class
            synthetic_image(label, i, size).save(root / name / f"{name}_{i:02d}.{ext}")
    return root


def make_oxford_dataset(root, classes=3, per_class=6, size=(40, 30)):
    """root/jpg/image_NNNN.jpg with Flower-17 numbering (class = (N - 1) // 80); returns root."""
    jpg = Path(root) / "jpg"
    jpg.mkdir(parents=True, exist_ok=True)
    for label in range(classes):
        for i in range(per_class):
            number = label * 80 + i + 1
            synthetic_image(label, i, size).save(jpg / f"image_{number:04d}.jpg")
    (jpg / "files.txt").write_text("".join(p.name + "\n" for p in sorted(jpg.glob("*.jpg"))))
    return Path(root)


def make_dataset(root, per_class=4, copies=2, size=64, seed=0, classes=CLASSES) -> str:
    """A prepared data folder without running augment.py (fast; ids image_NNNN numbered per
    class): index.json, labels.txt, augment.json, splits.json (same in 1..3), auged/; -> root."""
    root = Path(root)
    (root / "auged").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images, parts = [], {"train": [], "valid": [], "test": []}
    n_train = max(1, per_class // 2)
    n_valid = max(1, per_class // 4)
    for label in range(len(classes)):
        for j in range(per_class):
            image_id = f"image_{label * per_class + j + 1:04d}"
            images.append({"id": image_id, "label": label, "source": f"jpg/{image_id}.jpg"})
            subset = "train" if j < n_train else "valid" if j < n_train + n_valid else "test"
            parts[subset].append(image_id)
            for k in range(copies):
                image = synthetic_image(label, j * copies + k, (size, size), rng)
                image.save(root / "auged" / f"{image_id}_{k}.jpg", quality=95)
    index = {"dataset": "synthetic", "source": "tests", "classes": list(classes), "images": images}
    (root / "index.json").write_text(json.dumps(index))
    (root / "labels.txt").write_text("\n".join(classes) + "\n")
    augment = {"copies": copies, "size": size, "seed": seed, "complete": True}
    (root / "augment.json").write_text(json.dumps(augment))
    splits = {"source": "generated", "seed": 0, "splits": {s: parts for s in ("1", "2", "3")}}
    (root / "splits.json").write_text(json.dumps(splits))
    return str(root)


def trained_run(root, epochs, copies, *flags) -> tuple[str, str, Path]:
    """A tiny CAM run of main.py on a seeded synthetic data folder under root (4 images per
    class, 32 px, random backbone weights) -> (data dir, weights, run dir)."""
    data_dir = make_dataset(root / "data", per_class=4, copies=copies, size=32)
    weights = random_weights(root / "w.pth")
    code, run_dir = run_cli(main_cli, ["--data-dir", data_dir, "--backbone-weights", weights,
                                       "--output-dir", str(root / "model"), "-e", str(epochs),
                                       "--num-workers", "0", "--batch-size", "4", *flags])
    assert code is None
    return data_dir, weights, run_dir


def random_weights(path, seed=0) -> str:
    """A seeded random VGG16 features state dict saved at path (its backbone_id is a file hash)."""
    torch.manual_seed(seed)
    torch.save(vgg16.VGG16().features.state_dict(), path)
    return str(path)


def run_cli(module, argv):
    """module.main through core.run_main -> (exit code or None, return value)."""
    try:
        return None, core.run_main(module.main, module.get_args_parser(), argv, flags.HINTS)
    except SystemExit as stop:
        return stop.code, None


def make_model(kind="CAM", normalize_by="minmax", dtype=torch.float32, seed=0, classes=17):
    """A seeded random VGG16 + a CAM or ReCAM head on `classes` classes, in eval mode."""
    torch.manual_seed(seed)
    backbone = vgg16.VGG16()
    head = heads.CAMHead(classes) if kind == "CAM" else heads.ReCAMHead(classes, normalize_by)
    return heads.Classifier(backbone, head).eval().to(dtype)


# the cheapest options of the costly methods, for the tests that run every method
CHEAP = {"SSCAM": {"ss_samples": 2}, "ISCAM": {"is_samples": 2}}


def cheap(method):
    """Options that keep `method` to a few extra forwards per image in tests ({} for most)."""
    return dict(CHEAP.get(method, {}))


def images(n=3, size=64, seed=1, dtype=torch.float32):
    """[n,3,size,size] seeded normal 'normalised images'."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g).to(dtype)


WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def make_read_only(folder, monkeypatch):
    """chmod folder read-only; as root (who ignores permissions) also refuse, like the kernel
    would for anyone else, every open for writing under it."""
    folder = Path(folder).resolve()
    for path in [folder, *folder.rglob("*")]:
        os.chmod(path, 0o555 if path.is_dir() else 0o444)
    if os.geteuid() != 0:
        return
    inside = lambda path: Path(os.path.abspath(os.fspath(path))).is_relative_to(folder)  # noqa: E731
    real_open, real_os_open = builtins.open, os.open

    def guarded_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and set(mode) & set("wax+") and inside(file):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(file))
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, *args, **kwargs):
        if flags & WRITE_FLAGS and inside(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(os, "open", guarded_os_open)
