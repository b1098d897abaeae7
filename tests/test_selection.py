"""flowercam.metrics.selection: which checkpoint, images and masks --cam-metrics measures."""

import dataclasses
import json

import numpy as np
import pytest
from mask_data import write_masks
from PIL import Image

from flowercam.core import UserError
from flowercam.data import masks
from flowercam.metrics import selection
from flowercam.train import runs


def test_best_checkpoint_skips_the_overfitting_epoch(tmp_path):

    for epoch in (2, 5, 9):
        (tmp_path / f"epoch_{epoch}.pth").write_bytes(b"")
    assert runs.best_checkpoint(tmp_path).name == "epoch_9.pth"  # no log: the last saved
    # a whole log (its rows are checked when read: every field, epochs 1..N); 9 overfits
    rows = [{"epoch": e, "train_loss": 1.0, "valid_loss": 1.0, "valid_top1": 50.0,
             "valid_top3": 70.0, "valid_top5": 80.0, "seconds": 1.0, "overfit": e == 9,
             "checkpoint": f"epoch_{e}.pth"} for e in range(1, 10)]
    (tmp_path / "training_logs.txt").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert runs.best_checkpoint(tmp_path).name == "epoch_5.pth"
    assert runs.best_checkpoint(tmp_path / "epoch_9.pth").name == "epoch_9.pth"  # a file as is


def test_masks_are_found_by_stem_and_resized_nearest(tmp_path):

    write_masks(tmp_path, ["image_0001"])
    found = masks.find_mask(tmp_path, "image_0001_0", "data/auged/image_0001_0.jpg")
    assert found == tmp_path / "image_0001.png"
    assert masks.find_mask(tmp_path, "image_0002_0", "x/image_0002_0.jpg") is None
    labels = masks.read_labels(found, 32)
    assert labels.shape == (32, 32) and set(np.unique(labels)) == {0, 128, 255}
    colour = np.zeros((4, 4, 3), np.uint8)
    colour[0, 0] = (255, 0, 0)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(UserError, match="colour"):
        masks.read_labels(tmp_path / "colour.png", 8)


def test_perturb_selection_spreads_over_classes_and_is_seeded():
    labels = np.repeat(np.arange(4), 5)  # 4 classes x 5 images
    keep = selection.perturb_selection(labels, 8, seed=0)
    assert keep.sum() == 8 and np.bincount(labels[keep], minlength=4).tolist() == [2, 2, 2, 2]
    assert (keep == selection.perturb_selection(labels, 8, seed=0)).all()
    assert not (keep == selection.perturb_selection(labels, 8, seed=1)).all()
    assert selection.perturb_selection(labels, 0, seed=0).all()  # 0 = every image


def data_folder(root, masks=None, dataset="t", images=()):
    """A data folder with index.json (masks record optional) and a masks/ folder."""
    root.mkdir(parents=True, exist_ok=True)
    index = {"dataset": dataset, "classes": ["a"], "images": list(images)}
    if masks is not None:
        index["masks"] = masks
    (root / "index.json").write_text(json.dumps(index))
    return root


def test_masks_default_to_the_data_folder_with_its_recorded_values(tmp_path):
    data = data_folder(tmp_path / "data")
    assert masks.resolve_masks(data) is None  # no masks/: no localization
    with pytest.raises(UserError, match="there are no masks"):
        masks.resolve_masks(data, ignore_values=(0,))
    (data / "masks").mkdir()
    with pytest.raises(UserError, match="does not say what the values of .* mean"):
        masks.resolve_masks(data, size=32)  # no record, not Flower-17: never Flower-17's values
    spec = masks.resolve_masks(data, mask_values=(255,), ignore_values=(), size=32)
    assert (spec.mask_values, spec.ignore_values, spec.background_values) == ((255,), (), None)
    oxford = [{"id": "image_0001", "label": 0}, {"id": "image_0081", "label": 1}]
    old = data_folder(tmp_path / "old", dataset="flowers17", images=oxford)
    (old / "masks").mkdir()
    spec = masks.resolve_masks(old, size=32)  # made from Flower-17 before records: its values
    assert (spec.mask_values, spec.ignore_values, spec.exact_size) == ((1,), (0, 5), 32)
    assert spec.folder == str(old / "masks") and spec.source == "data folder"
    declared = masks.MaskValues((255,), (128,), None)
    data_folder(data, {"dir": "masks", "count": 0, "values": declared.as_record()})
    spec = masks.resolve_masks(data, size=32)
    assert (spec.mask_values, spec.ignore_values, spec.background_values) == ((255,), (128,), None)
    spec = masks.resolve_masks(data, ignore_values=(), size=32)  # a flag replaces its value
    assert (spec.mask_values, spec.ignore_values) == ((255,), ())
    other = write_masks(tmp_path / "trimaps", ["image_0001"])  # 0, 128 ignored, 255
    spec = masks.resolve_masks(data, str(other), None, (128,), size=32)
    assert (spec.folder, spec.mask_values, spec.ignore_values) == (str(other), None, (128,))
    assert spec.exact_size is None  # --masks-dir masks are resized
    with pytest.raises(UserError, match="not a folder"):
        masks.resolve_masks(data, str(tmp_path / "nope"))
    moved = data_folder(tmp_path / "data2", {"dir": "labels", "count": 0,
                                             "values": declared.as_record()})
    (moved / "labels").mkdir()
    assert masks.resolve_masks(moved).folder == str(moved / "labels")


def test_bad_mask_folders_are_one_line_errors(tmp_path):
    items = [("image_0001", "x/image_0001_0.jpg", 0), ("image_0002", "x/image_0002_0.jpg", 0)]
    folder = write_masks(tmp_path / "m", ["image_0001"], size=48)
    spec = masks.MaskSpec(str(folder), (255,), (128,), "data folder", exact_size=32)
    with pytest.raises(UserError, match="48x48 px but the images are 32x32"):
        masks.batch_masks(items, spec, 32)
    resized = masks.batch_masks(items, dataclasses.replace(spec, exact_size=None), 32)
    assert resized[2].tolist() == [True, False]  # image_0002: no mask, counted by the runner
    (folder / "image_0002.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="unreadable"):
        masks.batch_masks(items[1:], dataclasses.replace(spec, exact_size=None), 32)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no valid image has a mask"):
        selection.check_masks_match(dataclasses.replace(spec, folder=str(empty)), items, "valid")
    selection.check_masks_match(spec, items, "valid")  # one match is enough


def test_masked_only_keeps_the_images_with_a_mask(tmp_path):
    Image.new("L", (4, 4), 1).save(tmp_path / "image_0002.png")
    items = [("image_0001_0", "a/image_0001_0.jpg", 0), ("image_0002_0", "a/image_0002_0.jpg", 1)]
    spec = masks.MaskSpec(str(tmp_path), (1,), (0, 5), "data folder")
    assert selection.with_masks(items, spec) == items[1:]
    with pytest.raises(UserError, match="with a mask needs masks"):
        selection.with_masks(items, None)
