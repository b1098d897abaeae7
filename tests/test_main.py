"""main.py (training) and grid.py on tiny synthetic data with a random-init backbone."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from training_data import make_dataset, random_weights, run_cli

import evaluate as evaluate_cli
import grid as grid_cli
import main as main_cli
from flowercam import core
from flowercam.cache import features
from flowercam.model import checkpoints, heads
from flowercam.report import grid
from flowercam.train import runs, training


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(data dir, weights file): 3 classes x 4 images, 2 copies, 32 px."""
    root = tmp_path_factory.mktemp("train")
    data_dir = make_dataset(root / "data", per_class=4, copies=2, size=32)
    return data_dir, random_weights(root / "w.pth")


def _train(setup, out, *extra):
    data_dir, weights = setup
    argv = ["--data-dir", data_dir, "--backbone-weights", weights, "--output-dir", str(out),
            "--num-workers", "0", "--batch-size", "4", "-l", "1e-3", *extra]
    code, run_dir = run_cli(main_cli, argv)
    assert code is None
    return Path(run_dir), runs.read_log(run_dir)


def test_run_dir_logs_and_checkpoints(setup, tmp_path):
    run_dir, log = _train(setup, tmp_path, "-m", "ReCAM", "-n", "sigmoid", "-e", "3")
    assert run_dir.parent == tmp_path and run_dir.name.startswith("TS")
    assert run_dir.name.endswith("_ReCAM_sigmoid")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model_type"] == "ReCAM" and config["settings"]["input_size"] == 32
    assert [row["epoch"] for row in log] == [1, 2, 3]
    assert {"epoch", "train_loss", "valid_loss", "valid_top1", "seconds"} <= set(log[0])
    saved = sorted(run_dir.glob("epoch_*.pth"))
    assert saved and {p.name for p in saved} == {r["checkpoint"] for r in log if "checkpoint" in r}
    for path in saved:
        assert path.stat().st_size < 100_000  # the head only: no backbone weights
        ckpt = torch.load(path, weights_only=True)
        assert ckpt["format"] == "flowercam-head" and ckpt["settings"]["normalize_by"] == "sigmoid"
        assert set(ckpt["state_dict"]) == {"conv.weight", "conv.bias", "fc.weight"}
        head, settings, _ = checkpoints.load_checkpoint(path)
        assert settings.backbone_id.startswith("vgg16-file-") and settings.num_classes == 3
    assert not list(run_dir.glob(".tmp-*"))


def test_published_recam_trains_and_evaluates(setup, tmp_path):
    run_dir, log = _train(setup, tmp_path, "-m", "ReCAM-published", "--recam-lambda", "0.5",
                          "-e", "6", "-l", "3e-3")
    assert run_dir.name.endswith("_ReCAM-published")
    assert log[-1]["train_loss"] < log[0]["train_loss"]
    head, settings, _ = checkpoints.load_checkpoint(runs.best_checkpoint(run_dir))
    assert isinstance(head, heads.PublishedReCAMHead) and head.recam_lambda == 0.5
    assert settings.recam_lambda == 0.5 and settings.normalize_by is None
    data_dir, _ = setup
    code, result = run_cli(evaluate_cli, ["-d", str(run_dir), "--data-dir", data_dir,
                                          "--num-workers", "0"])
    assert code is None and result["model_type"] == "ReCAM-published"
    assert all(0 <= row["top1"] <= row["top3"] == 100.0 for row in result["epochs"])  # 3 classes


def test_recam_lambda_must_be_positive(setup, tmp_path, capsys):
    data_dir, weights = setup
    code, _ = run_cli(main_cli, ["--data-dir", data_dir, "--backbone-weights", weights,
                                 "--output-dir", str(tmp_path / "out"), "-m", "ReCAM-published",
                                 "--recam-lambda", "nan"])
    assert code == 2 and "--recam-lambda" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_same_seed_same_losses_cached_equals_uncached(setup, tmp_path):
    _, cached = _train(setup, tmp_path / "a", "-e", "2", "--seed", "3")
    _, again = _train(setup, tmp_path / "b", "-e", "2", "--seed", "3")
    _, uncached = _train(setup, tmp_path / "d", "-e", "2", "--seed", "3", "--no-cache")
    def losses(log):
        return [loss for row in log for loss in (row["train_loss"], row["valid_loss"])]

    assert losses(cached) == losses(again)
    assert losses(cached) == pytest.approx(losses(uncached), rel=1e-5)


def test_overfit_halt(tmp_path):
    torch.manual_seed(0)
    # random features and labels: the head memorises train, valid loss rises
    train_src = features.CachedSource(torch.randn(16, 512, 7, 7), torch.randint(0, 3, (16,)))
    valid_src = features.CachedSource(torch.randn(16, 512, 7, 7), torch.randint(0, 3, (16,)))
    settings = training.make_settings("CAM", None, ["a", "b", "c"], 64, "test")
    run_dir = runs.make_run_dir(tmp_path, settings)
    cfg = training.TrainConfig(lr=1e-2, epochs=200, batch_size=4, progress=False)
    history = training.train(settings, train_src, valid_src, run_dir, cfg)
    assert len(history) < 200 and history[-1]["overfit"]
    assert history[-1]["valid_loss"] > 2 * history[-1]["train_loss"]
    assert not any(row["overfit"] for row in history[:-1])
    assert runs.read_log(run_dir) == history
    short = dataclasses.replace(cfg, epochs=2)
    again = training.train(settings, train_src, valid_src, tmp_path / "again", short)
    other = training.train(settings, train_src, valid_src, tmp_path / "other",
                           dataclasses.replace(short, seed=1))
    assert [r["train_loss"] for r in again] == [r["train_loss"] for r in history[:2]]
    assert [r["train_loss"] for r in other] != [r["train_loss"] for r in history[:2]]


def test_interrupt_keeps_saved(setup, tmp_path, monkeypatch, capsys):
    epochs = []
    train_epoch = training.train_epoch

    def interrupted(*args):
        epochs.append(1)
        if len(epochs) == 2:
            raise KeyboardInterrupt
        return train_epoch(*args)

    monkeypatch.setattr(training, "train_epoch", interrupted)
    data_dir, weights = setup
    code, _ = run_cli(main_cli, ["--data-dir", data_dir, "--backbone-weights", weights, "-e", "5",
                             "--output-dir", str(tmp_path), "--num-workers", "0"])
    assert code == 130 and "interrupted" in capsys.readouterr().err
    (run_dir,) = tmp_path.iterdir()
    assert [r["epoch"] for r in runs.read_log(run_dir)] == [1]
    assert (run_dir / "epoch_1.pth").is_file() and not list(run_dir.glob(".tmp-*"))


@pytest.mark.parametrize("argv, words", [
    (["--data-dir", "{tmp}/nowhere"], "not prepared (run `python augment.py`"),
    (["-l", "-1"], "--lr: '-1' must be a finite number > 0"),
    (["--backbone-weights", "{tmp}/missing.pth"], "missing.pth not found"),
])
def test_one_line_errors(setup, tmp_path, capsys, argv, words):
    data_dir, weights = setup
    argv = ["--data-dir", data_dir, "--backbone-weights", weights, "--output-dir",
            str(tmp_path / "out"), *[a.format(tmp=tmp_path) for a in argv]]
    code, _ = run_cli(main_cli, argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and words in err and "\n" not in err
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_on_augment_output(prepared_data, tmp_path):
    """The data helper's augment.py output trains as is (copied: the fixture is read-only)."""
    data_dir = shutil.copytree(prepared_data, tmp_path / "data")
    weights = random_weights(tmp_path / "w.pth")
    run_dir, log = _train((str(data_dir), weights), tmp_path / "model", "-e", "1")
    assert len(log) == 1 and (run_dir / "epoch_1.pth").is_file()


def test_grid_tables_and_figure(setup, tmp_path):
    data_dir, weights = setup
    argv = ["--data-dir", data_dir, "--backbone-weights", weights, "--lrs", "1e-3", "-e", "2",
            "--output-dir", str(tmp_path / "model"), "--results-dir", str(tmp_path / "out"),
            "--num-workers", "0"]
    code, results = run_cli(grid_cli, argv)
    assert code is None and len(results) == 5
    out = tmp_path / "out"
    lines = (out / "table2.csv").read_text().splitlines()
    assert len(lines) == 6 and lines[0].startswith("config,model_type")
    table = (out / "table2.md").read_text()
    assert "| ReCAM relu | 0.001 |" in table and "| ReCAM-published | 0.001 |" in table
    assert (out / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"
    runs = json.loads((out / "grid_runs.json").read_text())
    assert set(runs) == {"CAM-lr0.001", "ReCAM-minmax-lr0.001", "ReCAM-sigmoid-lr0.001",
                         "ReCAM-relu-lr0.001", "ReCAM-published-lr0.001"}
    published = checkpoints.load_checkpoint(runs["ReCAM-published-lr0.001"]["best_checkpoint"])
    assert published[1].recam_lambda == heads.RECAM_LAMBDA
    for entry in runs.values():
        checkpoints.load_checkpoint(entry["best_checkpoint"])
        assert Path(entry["run_dir"]).parent == tmp_path / "model"


def test_grid_best_epoch_ignores_overfit_epochs(tmp_path):
    history = [
        {"epoch": 1, "train_loss": 1.0, "valid_loss": 1.0, "valid_top1": 50, "valid_top3": 80,
         "valid_top5": 90, "checkpoint": "epoch_1.pth", "overfit": False},
        {"epoch": 2, "train_loss": 0.2, "valid_loss": 0.9, "valid_top1": 70, "valid_top3": 90,
         "valid_top5": 95, "checkpoint": "epoch_2.pth", "overfit": True},
    ]
    run = tmp_path / "run"
    run.mkdir()
    for row in history:
        (run / row["checkpoint"]).write_bytes(b"")
    (run / "training_logs.txt").write_text("".join(json.dumps(r) + "\n" for r in history))
    row = grid.summarize({"config": "x"}, history, run)
    assert row["table_epoch"] == 1 and row["top1"] == 50 and row["halted_at"] == 2
    assert row["best_checkpoint"] == str(run / "epoch_1.pth")


@pytest.mark.real
def test_real_smoke(flowers_jpg, weights_path, tmp_path):
    """A few real Flower-17 images through the real VGG16: cache, 2 epochs, evaluate."""
    from PIL import Image


    data_dir = make_dataset(tmp_path / "data", per_class=4, copies=1, size=96)
    for k, number in enumerate([1, 2, 3, 4, 81, 82, 83, 84, 161, 162, 163, 164]):
        image = Image.open(flowers_jpg / f"image_{number:04d}.jpg").convert("RGB")
        image.resize((96, 96)).save(Path(data_dir) / "auged" / f"image_{k + 1:04d}_0.jpg")
    run_dir, log = _train((data_dir, str(weights_path)), tmp_path / "model", "-e", "2")
    assert all(row["valid_loss"] == row["valid_loss"] for row in log)  # finite, not NaN
    code, result = run_cli(evaluate_cli, ["-d", str(run_dir), "--data-dir", data_dir,
                                      "--num-workers", "0"])
    assert code is None and result["epochs"][0]["top5"] == 100.0  # 3 classes


def test_unwritable_output_dir_fails_before_training(setup, tmp_path, capsys):
    data_dir, weights = setup
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, _ = run_cli(main_cli, ["--data-dir", data_dir, "--backbone-weights", weights,
                             "--output-dir", str(blocker / "runs")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: cannot write to --output-dir") and "\n" not in err
    assert blocker.read_text() == "not a folder"


def test_writable_check_leaves_nothing_behind(tmp_path):
    core.check_writable_dir(tmp_path / "a" / "b")
    assert not (tmp_path / "a").exists()
