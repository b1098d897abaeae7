"""evaluate.py: top-1/3/5 and loss of every saved epoch; one-line errors for bad run dirs."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from training_data import make_dataset, random_weights, run_cli, trained_run

import evaluate as evaluate_cli
from flowercam.core import UserError
from flowercam.metrics.config import MetricsConfig
from flowercam.model import checkpoints, heads
from flowercam.train import runs, training


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(data dir, weights, run dir of a 3-epoch CAM run)."""
    return trained_run(tmp_path_factory.mktemp("eval"), 3, 2, "-l", "1e-3")


def test_eval_json_matches_training_log(run):
    data_dir, _, run_dir = run
    # backbone weights come from the run's config.json
    code, result = run_cli(evaluate_cli, ["-d", str(run_dir), "--data-dir", data_dir,
                                      "--num-workers", "0"])
    assert code is None
    saved = json.loads((run_dir / "eval.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["model_type"] == "CAM" and saved["split_name"] == "valid"
    epochs = [row["epoch"] for row in saved["epochs"]]
    assert epochs == sorted(epochs) and epochs
    log = {row["epoch"]: row for row in runs.read_log(run_dir)}
    for row in saved["epochs"]:
        assert row["loss"] == pytest.approx(log[row["epoch"]]["valid_loss"], rel=1e-6)
        assert row["top1"] == pytest.approx(log[row["epoch"]]["valid_top1"])
        assert row["top1"] <= row["top3"] <= row["top5"] == 100.0  # 3 classes


def test_test_split_uncached(run):
    data_dir, weights, run_dir = run
    argv = ["-d", str(run_dir), "--data-dir", data_dir, "--split-name", "test", "--no-cache",
            "--backbone-weights", weights, "--num-workers", "0"]
    code, result = run_cli(evaluate_cli, argv)
    assert code is None and result["split_name"] == "test" and result["images"] == 3


def _error(capsys, argv):
    code, _ = run_cli(evaluate_cli, argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and "\n" not in err
    return err


def test_errors(run, tmp_path, capsys, monkeypatch):
    data_dir, weights, run_dir = run
    assert "no epoch_N.pth" in _error(capsys, ["-d", str(tmp_path), "--data-dir", data_dir])
    assert "not found" in _error(capsys, ["-d", str(tmp_path / "nowhere")])
    monkeypatch.chdir(tmp_path)  # no -d: the newest run under ./model, here none
    assert "no trained run under model/" in _error(capsys, ["--data-dir", data_dir])

    other = tmp_path / "other"
    other.mkdir()
    torch.save({"state_dict": {}}, other / "epoch_1.pth")  # not ours
    assert "not a flowercam head checkpoint" in _error(capsys, ["-d", str(other)])

    mixed = tmp_path / "mixed"
    shutil.copytree(run_dir, mixed)
    settings = training.make_settings("ReCAM", "relu", ["a", "b", "c"], 32, "x")
    checkpoints.save_checkpoint(mixed / "epoch_99.pth", heads.build_head(settings), settings)
    assert "another kind" in _error(capsys, ["-d", str(mixed), "--data-dir", data_dir])

    wrong = make_dataset(tmp_path / "wrong", per_class=4, copies=1, size=32,
                         classes=("a", "b", "c", "d"))
    assert "classes" in _error(capsys, ["-d", str(run_dir), "--data-dir", wrong])
    other_weights = random_weights(tmp_path / "w2.pth", seed=5)
    assert "backbone" in _error(capsys, ["-d", str(run_dir), "--data-dir", data_dir,
                                         "--backbone-weights", other_weights])
    assert not (tmp_path / "eval.json").exists()


def test_default_model_dir_is_the_newest_run(run, tmp_path, monkeypatch):
    data_dir, weights, run_dir = run
    monkeypatch.chdir(tmp_path)
    newest = tmp_path / "model" / "TS2_CAM"
    shutil.copytree(run_dir, tmp_path / "model" / "TS1_CAM")
    shutil.copytree(run_dir, newest)
    os.utime(tmp_path / "model" / "TS1_CAM", (1, 1))  # older
    assert runs.latest_run("model") == Path("model/TS2_CAM")
    assert runs.best_checkpoint("model") == runs.run_checkpoints(Path("model/TS2_CAM"))[-1][1]
    code, _ = run_cli(evaluate_cli, ["--data-dir", data_dir, "--backbone-weights", weights])
    assert code is None and (newest / "eval.json").is_file()


@pytest.mark.parametrize("flags", [["--limit", "3"], ["--steps", "3"], ["-s", "1"],
                                   ["--masks-dir", "m", "--ignore-values", "0", "5"]])
def test_cam_metrics_flags_need_cam_metrics(run, capsys, flags):
    data_dir, _, run_dir = run
    err = _error(capsys, ["-d", str(run_dir), "--data-dir", data_dir, *flags])
    assert flags[0] in err and "belong to the other mode" in err and "--cam-metrics" in err


def test_metrics_config_keeps_library_defaults_for_flags_not_given():
    parser = evaluate_cli.get_args_parser()
    cfg = evaluate_cli.metrics_config(parser.parse_args(["--cam-metrics", "-d", "r"]))
    assert cfg == MetricsConfig(model_dir="r", num_workers=cfg.num_workers)
    args = parser.parse_args(["--cam-metrics", "--steps", "3", "--methods", "CAM", "-s", "4",
                              "--ignore-values", "0", "5", "--precision", "bf16"])
    cfg = evaluate_cli.metrics_config(args)
    assert (cfg.steps, cfg.methods, cfg.seed, cfg.ignore_values) == (3, ("CAM",), 4, (0, 5))
    assert cfg.precision == "bf16" and args.methods == ["CAM"]  # args left as parsed


def test_every_flag_is_honoured_or_refused_in_each_mode():
    """--batch-size means images per batch in both modes; a mode's own flags, in the other mode,
    are refused (one declaration: the parser's flag_modes)."""
    parser = evaluate_cli.get_args_parser()
    cfg = evaluate_cli.metrics_config(parser.parse_args(["--cam-metrics", "--batch-size", "4"]))
    assert cfg.map_batch_size == 4
    default = evaluate_cli.metrics_config(parser.parse_args(["--cam-metrics"]))
    assert default.map_batch_size == MetricsConfig().map_batch_size
    cfg = evaluate_cli.metrics_config(parser.parse_args(["--cam-metrics", "--figures",
                                                         "localization"]))
    assert cfg.families == ("localization",)
    args = parser.parse_args(["--figures", "localization"])
    with pytest.raises(UserError, match="--figures belong to the other mode"):
        evaluate_cli.check_modes(args)
    modes = parser.get_default("flag_modes")
    shared = {a.dest for a in parser._actions if a.dest not in modes} - {"help"}
    assert {"batch_size", "data_dir", "device", "split_name", "cam_metrics", "output_dir"} <= shared
    assert {"limit", "seed", "figures", "methods"} <= set(modes)
