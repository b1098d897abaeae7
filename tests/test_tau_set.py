"""Masks in the data folder, the validated tau and the tau set's own figures (--cam-metrics
--split-name test), end to end on the tiny synthetic run of conftest.py."""

import dataclasses
import json
import shutil

import pytest
from mask_data import flowers17_masks
from metrics_run import cli

from flowercam.core import UserError
from flowercam.metrics import runner


def test_data_folder_masks_validated_tau_and_baselines(synthetic_run, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synthetic_run["data"], data)
    flowers17_masks(data / "masks", [f"image_{i:04d}" for i in range(1, 12)])  # 0012: none
    out = tmp_path / "out"
    cfg = dataclasses.replace(cli(synthetic_run, "--methods", "CAM", "LayerCAM", "--split-name",
                                  "test", "--output-dir", str(out)), data_dir=str(data))
    runner.run(cfg)
    result = json.loads((out / "cam_metrics.json").read_text())
    loc = result["localization"]
    assert (loc["masks_from"], loc["mask_values"], loc["ignore_values"]) == (
        "data folder", [1], [0, 5])
    assert (loc["images_with_mask"], loc["images_missing_mask"]) == (2, 1)
    assert (loc["tau_subset"], loc["tau_images"]) == ("valid", 3)
    assert list(result["methods"]) == ["CAM", "LayerCAM"]
    assert list(result["baselines"]) == ["center", "full"]  # random and sobel when asked for
    for row in [*result["methods"].values(), *result["baselines"].values()]:
        oracle, valid = row["overall"]["oracle_tau"], row["overall"]["validated_tau"]
        assert set(oracle) == set(valid) == {"miou", "max_box_acc", "max_box_acc_v2",
                                             "top1_loc", "gt_known_loc"}
        assert oracle["gt_known_loc"]["value"] == oracle["max_box_acc"]["value"]
        assert oracle["max_box_acc"]["n"] == 2 and oracle["top1_loc"]["value"] <= 100
    full, center = (result["baselines"][b]["overall"] for b in ("full", "center"))
    # full: whole-image box IoU 256/1024 < 0.3; pixel IoU 256 flower / 896 valid pixels
    assert full["oracle_tau"]["max_box_acc"]["value"] == 0.0
    assert full["oracle_tau"]["miou"]["value"] == pytest.approx(256 / 896 * 100)
    assert center["oracle_tau"]["max_box_acc"]["value"] == 100.0
    for row in (full, center):  # same maps and masks on valid and test: same taus
        for key in ("miou", "max_box_acc", "max_box_acc_v2"):
            assert row["validated_tau"][key]["value"] == row["oracle_tau"][key]["value"]
    table = (out / "cam_metrics.md").read_text()
    assert "### Oracle tau" in table and "### Validated tau" in table
    assert "| center (baseline) | 2 |" in table
    assert "(data folder; foreground [1], ignored [0, 5])" in table


def test_mask_folder_that_matches_no_image_is_an_error(synthetic_run, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synthetic_run["data"], data)
    flowers17_masks(data / "masks", ["other_0001"])
    with pytest.raises(UserError, match="no valid image has a mask"):
        runner.run(dataclasses.replace(cli(synthetic_run), data_dir=str(data)))
    with pytest.raises(UserError, match="oracle tau"):
        runner.run(dataclasses.replace(cli(synthetic_run), validate_tau_on="valid"))




def test_a_test_run_reports_its_tau_set_as_a_valid_run_would(synthetic_run, tmp_path):
    """The test run's tau set (the valid mask images) at its own oracle tau gives the figures,
    intervals and paired differences of a valid run on those images: one run instead of two."""
    data = tmp_path / "data"
    shutil.copytree(synthetic_run["data"], data)
    flowers17_masks(data / "masks", [f"image_{i:04d}" for i in range(1, 12)])

    def run(subset):
        out = tmp_path / subset
        cfg = cli(synthetic_run, "--methods", "CAM", "LayerCAM", "--figures", "localization",
                  "--masked-only", "--split-name", subset, "--output-dir", str(out))
        runner.run(dataclasses.replace(cfg, data_dir=str(data)))
        return json.loads((out / "cam_metrics.json").read_text()), (out / "cam_metrics.md")

    (test, table), (valid, _) = run("test"), run("valid")
    for kind in ("methods", "baselines"):
        for name, row in test[kind].items():
            own = valid[kind][name]["overall"]
            expected = {**{k: own[k] for k in ("pointing_game", "pointing_game_peak", "pxap")},
                        **own["oracle_tau"]}
            assert row["overall"]["tau_set_oracle"] == expected
            assert row["overall"]["tau_set_oracle"]["pxap"]["n"] == 3
    for label, pair in test["paired"].items():
        own = valid["paired"][label]["difference"]
        expected = {**{k: own[k] for k in ("pointing_game", "pointing_game_peak", "pxap")},
                    **own["oracle_tau"]}
        assert pair["difference"]["tau_set_oracle"] == expected
    text = table.read_text()
    assert "### The tau set (3 mask images of valid) at its own oracle tau" in text
    assert "The tau set's mask images at their own oracle tau:" in text
    assert "tau_set_oracle" not in valid["methods"]["CAM"]["overall"]  # no tau set: none


def test_masked_only_faithfulness_measures_the_mask_images(synthetic_run, tmp_path):
    """--figures faithfulness --masked-only: the figures read no mask, the selection still does
    (the faithfulness of the mask images, beside their localization rows); no tau set."""
    data = tmp_path / "data"
    shutil.copytree(synthetic_run["data"], data)
    flowers17_masks(data / "masks", [f"image_{i:04d}" for i in range(1, 12)])  # 0012: none
    out = tmp_path / "out"
    cfg = cli(synthetic_run, "--methods", "CAM", "--figures", "faithfulness", "--masked-only",
              "--split-name", "test", "--output-dir", str(out))
    runner.run(dataclasses.replace(cfg, data_dir=str(data)))
    result = json.loads((out / "cam_metrics.json").read_text())
    overall = result["methods"]["CAM"]["overall"]
    assert overall["average_drop"]["n"] == 2  # the 2 of 3 test images with a mask
    assert "tau_set_oracle" not in overall and "pxap" not in overall


def _masked_run(synthetic_run, data, out, subset, *extra):
    cfg = cli(synthetic_run, "--methods", "CAM", "LayerCAM", "--figures", "localization",
              "--masked-only", "--split-name", subset, "--output-dir", str(out), *extra)
    runner.run(dataclasses.replace(cfg, data_dir=str(data)))
    return json.loads((out / "cam_metrics.json").read_text())


def test_tau_from_a_valid_run_gives_the_validated_figures_of_a_measured_tau_set(
        synthetic_run, tmp_path):
    """--tau-from valid/cam_metrics.json: the test run's validated-tau figures and paired
    differences equal those of the run that measures the valid maps again (same taus)."""
    data = tmp_path / "data"
    shutil.copytree(synthetic_run["data"], data)
    flowers17_masks(data / "masks", [f"image_{i:04d}" for i in range(1, 12)])
    valid = _masked_run(synthetic_run, data, tmp_path / "valid", "valid")
    measured = _masked_run(synthetic_run, data, tmp_path / "measured", "test")
    path = str(tmp_path / "valid" / "cam_metrics.json")
    read = _masked_run(synthetic_run, data, tmp_path / "read", "test", "--tau-from", path)
    for kind in ("methods", "baselines"):
        for name, row in read[kind].items():
            assert row["overall"]["validated_tau"] == measured[kind][name]["overall"][
                "validated_tau"]
            taus = {k: v["tau"] for k, v in row["overall"]["validated_tau"].items()}
            assert taus["miou"] == valid[kind][name]["overall"]["oracle_tau"]["miou"]["tau"]
            assert "tau_set_oracle" not in row["overall"]  # the file has no per-image tables
    for label, pair in read["paired"].items():
        assert pair["difference"]["validated_tau"] == measured["paired"][label]["difference"][
            "validated_tau"]
    assert read["options"]["tau_from"] == path and read["localization"]["tau_images"] == 3
    table = (tmp_path / "read" / "cam_metrics.md").read_text()
    assert f"of valid (the oracle tau of {path})" in table


def test_tau_from_a_pseudo_mask_run_gives_the_validated_pseudo_masks_of_a_measured_tau_set(
        synthetic_run, tmp_path):
    """A valid run of pseudo-mask figures only (no localization figures) stands for the tau set
    of a pseudo-mask test run: the same validated figures as measuring the valid maps again. A
    test run that wants localization figures is refused (the file has no box taus)."""
    data = tmp_path / "data"
    shutil.copytree(synthetic_run["data"], data)
    flowers17_masks(data / "masks", [f"image_{i:04d}" for i in range(1, 12)])
    pseudo = ("--figures", "pseudo-masks", "--refine", "none", "crf")
    valid = _masked_run(synthetic_run, data, tmp_path / "valid", "valid", *pseudo)
    assert "oracle_tau" not in valid["methods"]["CAM"]["overall"]
    measured = _masked_run(synthetic_run, data, tmp_path / "measured", "test", *pseudo)
    path = str(tmp_path / "valid" / "cam_metrics.json")
    read = _masked_run(synthetic_run, data, tmp_path / "read", "test", *pseudo, "--tau-from", path)
    for kind in ("methods", "baselines"):
        for name, row in read[kind].items():
            figures = row["overall"]["pseudo_masks"]["validated_tau"]
            assert figures == measured[kind][name]["overall"]["pseudo_masks"]["validated_tau"]
            assert figures["fg_iou"]["tau"] == valid[kind][name]["overall"]["pseudo_masks"][
                "oracle_tau"]["fg_iou"]["tau"]
    with pytest.raises(UserError, match="no localization figures of CAM"):
        _masked_run(synthetic_run, data, tmp_path / "out", "test", "--tau-from", path)


def test_tau_from_a_file_that_cannot_stand_for_the_tau_set_is_refused_before_the_work(
        synthetic_run, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synthetic_run["data"], data)
    flowers17_masks(data / "masks", [f"image_{i:04d}" for i in range(1, 12)])
    _masked_run(synthetic_run, data, tmp_path / "valid", "valid")
    _masked_run(synthetic_run, data, tmp_path / "limited", "valid", "--limit", "2")
    _masked_run(synthetic_run, data, tmp_path / "flipped", "valid", "--flip")
    (tmp_path / "bad.json").write_text("{not json")
    refused = [("valid", "measured valid of split 1; the tau needs another subset"),
               ("limited", "--limit 2 sample"), ("flipped", "flip True, this run with False"),
               ("missing", "does not exist"), ("bad.json", "not a readable cam_metrics.json")]
    for folder, message in refused:
        path = tmp_path / folder
        path = path if folder.endswith(".json") else path / "cam_metrics.json"
        subset = "valid" if folder == "valid" else "test"
        with pytest.raises(UserError, match=message):
            _masked_run(synthetic_run, data, tmp_path / "out", subset, "--tau-from", str(path))
        assert not (tmp_path / "out" / "cam_metrics.json").exists()
    with pytest.raises(UserError, match="not both"):
        _masked_run(synthetic_run, data, tmp_path / "out", "test", "--tau-from",
                    str(tmp_path / "valid" / "cam_metrics.json"), "--validate-tau-on", "valid")
    other = _masked_run(synthetic_run, data, tmp_path / "one", "valid", "--methods", "CAM")
    assert list(other["methods"]) == ["CAM"]
    with pytest.raises(UserError, match="no localization figures of LayerCAM"):
        _masked_run(synthetic_run, data, tmp_path / "out", "test", "--tau-from",
                    str(tmp_path / "one" / "cam_metrics.json"))


def test_the_tau_pass_is_timed_apart_from_the_summary(synthetic_run, tmp_path, monkeypatch):
    """tau_seconds holds the tau pass, summary_seconds only the summary after it (it held both).
    A fake clock in the runner jumps 1000 s inside the tau pass."""
    data = tmp_path / "data"
    shutil.copytree(synthetic_run["data"], data)
    flowers17_masks(data / "masks", [f"image_{i:04d}" for i in range(1, 12)])
    jump, real_tau_set, clock = [0.0], runner.tau_set, runner.time.perf_counter

    def slow_tau_set(*args, **kwargs):
        jump[0] = 1000.0
        return real_tau_set(*args, **kwargs)

    monkeypatch.setattr(runner, "tau_set", slow_tau_set)
    monkeypatch.setattr(runner.time, "perf_counter", lambda: clock() + jump[0])
    cfg = dataclasses.replace(cli(synthetic_run, "--methods", "CAM", "--split-name", "test",
                                  "--output-dir", str(tmp_path / "out")), data_dir=str(data))
    result = runner.run(cfg)
    assert result["localization"]["tau_images"] == 3
    assert result["tau_seconds"] >= 1000 > result["summary_seconds"] >= 0
    assert result["seconds"] < 1000
