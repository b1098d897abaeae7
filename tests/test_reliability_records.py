"""Issue #40: a run remembers what it was made with, and whatever is read back from disk is
checked when read (one line naming the file and the field); #37: typed checkpoint settings."""

import dataclasses
from pathlib import Path

import pytest
import torch

from flowercam.core import UserError
from flowercam.model import checkpoints, heads
from flowercam.train import training

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "model" / "reference" / "CAM_lr0.0001_epoch6.pth"


# ---------------------------------------------------------------- #37 typed settings


def test_settings_are_typed_with_every_field_present():
    s = training.make_settings("CAM", "sigmoid", ["a", "b"], 64, "id")
    assert isinstance(s, heads.HeadSettings) and s.normalize_by is None and s.cut == "pool5"
    assert set(s.to_dict()) == {f.name for f in dataclasses.fields(heads.HeadSettings)}
    assert heads.HeadSettings.from_dict(s.to_dict()) == s
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.num_classes = 3


def test_the_reference_checkpoint_loads_with_defaults_filled():
    """model/reference's checkpoint predates cut, backbone and backbone_weights_id."""
    raw = torch.load(REFERENCE, weights_only=True)["settings"]
    assert "cut" not in raw and raw["backbone"].startswith("vgg16-file-")
    _, s, _ = checkpoints.load_checkpoint(REFERENCE)
    assert (s.model_type, s.num_classes, s.input_size, s.cut) == ("CAM", 17, 256, "pool5")
    assert (s.backbone, s.backbone_id, s.backbone_weights_id) == ("vgg16", raw["backbone"], None)
    old_recam = {"model_type": "ReCAM", "num_classes": 2}  # normalize_by missing: minmax
    assert heads.HeadSettings.from_dict(old_recam).normalize_by == "minmax"


GOOD = training.make_settings("ReCAM", "relu", ["a", "b"], 64, "id").to_dict()
BAD = [("model_type", "X"), ("num_classes", 0), ("num_classes", "2"), ("num_classes", True),
       ("num_classes", 3), ("class_names", "ab"), ("class_names", [1, 2]), ("input_size", 0),
       ("input_size", -5), ("input_size", 64.0), ("normalize_by", "abc"), ("cut", "pool9"),
       ("backbone", 3), ("backbone_id", 5), ("backbone_weights_id", "abc"),
       ("recam_lambda", 1.0)]


@pytest.mark.parametrize("field,value", BAD, ids=[f"{f}={v!r}" for f, v in BAD])
def test_a_wrong_field_is_one_line_naming_the_file_and_field(tmp_path, field, value):
    path = tmp_path / "epoch_1.pth"
    settings = heads.HeadSettings.from_dict(GOOD)
    checkpoints.save_checkpoint(path, heads.build_head(settings), settings)
    torch.save({**torch.load(path, weights_only=True), "settings": {**GOOD, field: value}}, path)
    with pytest.raises(UserError) as err:
        checkpoints.load_checkpoint(path)
    assert str(path) in str(err.value) and field in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("settings", ["CAM", None, [1], 3.5, {"model_type": "CAM"},
                                      {**GOOD, "extra": 1}])
def test_settings_that_are_not_a_settings_mapping_are_refused(tmp_path, settings):
    path = tmp_path / "epoch_1.pth"
    good = heads.HeadSettings.from_dict(GOOD)
    checkpoints.save_checkpoint(path, heads.build_head(good), good)
    torch.save({**torch.load(path, weights_only=True), "settings": settings}, path)
    with pytest.raises(UserError, match=f"checkpoint {path} settings"):
        checkpoints.load_checkpoint(path)
