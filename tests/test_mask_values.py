"""What mask values mean is recorded where the masks are written (augment.py, index.json) and every
reader takes it from there (flowercam/data/masks.py; issue 37); values that say nothing are refused
with the values found; a changed source mask is copied again (issue 40, defect 4)."""

import json

import numpy as np
import pytest
from mask_data import write_masks
from PIL import Image
from training_data import make_dataset, make_folder_dataset, random_weights

import augment
import evaluate
from flowercam import core
from flowercam.backbones import vgg16
from flowercam.core import UserError
from flowercam.data import dataset, masks
from flowercam.metrics import formulas, runner
from flowercam.metrics.config import MetricsConfig
from flowercam.model import checkpoints, heads
from flowercam.report import image_files

SIZE = 32


def run_augment(source, data, *extra):
    argv = ["--source", str(source), "--data-dir", str(data), "--copies", "1", "--size",
            str(SIZE), "--num-workers", "1", *map(str, extra)]
    return augment.main(augment.get_args_parser().parse_args(argv))


def one_line_error(capsys, script, argv):
    """The error line of a refused command (exit code 2, no traceback; progress bars before)."""
    with pytest.raises(SystemExit) as exc:
        core.run_main(script.main, script.get_args_parser(), [str(a) for a in argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.splitlines()[-1].startswith("error: "), err
    return err.splitlines()[-1]


def own_source(root, labels):
    """A class-folder source (2 classes x 4 images, 40x30) with masks/<id>.png = labels."""
    source = make_folder_dataset(root, classes=("cat", "dog"), per_class=4)
    (source / "masks").mkdir()
    for image in sorted(source.glob("*/*.*")):
        Image.fromarray(labels).save(source / "masks" / f"{image.stem}.png")
    return source


def object_labels(band=None):
    """0 background, 1 the object (a box); band: a row band of that value (left out)."""
    labels = np.zeros((30, 40), np.uint8)
    labels[8:22, 10:30] = 1
    if band is not None:
        labels[:3] = band
    return labels


def figures(data, spec):
    """Localization figures (PxAP, best mean IoU) of a map covering the whole image and of one
    covering the object, on the data folder's test images."""
    items = dataset.split_items(data, "test")
    fg, valid, has = masks.batch_masks(items, spec, SIZE)
    assert has.all()
    thresholds = np.linspace(0, 1, 21)
    out = {}
    for name, maps in (("whole", np.ones(fg.shape)), ("object", fg.astype(float))):
        tp, fp, n_fg = formulas.threshold_counts(maps, fg, valid, thresholds)
        miou = np.nanmean(formulas.iou_per_threshold(tp, fp, n_fg), axis=0).max()
        out[name] = (formulas.pxap_from_counts(tp, fp, n_fg), miou)
    return out


@pytest.mark.parametrize("declared", [("--mask-values", 1, "--ignore-values", 255), ()],
                         ids=["declared", "none"])
def test_own_masks_read_from_the_data_folder_as_with_explicit_flags(tmp_path, declared):
    """The issue's test: 0/1 masks copied by augment (values declared, or none) give the same
    figures as the same masks passed with explicit flags; the background counts, so a map
    covering the whole image scores below the one covering the object."""
    source = own_source(tmp_path / "src", object_labels(255 if declared else None))
    data = tmp_path / "data"
    run_augment(source, data, *declared)
    from_record = figures(data, masks.resolve_masks(data, size=SIZE))
    explicit = masks.resolve_masks(data, str(source / "masks"), (1,),
                                   (255,) if declared else None)
    assert from_record == figures(data, explicit)
    for whole, obj in zip(from_record["whole"], from_record["object"], strict=True):
        assert whole < obj
    values = json.loads((data / "index.json").read_text())["masks"]["values"]
    expected = ([1], [255], None, "declared") if declared else ([1], [], [0], "found")
    assert tuple(values.values()) == expected


def test_labels_that_say_nothing_are_refused_listing_the_values(tmp_path, capsys):
    raw = np.array([[0, 1, 2, 3, 4]], np.uint8).repeat(30, 0).repeat(8, 1)  # Flower-17's labels
    source = own_source(tmp_path / "src", raw)
    err = one_line_error(capsys, augment, ["--source", source, "--data-dir", tmp_path / "data",
                                           "--size", SIZE, "--num-workers", 1])
    assert "hold the values 0, 1, 2, 3, 4 and nothing says what they mean" in err
    assert "--mask-values" in err
    with pytest.raises(UserError, match="hold the values 0, 1, 2, 3, 4 and nothing says"):
        masks.resolve_masks(None, str(source / "masks"))  # --masks-dir without --mask-values
    spec = masks.resolve_masks(None, str(source / "masks"), (1,), (0, 5))
    assert (spec.mask_values, spec.ignore_values) == ((1,), (0, 5))
    run_augment(source, tmp_path / "data", "--mask-values", 1, "--ignore-values", 0)
    spec = masks.resolve_masks(tmp_path / "data", size=SIZE)
    assert (spec.mask_values, spec.ignore_values, spec.background_values) == ((1,), (0,), None)
    two = write_masks(tmp_path / "two", ["a"])  # 0, 255 and a 128 band
    with pytest.raises(UserError, match="values 0, 128, 255"):
        masks.resolve_masks(None, str(two))
    assert masks.resolve_masks(None, str(two), None, (128,)).mask_values is None  # 0 and 255


def test_declared_values_that_leave_no_foreground_are_refused(tmp_path, capsys):
    source = own_source(tmp_path / "src", object_labels())
    data = tmp_path / "data"
    err = one_line_error(capsys, augment, ["--source", source, "--data-dir", data, "--size",
                                           SIZE, "--mask-values", 1, "--ignore-values", 1, 0])
    assert "mask value 1 is declared both foreground and ignored" in err
    assert not data.exists()
    err = one_line_error(capsys, augment, ["--source", source, "--mask-values", -1])
    assert "'-1' must be a whole number >= 0" in err
    err = one_line_error(capsys, augment, ["--source", source, "--data-dir", data, "--size",
                                           SIZE, "--mask-values", 7])
    assert "no mask in" in err and "holds the foreground value(s) 7 (values found: 0, 1)" in err
    make_dataset(tmp_path / "made", per_class=2, copies=1, size=SIZE)
    err = one_line_error(capsys, evaluate, [
        "--checkpoint", tmp_path / "none.pth", "--data-dir", tmp_path / "made", "--cam-metrics",
        "--masks-dir", source / "masks", "--mask-values", 1, "--ignore-values", 1, 0])
    assert "mask value 1 is declared both foreground and ignored" in err
    err = one_line_error(capsys, evaluate, ["--cam-metrics", "--mask-values", -1])
    assert "'-1' must be a whole number >= 0" in err


def test_an_old_data_folder_without_a_record(tmp_path):
    """Made before augment.py recorded the values: Flower-17's only for a Flower-17 source."""
    source = own_source(tmp_path / "src", object_labels())
    data = tmp_path / "data"
    run_augment(source, data)
    index = json.loads((data / "index.json").read_text())
    del index["masks"]["values"]
    (data / "index.json").write_text(json.dumps(index))
    with pytest.raises(UserError, match="does not say what the values of .* mean"):
        masks.resolve_masks(data, size=SIZE)
    assert masks.resolve_masks(data, mask_values=(1,), size=SIZE).mask_values == (1,)
    index["masks"]["values"] = {"foreground": "1", "ignore": [], "background": None,
                                "from": "declared"}
    (data / "index.json").write_text(json.dumps(index))
    with pytest.raises(UserError, match=r"index.json: masks.values.foreground is '1'"):
        masks.resolve_masks(data, size=SIZE)


def test_outlines_read_the_recorded_values(tmp_path, oxford_dataset):
    labels = object_labels()
    labels[labels == 1] = 200
    source = own_source(tmp_path / "src", labels)
    data = tmp_path / "data"
    run_augment(source, data, "--mask-values", 200)
    paths = [str(source / "cat" / "cat_00.jpg")]
    fg = image_files.load_masks(str(data / "masks"), paths)[0]
    assert fg.sum() == (masks.read_labels(data / "masks" / "cat_00.png") == 200).sum() > 0
    (oxford_dataset / "masks").mkdir()
    flowers = np.full((30, 40), 3, np.uint8)  # Flower-17: 1 flower, 3 background, 0 unlabelled
    flowers[5:10, 5:10], flowers[0] = 1, 0
    Image.fromarray(flowers).save(oxford_dataset / "masks" / "image_0001.png")
    fg = image_files.load_masks(str(oxford_dataset / "masks"), ["x/image_0001.jpg"])[0]
    assert fg.sum() == 25  # a Flower-17 source's own masks: Flower-17's values


def test_a_rerun_keeps_the_declared_values(tmp_path):
    source = own_source(tmp_path / "src", object_labels(255))
    data = tmp_path / "data"
    run_augment(source, data, "--mask-values", 1, "--ignore-values", 255)
    run_augment(source, data)
    assert masks.resolve_masks(data, size=SIZE).ignore_values == (255,)


def test_a_changed_source_mask_is_copied_again_and_a_removed_one_removed(tmp_path, capsys):
    """Issue 40, defect 4: masks are tracked in sources.json as images are."""
    source = own_source(tmp_path / "src", object_labels())
    data = tmp_path / "data"
    run_augment(source, data)
    moved = object_labels()
    moved[:, :] = 0
    moved[2:10, 2:12] = 1  # same size and values, another place
    Image.fromarray(moved).save(source / "masks" / "cat_01.png")
    (source / "masks" / "dog_02.png").unlink()
    capsys.readouterr()
    result = run_augment(source, data)
    assert result["remasked"] == ["cat_01"] and "cat_01" in capsys.readouterr().out
    copy = masks.read_labels(data / "masks" / "cat_01.png")
    expected = np.array(Image.fromarray(moved).resize((SIZE, SIZE), Image.NEAREST))
    assert (copy == expected).all()
    assert not (data / "masks" / "dog_02.png").exists()  # would still be read
    stamp = (data / "masks" / "cat_00.png").stat().st_mtime_ns
    assert run_augment(source, data)["remasked"] == []
    assert (data / "masks" / "cat_00.png").stat().st_mtime_ns == stamp


def test_evaluate_reads_the_data_folders_masks_as_with_explicit_flags(tmp_path):
    """The same, end to end through evaluate.py --cam-metrics: 0/1 masks copied by augment.py
    (nothing declared) give the figures of the source masks passed with --masks-dir
    --mask-values 1; the whole-image map (full) no longer scores as if it were the object."""
    source = own_source(tmp_path / "src", object_labels())
    data = tmp_path / "data"
    run_augment(source, data)
    backbone = vgg16.load(random_weights(tmp_path / "w.pth"))
    settings = heads.HeadSettings.from_dict({
        "model_type": "CAM", "normalize_by": "minmax", "num_classes": 2,
        "class_names": ["cat", "dog"], "input_size": SIZE,
        "backbone": backbone.backbone_id})
    checkpoint = tmp_path / "run" / "epoch_1.pth"
    checkpoints.save_checkpoint(checkpoint, heads.build_head(settings), settings)
    common = {"checkpoint": str(checkpoint), "data_dir": str(data), "split_name": "test",
              "methods": ("CAM",), "baselines": ("full", "center"),
              "families": ("localization",), "bootstrap": 0}
    recorded = runner.run(MetricsConfig(**common, output_dir=str(tmp_path / "a")), backbone)
    explicit = runner.run(MetricsConfig(**common, output_dir=str(tmp_path / "b"),
                                        masks_dir=str(source / "masks"), mask_values=(1,)),
                          backbone)
    for kind in ("methods", "baselines"):
        assert json.dumps(recorded[kind], sort_keys=True) == json.dumps(explicit[kind],
                                                                        sort_keys=True)
    full = recorded["baselines"]["full"]["overall"]
    fraction = (object_labels() == 1).mean() * 100  # the object's share of every pixel
    assert full["pxap"]["value"] == pytest.approx(fraction, abs=5)  # not 100
    assert list(recorded["localization"]["mask_values"]) == [1]


def test_a_damaged_sources_record_is_rebuilt_not_a_traceback(tmp_path):
    source = own_source(tmp_path / "src", object_labels())
    data = tmp_path / "data"
    run_augment(source, data)
    for damaged in ([1, 2], {"version": 1, "images": [], "masks": {"cat_00": "x"}},
                    {"version": 1, "images": {"cat_00": 5}, "masks": {"cat_01": [1, 2]}}):
        (data / "sources.json").write_text(json.dumps(damaged))
        assert run_augment(source, data)["remasked"] == []
        record = json.loads((data / "sources.json").read_text())
        assert len(record["images"]) == 8 and len(record["masks"]) == 8


def test_a_flower17_source_with_foreign_mask_values_is_refused(oxford_dataset, tmp_path,
                                                                capsys):
    """Masks of a Flower-17 source are read with Flower-17's values: others need declaring."""
    (oxford_dataset / "masks").mkdir()
    Image.fromarray(object_labels(255)).save(oxford_dataset / "masks" / "image_0001.png")
    err = one_line_error(capsys, augment, ["--source", oxford_dataset, "--data-dir",
                                           tmp_path / "data", "--size", SIZE])
    assert "hold the values 0, 1, 255, not only Flower-17's 0-5" in err
    run_augment(oxford_dataset, tmp_path / "data", "--mask-values", 1, "--ignore-values", 255)
    assert masks.resolve_masks(tmp_path / "data").ignore_values == (255,)


@pytest.mark.parametrize("values", [[1, 2], "x", {"foreground": [1], "ignore": [0],
                                                  "background": None, "from": "guessed"}])
def test_a_damaged_values_record_is_one_line_naming_the_field(tmp_path, values):
    source = own_source(tmp_path / "src", object_labels())
    data = tmp_path / "data"
    run_augment(source, data)
    index = json.loads((data / "index.json").read_text())
    index["masks"]["values"] = values
    (data / "index.json").write_text(json.dumps(index))
    with pytest.raises(UserError, match=r"index.json: masks.values(.from)? is "):
        masks.resolve_masks(data, size=SIZE)
