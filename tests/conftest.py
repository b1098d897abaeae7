"""Shared fixtures: tiny synthetic datasets in tmp_path, and ../shared (real data) when present."""

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # scripts live at the repo root

# after the path: these import the package from the checkout
from metrics_run import make_synthetic_run  # noqa: E402
from training_data import make_folder_dataset, make_model, make_oxford_dataset  # noqa: E402

from flowercam.data import prepare  # noqa: E402


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
    root = tmp_path_factory.mktemp("prepared")
    source = make_folder_dataset(root / "pets")
    prepare.prepare(root / "data", prepare.AugmentSettings(copies=2, size=64), source)
    return root / "data"


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    """metrics_run.make_synthetic_run: a random ReCAM head on 3 classes of 32 px images."""
    return make_synthetic_run(tmp_path_factory.mktemp("cam_metrics"))


@pytest.fixture(scope="module")
def cam_model():
    """A seeded random VGG16 + CAM head on 17 classes (training_data.make_model)."""
    return make_model("CAM")


@pytest.fixture(scope="module")
def recam_model():
    """The same with a ReCAM (minmax) head."""
    return make_model("ReCAM", "minmax")

