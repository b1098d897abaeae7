"""report.html (flowercam.report.html): written beside a run's JSON by evaluate.py and grid.py,
and rendered in headless Chromium: every table, image and plot there, sorting by a click."""

import csv
import json
import math

import browser
import numpy as np
import pytest
import training_data
from mask_data import write_masks
from metrics_run import parse

import evaluate as evaluate_cli
import grid as grid_cli
from flowercam.core import UserError
from flowercam.report import html


@pytest.fixture(scope="module")
def reported_run(synthetic_run, tmp_path_factory):
    """A tiny real evaluate.py --cam-metrics run with masks, then --sanity into the same
    folder: its report.html has both parts."""
    out = tmp_path_factory.mktemp("report") / "out"
    masks = write_masks(out.parent / "masks", ["image_0003", "image_0007_0", "image_0011"])
    evaluate_cli.main(parse(synthetic_run, "--masks-dir", str(masks), "--ignore-values", "128",
                            "--methods", "CAM", "LayerCAM", "GradCAM", "--output-dir", str(out),
                            "--compare", "LayerCAM", "CAM"))
    argv = ["-d", str(synthetic_run["run"]), "--data-dir", synthetic_run["data"],
            "--backbone-weights", synthetic_run["weights"], "--sanity", "--methods", "CAM",
            "--limit", "2", "--bootstrap", "10", "--no-data-randomisation", "--no-independent",
            "--figure-images", "1", "--output-dir", str(out)]
    evaluate_cli.main(evaluate_cli.get_args_parser().parse_args(argv))
    return out


def test_the_run_json_keeps_what_the_page_draws(reported_run):
    summary = json.loads((reported_run / "cam_metrics.json").read_text())
    steps = summary["options"]["steps"]
    rows = {**summary["methods"], **summary["baselines"]}
    for row in ("CAM", "LayerCAM", "GradCAM", "center", "full"):
        curves = summary["curves"][row]
        assert len(curves["deletion"]) == len(curves["insertion"]) == steps + 1
        assert len(curves["precision"]) == len(curves["recall"]) == 100
        assert curves["recall"][-1] == pytest.approx(1.0)  # tau 0: every valid pixel is in
        iou = summary["per_image"][row]["iou"]
        assert len(iou) == summary["n_images"] and all(0 <= v <= 100 for v in iou)
        # the per-image IoU at the row's oracle tau averages to the table's IoU
        assert np.mean(iou) == pytest.approx(rows[row]["overall"]["oracle_tau"]["miou"]["value"])
    assert summary["data_dir"] and summary["versions"]["torch"]


def test_evaluate_writes_the_page_beside_its_json(reported_run):
    page = (reported_run / "report.html").read_text()
    for part in ('id="faithfulness"', 'id="localization-oracle"', 'id="paired"',
                 'id="per-class"', 'id="sanity-spearman"', "sanity_grid.png", "sanity_plot.png",
                 "curves_perturbation.png", "curves_precision_recall.png",
                 "gallery_LayerCAM_best_map.png", "LayerCAM - CAM", "option seed", "peak on fg"):
        assert part in page, part
    for name in ("CAM", "LayerCAM", "GradCAM"):
        for pick in html.GALLERY_PICKS:
            assert (reported_run / html.FILES / f"gallery_{name}_{pick}_map.png").is_file()
    assert "http" not in page.replace("http-equiv", "")  # nothing fetched from the internet


def test_the_sanity_tables_take_their_measures_from_sanity_json(reported_run):
    """sanity.json records each measure's title (similarity.TITLES, the one home of the names):
    the page shows one table per recorded measure, the share of constant maps too; a sanity.json
    written before the titles were recorded shows its own measure keys."""
    summary = json.loads((reported_run / "sanity.json").read_text())
    assert list(summary["measures"]) == ["spearman", "spearman_abs", "ssim", "hog", "constant"]
    shown = html.sanity_section(reported_run)["tables"]
    assert [t["id"] for t in shown] == [f"sanity-{m}" for m in summary["measures"]]
    assert shown[-1]["caption"].startswith("Constant maps %: ")
    older = {k: v for k, v in summary.items() if k != "measures"}
    assert html.sanity_measures(older) == {m: m for m in summary["measures"]}


@pytest.mark.skipif(browser.chromium() is None, reason="no chromium (apt-get install chromium)")
def test_the_page_renders_in_chromium(reported_run, tmp_path):
    facts = browser.probe(reported_run / "report.html")
    assert facts["errors"] == [] and facts["console"] == []
    tables = {t["id"]: t for t in facts["tables"]}
    assert {"faithfulness", "localization-oracle", "pseudo-oracle", "paired", "per-class",
            "sanity-spearman"} <= set(tables)
    assert tables["faithfulness"]["rows"] == 5  # 3 methods, center, full
    images = [i["src"] for i in facts["images"]]
    assert all(i["loaded"] for i in facts["images"]), facts["images"]
    assert len([s for s in images if "gallery_" in s]) == 3 * 3 * 2  # methods x picks x tiles
    assert {"report_files/curves_perturbation.png", "report_files/curves_precision_recall.png",
            "sanity_grid.png", "sanity_plot.png"} <= set(images)
    for t in tables.values():  # a click sorts up, a second click down
        up = [float(v) for v in t["first_click"] if v]
        down = [float(v) for v in t["second_click"] if v]
        assert up == sorted(up) and down == sorted(down, reverse=True), t
    assert len(tables["faithfulness"]["first_click"]) == 5
    shot = browser.screenshot(reported_run / "report.html", tmp_path / "page.png")
    assert shot.stat().st_size > 10_000


def test_a_broken_image_is_seen_by_the_probe(reported_run, tmp_path):
    if browser.chromium() is None:
        pytest.skip("no chromium (apt-get install chromium)")
    page = tmp_path / "report.html"
    page.write_text('<html><head></head><body><img src="missing.png"><table><thead><tr><th>a'
                    "</th></tr></thead><tbody></tbody></table></body></html>")
    facts = browser.probe(page)
    assert facts["images"] == [{"src": "missing.png", "loaded": False}]
    assert any("missing.png" in e for e in facts["errors"])


def test_a_grid_folder_gets_table2_and_its_loss_curves(tmp_path):
    rows = [{"config": "CAM-lr0.0001", "lr": "0.0001", "top1": "92.06"},
            {"config": "CAM-lr1e-05", "lr": "1e-05", "top1": "90.00"}]
    with open(tmp_path / "table2.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (tmp_path / "grid_runs.json").write_text("{}")
    (tmp_path / "loss_curves.png").write_bytes(b"")
    page = html.write_report(tmp_path, gallery=False).read_text()
    assert 'id="table2"' in page and "92.06" in page and 'src="loss_curves.png"' in page
    assert "Map metrics" not in page


def test_a_folder_without_a_run_is_one_line(tmp_path):
    with pytest.raises(UserError, match="holds no cam_metrics.json"):
        html.write_report(tmp_path)


def test_the_gallery_picks_best_median_worst_by_iou_skipping_images_without_a_mask():
    per_image = {"CAM": {"iou": [40.0, None, 90.0, 10.0, 55.0, 70.0]}}
    assert html._ranked(per_image, "CAM") == {"best": 2, "median": 4, "worst": 3}
    assert html._ranked({"CAM": {"iou": [None, math.nan]}}, "CAM") is None


def test_cells_keep_intervals_tau_and_the_paired_mark():
    summary = {"paired": {"A - center": {"difference": {"pxap": {"value": 1.0,
                                                                 "ci95": [-0.5, 2.0]}}}}}
    mark = html.paired_mark(summary, "A", ("pxap",), lower=False)
    c = html.cell({"value": 50.0, "ci95": [40.0, 60.0], "n": 3, "tau": 0.35}, "{:.1f}", mark)
    assert c == {"text": "50.0 [40.0, 60.0] @0.35", "sort": "50", "mark": "†"}
    assert html.beats({"ci95": [0.1, 2.0]}, lower_is_better=False) is True
    assert html.beats({"ci95": [-0.1, 2.0]}, lower_is_better=True) is False
    assert html.cell(None)["text"] == "-"


def test_grid_py_writes_the_page(tmp_path):
    data = training_data.make_dataset(tmp_path / "data", per_class=3, copies=1, size=32)
    weights = training_data.random_weights(tmp_path / "w.pth")
    results = tmp_path / "results"
    code, _ = training_data.run_cli(grid_cli, [
        "--data-dir", data, "--backbone-weights", weights, "--lrs", "1e-3", "--model-types",
        "CAM", "-e", "1", "--output-dir", str(tmp_path / "model"), "--results-dir", str(results),
        "--num-workers", "0", "--report-facts", "none"])
    assert code is None
    page = (results / "report.html").read_text()
    assert 'id="table2"' in page and "loss_curves.png" in page


def test_without_its_checkpoint_the_page_says_why_there_is_no_gallery(reported_run, tmp_path):
    summary = json.loads((reported_run / "cam_metrics.json").read_text())
    summary["checkpoint"] = str(tmp_path / "gone.pth")
    (tmp_path / "cam_metrics.json").write_text(json.dumps(summary))
    page = html.write_report(tmp_path).read_text()
    assert "gone.pth is not on this machine" in page and 'id="faithfulness"' in page
    assert "gallery_" not in page


@pytest.mark.skipif(browser.chromium() is None, reason="no chromium (apt-get install chromium)")
def test_the_kept_real_runs_pages_render(tmp_path):
    """The pages of the real runs kept under output/reference (their JSON alone: no gallery)."""
    for run in ("headline_valid", "sscam_test"):
        folder = tmp_path / run
        folder.mkdir()
        (folder / "cam_metrics.json").write_bytes(
            (training_data.REPO / "output" / "reference" / run / "cam_metrics.json").read_bytes())
        facts = browser.probe(html.write_report(folder, gallery=False))
        assert facts["errors"] == [] and facts["console"] == []
        assert all(i["loaded"] for i in facts["images"])
        ids = {t["id"] for t in facts["tables"]}
        assert {"localization-oracle", "paired", "per-class"} <= ids, ids
        per_class = next(t for t in facts["tables"] if t["id"] == "per-class")
        assert per_class["rows"] >= 16  # every class with a masked image
