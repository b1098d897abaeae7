"""flowercam.masks: a source's masks/ copied into the data folder at the data's size."""

import json

import numpy as np
import pytest
from PIL import Image

from flowercam.core import UserError
from flowercam.data import masks, prepare


def palette_mask(path, size, box):
    labels = np.full(size[::-1], 3, np.uint8)  # background
    x0, y0, x1, y1 = box
    labels[y0:y1, x0:x1] = 1  # flower
    image = Image.fromarray(labels, mode="L").convert("P")
    image.save(path)
    return labels


def test_augment_copies_masks_at_the_data_size(oxford_dataset, tmp_path):
    (oxford_dataset / "masks").mkdir()
    palette_mask(oxford_dataset / "masks" / "image_0001.png", (40, 30), (10, 5, 30, 25))
    palette_mask(oxford_dataset / "masks" / "image_0082.png", (64, 64), (0, 0, 32, 64))
    data = tmp_path / "data"
    settings = prepare.AugmentSettings(copies=1, size=32)
    prepare.prepare(data, settings, oxford_dataset)
    index = json.loads((data / "index.json").read_text())
    assert index["masks"] == {"dir": "masks", "count": 2, "source": str(oxford_dataset / "masks"),
                              "values": {"foreground": [1], "ignore": [0, 5],
                                         "background": [2, 3, 4], "from": "flowers17"}}
    first = np.array(Image.open(data / "masks" / "image_0001.png"))
    assert first.shape == (32, 32) and set(np.unique(first)) == {1, 3}  # labels stay labels
    second = np.array(Image.open(data / "masks" / "image_0082.png"))
    assert (second[:, :16] == 1).all() and (second[:, 16:] == 3).all()
    stamp = (data / "masks" / "image_0001.png").stat().st_mtime_ns
    prepare.prepare(data, settings, oxford_dataset)  # a rerun rewrites nothing
    assert (data / "masks" / "image_0001.png").stat().st_mtime_ns == stamp


def test_no_masks_folder_no_record(oxford_dataset, tmp_path):
    prepare.prepare(tmp_path / "data", prepare.AugmentSettings(copies=1, size=32), oxford_dataset)
    assert "masks" not in json.loads((tmp_path / "data" / "index.json").read_text())


def test_bad_mask_folders_are_one_line(oxford_dataset, tmp_path):
    folder = oxford_dataset / "masks"
    folder.mkdir()
    (folder / "other.png").write_bytes(b"x")
    with pytest.raises(UserError, match="no <image id>.png matching any image"):
        masks.copy_masks(oxford_dataset, tmp_path / "data", ["image_0001"], 32)
    (folder / "image_0001.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="image_0001.png is unreadable"):
        masks.copy_masks(oxford_dataset, tmp_path / "data", ["image_0001"], 32)
    Image.new("RGB", (8, 8), (10, 200, 30)).save(folder / "image_0001.png")
    with pytest.raises(UserError, match="colour image"):
        masks.copy_masks(oxford_dataset, tmp_path / "data", ["image_0001"], 32)
    assert not (tmp_path / "data" / "masks" / "image_0001.png").exists()


@pytest.mark.real
def test_real_flower_masks(shared_dir, tmp_path):
    ids = ["image_0001", "image_0002", "image_0100", "image_1360"]
    found = masks.source_masks(shared_dir / "flowers17", ids)
    assert found, "the shared Flower-17 masks"
    assert masks.is_flowers17_source(shared_dir / "flowers17")
    record = masks.copy_masks(shared_dir / "flowers17", tmp_path, ids, 128, flowers17=True)
    assert record["count"] == len(found) and record["values"]["foreground"] == [1]
    for image_id in found:
        labels = np.array(Image.open(tmp_path / "masks" / f"{image_id}.png"))
        assert labels.shape == (128, 128) and set(np.unique(labels)) <= {0, 1, 2, 3, 4, 5}
