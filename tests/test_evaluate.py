"""evaluate.py: top-1/3/5 and loss of every saved epoch; one-line errors for bad run dirs."""

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from training_data import make_dataset, random_weights, run_cli, trained_run

import evaluate as evaluate_cli
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
    assert saved["best_checkpoint"] == runs.best_checkpoint(run_dir).name
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
    # another data folder: its split is not the run's (records.run_data_dir), before its classes
    assert "is not the one" in _error(capsys, ["-d", str(run_dir), "--data-dir", wrong])
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


@pytest.mark.parametrize("argv,flag,fix", [
    (["--limit", "3"], "--limit (cam-metrics, sanity)", "add --cam-metrics"),
    (["--steps", "3"], "--steps (cam-metrics)", "add --cam-metrics"),
    (["-s", "1"], "-s (cam-metrics, sanity)", "add --cam-metrics"),
    (["--masks-dir", "m", "--ignore-values", "0", "5"], "--masks-dir", "add --cam-metrics"),
    (["--permuted-epochs", "2"], "--permuted-epochs (sanity)", "add --sanity"),
    (["--cam-metrics", "--permuted-epochs", "2"], "not a flag of evaluate.py cam-metrics",
     "drop it"),
    # were accepted and ignored: --sanity never read --precision, --metrics-batch-size
    (["--sanity", "--precision", "bf16"], "--precision (accuracy, cam-metrics)", "drop it"),
    (["sanity", "--metrics-batch-size", "2"], "--metrics-batch-size (cam-metrics)", "drop it"),
    (["--sanity", "--cam-metrics"], "two modes", "pick one"),
])
def test_other_modes_flags_are_refused(run, capsys, argv, flag, fix):
    data_dir, _, run_dir = run
    err = _error(capsys, ["-d", str(run_dir), "--data-dir", data_dir, *argv])
    assert flag in err and fix in err


def test_mode_word_and_mode_flag_are_one_command():
    """`evaluate.py MODE ...` = the documented `evaluate.py ... --MODE`; no mode: accuracy."""
    parser = evaluate_cli.get_args_parser()
    for mode in ("cam-metrics", "sanity"):
        word = parser.parse_args([mode, "-d", "r", "--limit", "3", "--methods", "CAM"])
        flag = parser.parse_args(["-d", "r", "--limit", "3", f"--{mode}", "--methods", "CAM"])
        assert vars(word) == vars(flag) and word.mode == mode
    assert parser.parse_args(["-d", "r"]).mode == "accuracy"
    assert vars(parser.parse_args(["accuracy", "-d", "r"])) == vars(parser.parse_args(["-d", "r"]))


def test_metrics_config_keeps_library_defaults_for_flags_not_given():
    parser = evaluate_cli.get_args_parser()
    args = parser.parse_args(["--cam-metrics", "-d", "r"])
    cfg = evaluate_cli.metrics_config(args)
    assert cfg == MetricsConfig(model_dir="r", num_workers=cfg.num_workers)
    args = parser.parse_args(["--cam-metrics", "--steps", "3", "--methods", "CAM", "-s", "4",
                              "--ignore-values", "0", "5", "--precision", "bf16",
                              "--compare", "CAM", "center", "--no-resume", "--figures", "road"])
    cfg = evaluate_cli.metrics_config(args)
    assert (cfg.steps, cfg.methods, cfg.seed, cfg.ignore_values) == (3, ("CAM",), 4, (0, 5))
    assert cfg.compare == (("CAM", "center"),) and cfg.families == ("road",)
    assert cfg.precision == "bf16" and not cfg.resume and args.methods == ["CAM"]


def test_sanity_reads_all_four_baselines_by_default():
    parser = evaluate_cli.get_args_parser()
    cfg = evaluate_cli.metrics_config(parser.parse_args(["--sanity", "--batch-size", "4"]))
    assert cfg.baselines == ("center", "full", "random", "sobel") and cfg.map_batch_size == 4
    cfg = evaluate_cli.metrics_config(parser.parse_args(["--sanity", "--baselines"]))
    assert cfg.baselines == ()


def test_every_flag_of_every_mode_is_read():
    """Each mode's flags are defined once, in its own parser, and each one lands where the mode
    reads it: the map modes' dests are MetricsConfig fields (or the sanity options), the accuracy
    mode's the arguments of evaluation.evaluate_run."""
    modes = evaluate_cli.get_args_parser().modes()
    assert list(modes) == list(evaluate_cli.MODES)
    read = {"accuracy": {f.name for f in dataclasses.fields(training.SourceOptions)}
            | {"model_dir", "split_name", "backbone_weights", "batch_size", "output_dir"},
            "cam-metrics": set(evaluate_cli.FIELDS),
            "sanity": set(evaluate_cli.FIELDS) | set(evaluate_cli.SANITY_FLAGS)}
    for mode, parser in modes.items():
        dests = {a.dest for a in parser._actions} - {"help"}
        assert dests <= read[mode], (mode, dests - read[mode])
        options = [o for a in parser._actions for o in a.option_strings]
        assert len(options) == len(set(options))
    assert {"map_batch_size", "families", "resume", "compare"} <= {
        a.dest for a in modes["cam-metrics"]._actions}
    sanity_only = {a.dest for a in modes["sanity"]._actions} - {*evaluate_cli.FIELDS, "help"}
    assert sanity_only == set(evaluate_cli.SANITY_FLAGS)
    assert "precision" not in {a.dest for a in modes["sanity"]._actions}  # sanity's maps are fp32


def _mode_help(capsys, argv):
    with pytest.raises(SystemExit):
        evaluate_cli.get_args_parser().parse_args(argv)
    return capsys.readouterr().out


def test_help_of_each_mode(capsys):
    top = _mode_help(capsys, ["--help"])
    assert all(mode in top for mode in evaluate_cli.MODES)
    maps = _mode_help(capsys, ["-d", "r", "--cam-metrics", "--help"])
    assert "--figures" in maps and "--permuted-epochs" not in maps and "cam_metrics.md" in maps
    sanity = _mode_help(capsys, ["sanity", "--help"])
    assert "--permuted-epochs" in sanity and "--figures" not in sanity
    accuracy = _mode_help(capsys, ["accuracy", "-h"])
    assert "(default: 64)" in accuracy and "--limit" not in accuracy


DOCUMENTED = ["README.md", "inference_commands.sh", "inference_commands.bat", "docs/*.md"]


def documented_commands():
    """Every `python evaluate.py ...` (or torchrun) command line in the README, the
    inference_commands scripts and docs/: the words after evaluate.py up to the end of the
    command (a comment, a closing backtick, && or ;), continuation lines joined."""
    root = Path(__file__).resolve().parents[1]
    found = []
    for pattern in DOCUMENTED:
        for path in sorted(root.glob(pattern)):
            text = re.sub(r"[\\^]\n\s*", " ", path.read_text())  # sh \ and bat ^ continuations
            for line in text.splitlines():
                parts = line.split("evaluate.py")
                for before, part in zip(parts, parts[1:], strict=False):
                    if not re.search(r"(python3?|python\.exe|torchrun\b.*)\s*$", before):
                        continue  # a mention in prose (`evaluate.py --layers stage5` moves ...)
                    command = re.split(r"`|#|&&|;|\||\)", part)[0]
                    found.append((path.name, command.split()))
    return found


def test_documented_command_lines_keep_working():
    """Each flag of each documented command is a flag of the mode it names (the README's
    `evaluate.py -d RUN ...` lines, the report's --cam-metrics / --sanity ones)."""
    parser = evaluate_cli.get_args_parser()
    commands = documented_commands()
    assert len(commands) > 20
    for name, words in commands:
        mode = parser.with_mode(words)[0]
        if mode == "--help":  # `python evaluate.py MODE --help`
            continue
        options = parser.modes()[mode]._option_string_actions
        unknown = [w for w in words if w.startswith("-") and w.split("=")[0] not in options
                   and w not in evaluate_cli.MODE_FLAGS and not w.lstrip("-")[:1].isdigit()]
        assert not unknown, (name, " ".join(words), unknown)


@pytest.mark.parametrize("line", [
    "-d model/TS20261126-135338_CAM_lr0.0001 --split-name test",
    "-d $R --cam-metrics --masked-only --split-name valid --methods CAM GradCAM GradCAM++ "
    "LayerCAM --perturb-limit 17 --compare LayerCAM CAM",
    "--checkpoint H.pth --cam-metrics --masked-only --split-name test --methods ISCAM "
    "--perturb-limit 17 --tau-from v/cam_metrics.json --output-dir output/family/iscam_test",
    "-d $R --sanity --limit 8 --permuted-epochs 10 --methods CAM GradCAM GradCAM++ LayerCAM "
    "--output-dir output/sanity",
    "-d R --cam-metrics --split-name valid --figures road --limit 4 --perturb-limit 0 "
    "--methods ReCAM --baselines",
])
def test_report_command_lines_parse(line):
    args = evaluate_cli.get_args_parser().parse_args(line.split())
    assert args.mode == ("sanity" if "--sanity" in line else
                         "cam-metrics" if "--cam-metrics" in line else "accuracy")
