"""flowercam.metrics.runner (evaluate.py --cam-metrics) end to end on a tiny synthetic run."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import training_data
from mask_data import record_values, write_masks
from metrics_run import cli, parse
from PIL import Image

import evaluate as evaluate_cli
from flowercam.backbones import vgg16
from flowercam.cam import compute
from flowercam.core import UserError
from flowercam.data import prepare
from flowercam.metrics import runner
from flowercam.metrics.config import MetricsConfig
from flowercam.model import checkpoints, heads
from flowercam.train import runs


def test_cam_metrics_end_to_end_with_masks(synthetic_run, tmp_path):

    masks = write_masks(tmp_path / "masks", ["image_0003", "image_0007_0"])  # 0011: missing
    out = tmp_path / "out"
    evaluate_cli.main(parse(synthetic_run, "--masks-dir", str(masks), "--ignore-values", "128",
                      "--output-dir", str(out), "--compare", "LayerCAM", "CAM"))
    result = json.loads((out / "cam_metrics.json").read_text())
    assert result["n_images"] == 3 and result["checkpoint"].endswith("epoch_3.pth")
    assert list(result["methods"]) == ["CAM", "ReCAM", "LayerCAM", "GradCAM", "GradCAM++",
                                      "ScoreCAM"]
    assert result["localization"]["images_with_mask"] == 2
    assert result["localization"]["images_missing_mask"] == 1
    for figures in result["methods"].values():
        overall = figures["overall"]
        assert overall["pxap"]["n"] == 2 and overall["average_drop"]["n"] == 3
        assert 0 <= overall["deletion_auc"]["value"] <= 1
        lo, hi = overall["insertion_auc"]["ci95"]
        assert lo <= overall["insertion_auc"]["value"] <= hi
        assert set(figures["per_class"]) == {"Red", "Green", "Blue"}
    table = (out / "cam_metrics.md").read_text()
    assert "| LayerCAM | 3 |" in table and "PxAP" in table and "1 without (skipped)" in table
    # paired differences: every map against center, and the pair named by --compare
    rows = {**result["methods"], **result["baselines"]}
    assert set(result["paired"]) == {f"{r} - center" for r in rows if r != "center"} | {
        "LayerCAM - CAM"}
    for pair in result["paired"].values():
        a, b = rows[pair["a"]]["overall"], rows[pair["b"]]["overall"]
        diff = pair["difference"]
        assert diff["pxap"]["value"] == pytest.approx(a["pxap"]["value"] - b["pxap"]["value"])
        assert diff["average_drop"]["value"] == pytest.approx(
            a["average_drop"]["value"] - b["average_drop"]["value"])
        assert set(diff["oracle_tau"]) == set(a["oracle_tau"])
    assert "## Paired differences" in table and "| LayerCAM - CAM | 3 |" in table


def test_cam_metrics_without_masks_and_chosen_methods(synthetic_run, tmp_path):

    args = cli(synthetic_run, "--methods", "CAM", "LayerCAM", "--limit", "2", "--target",
               "predicted", "--precision", "bf16", "--deletion-baseline", "blur",
               "--output-dir", str(tmp_path))
    summary = runner.run(args)
    assert summary["n_images"] == 2 and list(summary["methods"]) == ["CAM", "LayerCAM"]
    assert "pxap" not in summary["methods"]["CAM"]["overall"]
    assert "PxAP" not in (tmp_path / "cam_metrics.md").read_text()


def test_user_errors(synthetic_run, tmp_path):

    with pytest.raises(UserError, match="need a model"):
        runner.run(dataclasses.replace(cli(synthetic_run), model_dir=None))
    with pytest.raises(UserError, match="masks folder .*nope is not a folder"):
        runner.run(cli(synthetic_run, "--masks-dir", str(tmp_path / "nope")))
    with pytest.raises(UserError, match="cannot compare ScoreCAM: it is not among the maps"):
        runner.run(cli(synthetic_run, "--methods", "CAM", "--compare", "CAM", "ScoreCAM"))
    with pytest.raises(UserError, match="two different maps"):
        runner.run(cli(synthetic_run, "--compare", "CAM", "CAM"))
    with pytest.raises(UserError, match="steps"):
        runner.run(dataclasses.replace(cli(synthetic_run), steps=0))  # the flag rejects 0
    with pytest.raises(UserError, match="no epoch_N.pth"):
        runs.best_checkpoint(tmp_path)


@pytest.mark.real
def test_real_smoke_run(weights_path, flowers_jpg, tmp_path):
    """Real VGG16 weights on 3 real Flower-17 images (128 px), a random CAM head, 4 steps."""
    data = tmp_path / "data"
    prepare.prepare(data, prepare.AugmentSettings(copies=1, size=128), flowers_jpg.parent,
                    num_workers=1, limit_per_class=4)
    backbone = vgg16.load(str(weights_path))
    torch.manual_seed(0)
    names = json.loads((data / "index.json").read_text())["classes"]
    settings = heads.HeadSettings.from_dict({
        "model_type": "CAM", "normalize_by": None, "num_classes": len(names),
        "class_names": names, "input_size": 128, "backbone": backbone.backbone_id})
    checkpoints.save_checkpoint(tmp_path / "run" / "epoch_1.pth", heads.build_head(settings),
                           settings)
    cfg = MetricsConfig(checkpoint=str(tmp_path / "run" / "epoch_1.pth"), limit=3, steps=4,
                        bootstrap=100, methods=("CAM", "LayerCAM"), data_dir=str(data))
    summary = runner.run(cfg, backbone=backbone)
    assert summary["n_images"] == 3
    for figures in summary["methods"].values():
        assert 0 <= figures["overall"]["average_drop"]["value"] <= 100
    assert (tmp_path / "run" / "cam_metrics.md").is_file()


def test_batch_size_and_figure_families_are_honoured(synthetic_run, tmp_path, monkeypatch):
    """--cam-metrics --batch-size 4: maps are computed 4 images at a time; --figures
    localization: no scoring forward at all (faithfulness left out)."""
    calls = []
    maps_reusing = compute.maps_reusing

    def counting(model, images, *args, **kwargs):
        calls.append(len(images))
        return maps_reusing(model, images, *args, **kwargs)

    monkeypatch.setattr(compute, "maps_reusing", counting)
    masks = write_masks(tmp_path / "masks", ["image_0003", "image_0007_0"])
    summary = runner.run(cli(synthetic_run, "--methods", "CAM", "--batch-size", "2",
                             "--masks-dir", str(masks), "--ignore-values", "128",
                             "--figures", "localization",
                             "--output-dir", str(tmp_path / "out")))
    assert calls and max(calls) == 2 and sum(calls) == summary["n_images"]
    overall = summary["methods"]["CAM"]["overall"]
    assert "pxap" in overall and overall["average_drop"]["n"] == 0


def test_no_dagger_verdicts_without_bootstrap_intervals(synthetic_run, tmp_path):
    """--bootstrap 0: no interval, so no † (a bare difference is no test); the header says so."""
    runner.run(cli(synthetic_run, "--methods", "CAM", "--bootstrap", "0", "--output-dir",
                   str(tmp_path)))
    table = (tmp_path / "cam_metrics.md").read_text()
    assert "| CAM | 3 |" in table and "†" not in table.split("No † verdicts")[1]
    assert "--bootstrap 0" in table


def test_every_paired_figure_is_in_the_markdown_of_a_pseudo_mask_run(synthetic_run, tmp_path):
    """--figures pseudo-masks: the --compare pair and every pair against center are printed in
    cam_metrics.md (each figure of the JSON's paired differences), not only in the JSON."""
    masks = write_masks(tmp_path / "masks", ["image_0003", "image_0007_0", "image_0011"])
    summary = runner.run(cli(synthetic_run, "--methods", "CAM", "LayerCAM", "--masks-dir",
                             str(masks), "--ignore-values", "128", "--figures", "pseudo-masks",
                             "--compare", "LayerCAM", "CAM", "--output-dir", str(tmp_path)))
    table = (tmp_path / "cam_metrics.md").read_text()
    paired = table.split("## Paired differences")[1].split("\n## ")[0]
    assert set(summary["paired"]) == {"CAM - center", "LayerCAM - center", "full - center",
                                      "LayerCAM - CAM"}
    for label, pair in summary["paired"].items():
        figure = pair["difference"]["pseudo_masks"]["oracle_tau"]["fg_iou"]
        assert f"| {label} | {figure['n']} | {figure['value']:.1f} [" in paired


def test_perturb_limit_leaves_other_images_without_curves(synthetic_run, tmp_path):

    summary = runner.run(cli(synthetic_run, "--methods", "CAM", "--perturb-limit", "1",
                                  "--output-dir", str(tmp_path)))
    overall = summary["methods"]["CAM"]["overall"]
    assert overall["average_drop"]["n"] == 3 and overall["deletion_auc"]["n"] == 1
    assert overall["insertion_auc"]["n"] == 1
    assert "1 of them with deletion/insertion" in (tmp_path / "cam_metrics.md").read_text()


def test_feature_cache_gives_the_same_figures_as_the_backbone(synthetic_run, tmp_path):

    common_args = ("--methods", "CAM", "ReCAM", "--bootstrap", "0")
    cached = runner.run(cli(synthetic_run, *common_args, "--output-dir", str(tmp_path / "a")))
    direct = runner.run(cli(synthetic_run, *common_args, "--no-cache",
                                 "--output-dir", str(tmp_path / "b")))
    for method in ("CAM", "ReCAM"):
        a, b = cached["per_image"][method], direct["per_image"][method]
        np.testing.assert_allclose(a["o"], b["o"], atol=1e-5)
        np.testing.assert_allclose(a["deletion"], b["deletion"], atol=1e-5)
    np.testing.assert_allclose(cached["per_image"]["y"], direct["per_image"]["y"], atol=1e-5)


@pytest.mark.real
def test_real_masks_through_the_runner(shared_dir, tmp_path):
    """42 real Flower-17 masks (64 px, nearest) on a synthetic data folder's valid and test
    images, a random-weight model: box metrics, both taus, baselines, end to end."""
    real = sorted((shared_dir / "flowers17" / "masks").glob("image_*.png"))
    if len(real) < 42:
        pytest.skip("fewer than 42 shared masks")
    data = Path(training_data.make_dataset(tmp_path / "data", per_class=28, copies=1, size=64))
    split = json.loads((data / "splits.json").read_text())["splits"]["1"]
    ids = split["valid"] + split["test"]  # 21 + 21
    (data / "masks").mkdir()
    for image_id, path in zip(ids, real, strict=False):
        with Image.open(path) as im:
            im.resize((64, 64), Image.NEAREST).save(data / "masks" / f"{image_id}.png")
    record_values(data)  # Flower-17's values, as augment.py records them
    weights = training_data.random_weights(tmp_path / "w.pth")
    backbone = vgg16.load(weights)
    settings = heads.HeadSettings.from_dict({
        "model_type": "CAM", "normalize_by": "minmax", "num_classes": 3,
        "class_names": list(training_data.CLASSES), "input_size": 64,
        "backbone": backbone.backbone_id})
    checkpoints.save_checkpoint(tmp_path / "run" / "epoch_1.pth", heads.build_head(settings),
                           settings)
    cfg = MetricsConfig(checkpoint=str(tmp_path / "run" / "epoch_1.pth"), data_dir=str(data),
                        split_name="test", methods=("CAM",), steps=1, perturb_limit=1,
                        bootstrap=100)
    summary = runner.run(cfg, backbone=backbone)
    loc = summary["localization"]
    assert loc["images_with_mask"] == 21 and loc["tau_images"] == 21
    for row in [*summary["methods"].values(), *summary["baselines"].values()]:
        oracle, valid = row["overall"]["oracle_tau"], row["overall"]["validated_tau"]
        for key in ("miou", "max_box_acc", "max_box_acc_v2"):
            # the oracle tau is the best one on these images (1e-9: float sums in other orders)
            assert 0 <= valid[key]["value"] <= oracle[key]["value"] + 1e-9 <= 100 + 1e-9
            lo, hi = oracle[key]["ci95"]
            assert lo <= hi
        assert oracle["gt_known_loc"]["value"] == oracle["max_box_acc"]["value"]
        assert oracle["top1_loc"]["value"] <= oracle["gt_known_loc"]["value"]


def test_scales_one_is_the_plain_map_and_aggregation_is_recorded(synthetic_run, tmp_path):
    base = ("--methods", "CAM", "LayerCAM", "--limit", "2", "--baselines")
    plain = runner.run(cli(synthetic_run, *base, "--output-dir", str(tmp_path / "a")))
    ones = runner.run(cli(synthetic_run, *base, "--scales", "1", "--output-dir",
                          str(tmp_path / "b")))
    same = [json.dumps(r["methods"], sort_keys=True) for r in (plain, ones)]  # NaN == NaN here
    assert same[0] == same[1]  # scales [1], no flip: the plain maps exactly
    agg = runner.run(cli(synthetic_run, *base, "--scales", "1", "1.5", "--flip", "--layers",
                         "stage3", "stage4", "classmaps", "--output-dir", str(tmp_path / "c")))
    assert list(agg["options"]["scales"]) == [1.0, 1.5] and agg["options"]["flip"] is True
    assert list(agg["options"]["layers"]) == ["stage3", "stage4", "classmaps"]
    text = (tmp_path / "c" / "cam_metrics.md").read_text()
    assert "aggregated over scales 1, 1.5 and flips" in text


def test_the_cam_family_is_measured_by_name_and_takes_one_layer(synthetic_run, tmp_path):
    family = ["HiResCAM", "EigenCAM", "FEM", "AblationCAM", "FinerCAM", "SmoothGradCAM++",
              "FullGrad"]
    summary = runner.run(cli(synthetic_run, "--methods", *family, "--limit", "2",
                             "--perturb-limit", "1", "--output-dir", str(tmp_path / "a")))
    assert list(summary["methods"]) == family
    summary = runner.run(cli(synthetic_run, "--methods", "GradCAM", "LayerCAM", "--layers",
                             "stage5", "--limit", "1", "--perturb-limit", "1", "--output-dir",
                             str(tmp_path / "b")))
    assert list(summary["methods"]) == ["GradCAM", "LayerCAM"]
    with pytest.raises(UserError, match="GradCAM weighs one layer"):
        runner.run(cli(synthetic_run, "--methods", "GradCAM", "--layers", "stage4", "stage5",
                       "--limit", "1", "--output-dir", str(tmp_path / "c")))
