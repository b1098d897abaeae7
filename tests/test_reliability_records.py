"""Issue #40: a run remembers what it was made with, and whatever is read back from disk is
checked when read (one line naming the file and the field); #37: typed checkpoint settings."""

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch
from training_data import random_weights, run_cli, trained_run

import evaluate as evaluate_cli
from flowercam.core import UserError
from flowercam.model import checkpoints, heads, vgg
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


# ---------------------------------------------------------------- shared tiny run


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 2-epoch CAM run of main.py on 3 synthetic classes (32 px, random backbone weights)."""
    root = tmp_path_factory.mktemp("records")
    data_dir, weights, run_dir = trained_run(root, 2, 2, "-l", "1e-3")
    return {"root": root, "data": data_dir, "weights": weights, "run": Path(run_dir)}


def copy_run(tiny, tmp_path) -> Path:
    run = tmp_path / tiny["run"].name
    shutil.copytree(tiny["run"], run)
    return run


def one_line_exit_2(module, argv, capsys, *named):
    """Runs module's main(argv) as the command does: exit 2, one line on stderr naming `named`."""
    capsys.readouterr()
    code, _ = run_cli(module, [str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for thing in named:
        assert str(thing) in err, err
    return err


# ---------------------------------------------------------------- defect 9: non-finite weights


def _spoil(path, how):
    ckpt = torch.load(path, weights_only=True)
    weight = ckpt["state_dict"]["fc.weight"]
    ckpt["state_dict"]["fc.weight"] = (weight * 1e38 if how == "overflow"
                                       else torch.full_like(weight, float(how)))
    torch.save(ckpt, path)


@pytest.mark.parametrize("how", ["nan", "inf", "overflow"])
def test_non_finite_weights_are_refused_at_load(tiny, tmp_path, capsys, how):
    """Defect 9: `evaluate.py -d RUN` printed 'loss nan' and named the NaN epoch the figures'
    checkpoint; cam-metrics wrote a table of NaN."""
    run = copy_run(tiny, tmp_path)
    bad = run / "epoch_2.pth"
    _spoil(bad, how)
    common = ["--data-dir", tiny["data"], "--backbone-weights", tiny["weights"],
              "--num-workers", "0"]
    one_line_exit_2(evaluate_cli, ["-d", run, *common], capsys, bad, "fc.weight")
    one_line_exit_2(evaluate_cli, ["cam-metrics", "--checkpoint", bad, "--limit", "2",
                                   "--figures", "localization", "--output-dir", tmp_path / "o",
                                   *common], capsys, bad)
    assert not (tmp_path / "o" / "cam_metrics.json").exists()


def test_non_finite_backbone_weights_are_refused(tmp_path):
    sd = torch.load(random_weights(tmp_path / "w.pth"), weights_only=True)
    sd["0.weight"][0, 0, 0, 0] = float("nan")
    torch.save(sd, tmp_path / "w.pth")
    with pytest.raises(UserError, match=f"backbone weights {tmp_path / 'w.pth'} hold non-finite"):
        vgg.load_backbone(str(tmp_path / "w.pth"))
