"""The few-shot baseline (flowercam.metrics.fewshot) never sees a validation or test mask, and
--cam-metrics scores it, the refined rows and the pseudo-mask figures end to end."""

import json
import shutil

import numpy as np
import pytest
import torch
import training_data
from mask_data import record_values
from PIL import Image

import evaluate as evaluate_cli
from flowercam.backbones import vgg16
from flowercam.core import UserError
from flowercam.data import dataset, masks
from flowercam.metrics import fewshot, pseudo, runner
from flowercam.model import checkpoints, heads


@pytest.fixture(scope="module")
def masked_run(tmp_path_factory):
    """3-class 32 px data dir where EVERY image has a Flower-17 style mask, a random CAM head."""
    root = tmp_path_factory.mktemp("fewshot")
    data = training_data.make_dataset(root / "data", per_class=4, copies=2, size=32)
    labels = np.full((32, 32), 3, np.uint8)
    labels[8:24, 10:26] = 1
    labels[:2] = 0
    (root / "data" / "masks").mkdir()
    for image in dataset.read_index(data)["images"]:
        Image.fromarray(labels).save(root / "data" / "masks" / f"{image['id']}.png")
    record_values(root / "data")  # Flower-17's values, as augment.py records them
    weights = training_data.random_weights(root / "w.pth")
    backbone = vgg16.load(weights)
    settings = heads.HeadSettings.from_dict({
        "model_type": "CAM", "normalize_by": "minmax", "num_classes": 3,
        "class_names": list(training_data.CLASSES), "input_size": 32,
        "backbone": backbone.backbone_id})
    checkpoints.save_checkpoint(root / "run" / "epoch_1.pth", heads.build_head(settings), settings)
    return {"data": data, "weights": weights, "run": root / "run", "backbone": backbone}


def spec(data):
    return masks.resolve_masks(data, size=32)


def test_the_classifier_reads_training_masks_only(masked_run, monkeypatch):
    """Every mask the few-shot training reads belongs to a training image of the split (all
    images have masks here, so a leak would show)."""
    read, original = [], masks.read_labels
    monkeypatch.setattr(masks, "read_labels", lambda path, *a: read.append(path) or original(
        path, *a))
    models, info = fewshot.train_rows(["center", "few-shot-1", "few-shot-2"], masked_run[
        "backbone"], masked_run["data"], 1, spec(masked_run["data"]), 32)
    train = set(dataset.load_split(masked_run["data"], 1)["train"])
    assert read and {p.stem for p in read} <= train
    assert len(read) == 3 * 1 + 3 * 2  # one and two per class
    assert info["masked_train_images_per_class"] == {0: 2, 1: 2, 2: 2}
    assert set(models) == {"few-shot-1", "few-shot-2"}


def test_a_validation_or_test_item_is_refused(masked_run):
    split = dataset.load_split(masked_run["data"], 1)
    for subset in ("valid", "test"):
        item = (f"{split[subset][0]}_0", "x.jpg", 0)
        with pytest.raises(UserError, match="only from training masks"):
            fewshot.check_train_only([item], masked_run["data"], 1)
    fewshot.check_train_only([(f"{split['train'][0]}_0", "x.jpg", 0)], masked_run["data"], 1)


def test_the_map_is_a_probability_at_input_size(masked_run):
    models, _ = fewshot.train_rows(["few-shot-1"], masked_run["backbone"], masked_run["data"],
                                   1, spec(masked_run["data"]), 32)
    images = torch.stack([dataset.load_image(p, 32)[0] for _, p, _ in dataset.split_items(
        masked_run["data"], "valid", 1)])
    maps = models["few-shot-1"].maps(masked_run["backbone"], images)
    assert maps.shape == (len(images), 32, 32) and 0 <= maps.min() and maps.max() <= 1
    assert fewshot.shots("few-shot-5") == 5 and fewshot.shots("center") is None


def test_pseudo_masks_refined_rows_and_few_shot_end_to_end(masked_run, tmp_path):
    out = tmp_path / "out"
    argv = ["--checkpoint", str(masked_run["run"] / "epoch_1.pth"), "--data-dir",
            masked_run["data"], "--backbone-weights", masked_run["weights"], "--cam-metrics",
            "--figures", "pseudo-masks", "--methods", "CAM", "--split-name", "test",
            "--baselines", "center", "full", "few-shot-1", "--refine", "none", "superpixels",
            "crf", "--bootstrap", "20", "--output-dir", str(out)]
    evaluate_cli.main(evaluate_cli.get_args_parser().parse_args(argv))
    result = json.loads((out / "cam_metrics.json").read_text())
    assert list(result["methods"]) == ["CAM", "CAM+superpixels", "CAM+crf"]
    # refined: the methods and center; full and the few-shot rows plain
    assert list(result["baselines"]) == ["center", "center+superpixels", "center+crf", "full",
                                         "few-shot-1"]
    for row in [*result["methods"].values(), *result["baselines"].values()]:
        p = row["overall"]["pseudo_masks"]
        for kind in ("oracle_tau", "validated_tau"):
            assert set(p[kind]) == set(pseudo.FIGURES) and p[kind]["fg_iou"]["n"] == 3
            assert 0 <= p[kind]["fg_iou"]["value"] <= 100
        assert p["validated_tau"]["fg_iou"]["value"] <= p["oracle_tau"]["fg_iou"]["value"] + 1e-9
    assert result["few_shot"]["shots"]["few-shot-1"][0].endswith("_0")
    assert set(result["row_seconds_per_image"]) == {*result["methods"], *result["baselines"]}
    full = result["baselines"]["full"]["overall"]["pseudo_masks"]["oracle_tau"]
    assert full["recall"]["value"] == 100 and full["fg_iou"]["value"] == pytest.approx(
        256 / 960 * 100)  # 16x16 flower, 30 of 32 rows valid
    tau_set = result["paired"]["CAM+crf - center"]["difference"]["pseudo_masks"]
    assert tau_set["tau_set_oracle"]["fg_iou"]["n"] == 3  # the verdicts of the tau-set table
    table = (out / "cam_metrics.md").read_text()
    assert "## Pseudo-masks" in table and "| CAM+crf |" in table
    assert "## Faithfulness" not in table  # not measured: no table of dashes
    assert "## CAM+crf pseudo-masks per class (validated tau)" in table


def test_few_shot_needs_masks(masked_run, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(masked_run["data"], data, ignore=shutil.ignore_patterns("masks"))
    with pytest.raises(UserError, match="need masks of training images"):
        runner.run(runner.MetricsConfig(checkpoint=str(masked_run["run"] / "epoch_1.pth"),
                                        data_dir=str(data), baselines=("few-shot-1",),
                                        backbone_weights=masked_run["weights"]))
