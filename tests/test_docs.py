"""The generated pages: docs/results.md's and README.md's tables equal what their kept JSON
says (python -m benchmarks.results), docs/architecture.md equals the import contracts' reading
(python -m benchmarks.architecture)."""

import json
import shutil

import pytest
from training_data import REPO

from benchmarks import architecture, results, tables


@pytest.mark.parametrize("page", results.PAGES, ids=lambda p: p.name)
def test_every_results_table_equals_its_json(page):
    text = page.read_text()
    new, names = results.rewrite(text)
    assert names, f"{page.name} has no generated table"
    assert new == text, f"{page.name} differs from output/reference: python -m benchmarks.results"


def test_a_changed_figure_is_caught(tmp_path):
    shutil.copytree(REPO / results.REFERENCE / "sscam_valid", tmp_path / "sscam_valid")
    path = tmp_path / "sscam_valid" / "cam_metrics.json"
    summary = json.loads(path.read_text())
    page = "<!-- results:sscam_valid -->\n<!-- /results:sscam_valid -->\n"
    made, _ = results.rewrite(page, tmp_path)
    assert "| SSCAM | 91 | 89.6 [83.0, 95.6] †" in made  # the pointing game, paired with center
    summary["methods"]["SSCAM"]["overall"]["pointing_game"]["value"] = 12.3
    path.write_text(json.dumps(summary))
    again, _ = results.rewrite(made, tmp_path)
    assert again != made and "| SSCAM | 91 | 12.3 [83.0, 95.6] †" in again


def test_a_table_without_its_run_names_the_command(tmp_path):
    made, _ = results.rewrite("<!-- results:headline -->\n<!-- /results:headline -->", tmp_path)
    assert "Not kept yet" in made and "headline_valid/cam_metrics.json" in made


def test_the_architecture_page_is_the_contracts_reading():
    text = architecture.page()
    assert (REPO / "docs" / "architecture.md").read_text() == text, \
        "python -m benchmarks.architecture"
    for module in ("flowercam.refine.crf", "flowercam.report.html", "flowercam.metrics.road",
                   "flowercam.cache.shards"):
        assert f"`{module}`" in text
    assert "1. `flowercam.flags`" in text and "`flowercam.core`" in text


def test_a_run_before_the_published_pointing_game_says_its_rule():
    summary = json.loads((REPO / "output/reference/headline_valid/cam_metrics.json").read_text())
    old = tables.table(summary, results.HEADLINE)[0]
    for group in ("methods", "baselines"):
        for row in summary[group].values():
            row["overall"]["pointing_game_peak"] = row["overall"]["pointing_game"]
    new = tables.table(summary, results.HEADLINE)[0]
    assert "pointing (peak rule) %" in old and "peak rule" not in new and "pointing %" in new


def test_wilson_intervals_are_the_published_ones():
    """Wilson (1927) score intervals, 95%: 0 of 10 -> [0, 27.8], 5 of 10 -> [23.7, 76.3]."""
    assert tables.wilson(0, 10) == pytest.approx([0.0, 27.75], abs=0.01)
    assert tables.wilson(5, 10) == pytest.approx([23.66, 76.34], abs=0.01)


def test_the_side_by_side_tables_read_each_backbone_and_its_verdicts(tmp_path):
    """A backbone's run missing: the table names the command; both kept: one row per map and
    backbone, its † and its paired difference with center."""
    made, _ = results.rewrite("<!-- results:backbones_valid -->\n<!-- /results:backbones_valid"
                              " -->", tmp_path)
    assert "Not kept yet" in made and "output/reference/backbones/" in made
    source = json.loads((REPO / "output/reference/headline_valid/cam_metrics.json").read_text())
    for key in tables.BACKBONES:
        (tmp_path / "backbones" / f"{key}_valid").mkdir(parents=True)
        (tmp_path / "backbones" / f"{key}_valid" / "cam_metrics.json").write_text(
            json.dumps(source))
    page = ("<!-- results:backbones_valid -->\n<!-- /results:backbones_valid -->\n"
            "<!-- results:backbones_valid_center -->\n<!-- /results:backbones_valid_center -->")
    made, names = results.rewrite(page, tmp_path)
    assert names == ["backbones_valid", "backbones_valid_center"]
    assert "| CAM | VGG16 | 91 | 90.7 [84.1, 95.7] †" in made
    assert "| CAM | EfficientNet-Lite0 | 91 | 90.7 [84.1, 95.7] †" in made
    lines = made.split("<!-- results:backbones_valid_center -->")[1].splitlines()
    layercam = next(line for line in lines if line.startswith("| LayerCAM | VGG16"))
    assert layercam.count(" *") == 3  # beats center on PxAP, IoU, MaxBoxAccV2 (the headline's)
    made, _ = results.rewrite("<!-- results:backbones_valid_layercam -->\n<!-- /results:"
                              "backbones_valid_layercam -->", tmp_path)
    pair = source["paired"]["LayerCAM - CAM"]["difference"]["pointing_game"]  # its --compare
    assert f"| LayerCAM - CAM | VGG16 | 91 | {pair['value']:+.1f} [" in made


def test_the_sanity_table_says_each_verdict():
    run = {"methods": ["CAM"], "ids": ["a", "b"], "deciding_states": ["cascade:b1", "data"],
           "verdicts": {"CAM": {"cascade:b1": True, "data": False, "passes": False}},
           "similarities": {"CAM": {
               "cascade:b1": {"spearman": {"value": 0.1, "ci95": [0, 0.2]},
                              "spearman_abs": {"value": 0.3, "ci95": [0.2, 0.4]},
                              "constant": {"value": 2.0, "ci95": [0, 6.0]}},
               "data": {"spearman": {"value": -0.3, "ci95": [-0.4, -0.2]},
                        "spearman_abs": {"value": 0.5, "ci95": [0.45, 0.55]}}}}}
    lines = tables.sanity_table({"vgg16": run})
    assert lines[-1] == ("| CAM | VGG16 | 2 | 0.10 [0.00, 0.20] | 0.30 [0.20, 0.40] | 2 [0, 6] | "
                         "yes | -0.30 [-0.40, -0.20] | 0.50 [0.45, 0.55] | **no** | **no** |")
