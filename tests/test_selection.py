"""flowercam.metrics.selection: which checkpoint, images and masks --cam-metrics measures."""

import json

import numpy as np
import pytest
from mask_data import write_masks
from PIL import Image

from flowercam import runs
from flowercam.core import UserError
from flowercam.metrics import selection


def test_best_checkpoint_skips_the_overfitting_epoch(tmp_path):

    for epoch in (2, 5, 9):
        (tmp_path / f"epoch_{epoch}.pth").write_bytes(b"")
    assert runs.best_checkpoint(tmp_path).name == "epoch_9.pth"  # no log: the last saved
    rows = [{"epoch": 2, "checkpoint": "epoch_2.pth", "overfit": False},
            {"epoch": 5, "checkpoint": "epoch_5.pth", "overfit": False},
            {"epoch": 9, "checkpoint": "epoch_9.pth", "overfit": True}]
    (tmp_path / "training_logs.txt").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert runs.best_checkpoint(tmp_path).name == "epoch_5.pth"
    assert runs.best_checkpoint(tmp_path / "epoch_9.pth").name == "epoch_9.pth"  # a file as is


def test_masks_are_found_by_stem_and_resized_nearest(tmp_path):

    write_masks(tmp_path, ["image_0001"])
    found = selection.find_mask(tmp_path, "image_0001_0", "data/auged/image_0001_0.jpg")
    assert found == tmp_path / "image_0001.png"
    assert selection.find_mask(tmp_path, "image_0002_0", "x/image_0002_0.jpg") is None
    labels = selection.read_mask(found, 32)
    assert labels.shape == (32, 32) and set(np.unique(labels)) == {0, 128, 255}
    colour = np.zeros((4, 4, 3), np.uint8)
    colour[0, 0] = (255, 0, 0)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(UserError, match="colour"):
        selection.read_mask(tmp_path / "colour.png", 8)


def test_perturb_selection_spreads_over_classes_and_is_seeded():
    labels = np.repeat(np.arange(4), 5)  # 4 classes x 5 images
    keep = selection.perturb_selection(labels, 8, seed=0)
    assert keep.sum() == 8 and np.bincount(labels[keep], minlength=4).tolist() == [2, 2, 2, 2]
    assert (keep == selection.perturb_selection(labels, 8, seed=0)).all()
    assert not (keep == selection.perturb_selection(labels, 8, seed=1)).all()
    assert selection.perturb_selection(labels, 0, seed=0).all()  # 0 = every image
