"""Shared fixtures: tiny synthetic datasets in tmp_path, and ../shared (real data) when present."""

import os
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # scripts live at the repo root

COLOURS = [(220, 40, 40), (40, 180, 60), (50, 70, 220), (230, 200, 40), (160, 60, 200)]


def synthetic_image(label, i, size=(40, 30)):
    """Class-distinct image: class colour background, class shape (rectangle/ellipse/triangle)."""
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
    return image


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


@pytest.fixture
def folder_dataset(tmp_path):
    """3 classes x 6 images of 40x30 px, class subfolders."""
    return make_folder_dataset(tmp_path / "pets")


@pytest.fixture
def oxford_dataset(tmp_path):
    """3 Flower-17 classes x 6 images of 40x30 px, Oxford layout."""
    return make_oxford_dataset(tmp_path / "oxford")


@pytest.fixture(scope="session")
def shared_dir():
    """../shared beside the checkout (or env FLOWERCAM_SHARED); skipped when absent."""
    path = Path(os.environ.get("FLOWERCAM_SHARED") or REPO.parent / "shared")
    if not path.is_dir():
        pytest.skip(f"real data folder {path} not found (set FLOWERCAM_SHARED)")
    return path


@pytest.fixture(scope="session")
def flowers_jpg(shared_dir):
    """../shared/flowers17/jpg with image_0001.jpg..image_1360.jpg."""
    path = shared_dir / "flowers17" / "jpg"
    if not (path / "image_0001.jpg").is_file():
        pytest.skip(f"Flower-17 images not found in {path}")
    return path


@pytest.fixture(scope="session")
def weights_path(shared_dir):
    """../shared/weights/vgg16_imagenet_features.pth."""
    path = shared_dir / "weights" / "vgg16_imagenet_features.pth"
    if not path.is_file():
        pytest.skip(f"VGG16 weights not found at {path}")
    return path


@pytest.fixture(scope="session")
def prepared_data(tmp_path_factory):
    """A data dir made by augment.py from 3 synthetic classes x 6 images: 64 px, 2 copies each.

    Shared by the session: treat it as read-only.
    """
    from flowercam import prepare

    root = tmp_path_factory.mktemp("prepared")
    source = make_folder_dataset(root / "pets")
    args = prepare.get_args_parser().parse_args(
        ["--source", str(source), "--data-dir", str(root / "data"), "--copies", "2",
         "--size", "64", "--num-workers", "1"])
    prepare.main(args)
    return root / "data"
