"""Issue #11, runs: `main.py --resume RUN` continues an interrupted run with the losses of an
uninterrupted one; leftovers and unlogged checkpoints follow the rule of flowercam/train/runs.py."""

import json
from pathlib import Path

import pytest
from training_data import make_dataset, random_weights, run_cli

import main as main_cli
from flowercam.train import runs, training

NUMBERS = ("train_loss", "valid_loss", "valid_top1", "valid_top3", "valid_top5", "overfit",
           "checkpoint")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    data_dir = make_dataset(root / "data", per_class=4, copies=2, size=32)
    return data_dir, random_weights(root / "w.pth")


def train_argv(setup, out, epochs=4):
    data_dir, weights = setup
    return ["--data-dir", data_dir, "--backbone-weights", weights, "--output-dir", str(out),
            "--num-workers", "0", "--batch-size", "4", "-l", "1e-3", "-e", str(epochs),
            "-s", "3", "-m", "CAM"]


def numbers(rows):
    return [{k: row.get(k) for k in NUMBERS} for row in rows]


def interrupted_run(setup, out, monkeypatch, after_epochs=2):
    """A run stopped (Ctrl-C) inside epoch after_epochs + 1 -> its folder."""
    calls, train_epoch = [], training.train_epoch

    def stopping(*args):
        calls.append(1)
        if len(calls) == after_epochs + 1:
            raise KeyboardInterrupt
        return train_epoch(*args)

    monkeypatch.setattr(training, "train_epoch", stopping)
    code, _ = run_cli(main_cli, train_argv(setup, out))
    monkeypatch.undo()
    assert code == 130
    (run_dir,) = Path(out).iterdir()
    assert len(runs.read_log(run_dir)) == after_epochs
    return run_dir


@pytest.fixture(scope="module")
def uninterrupted(setup, tmp_path_factory):
    code, run_dir = run_cli(main_cli, train_argv(setup, tmp_path_factory.mktemp("whole")))
    log = runs.read_log(run_dir)
    assert code is None and len({row["train_loss"] for row in log}) == 4  # it does learn
    return log


def test_resume_gives_the_uninterrupted_losses(setup, uninterrupted, tmp_path, monkeypatch):
    run_dir = interrupted_run(setup, tmp_path / "model", monkeypatch)
    assert (run_dir / runs.STATE_NAME).is_file()
    code, resumed = run_cli(main_cli, ["--resume", str(run_dir), "--num-workers", "0"])
    assert code is None and Path(resumed) == run_dir
    log = runs.read_log(run_dir)
    assert [r["epoch"] for r in log] == [1, 2, 3, 4]
    assert numbers(log) == numbers(uninterrupted)  # exactly, not approximately
    assert sorted(p.name for p in run_dir.glob("epoch_*.pth")) == sorted(
        r["checkpoint"] for r in uninterrupted if "checkpoint" in r)


def test_resume_discards_what_the_log_lacks(setup, uninterrupted, tmp_path, monkeypatch):
    """Leftover temporaries and a checkpoint without a log row (stopped between the two writes)
    are removed; a log row newer than state.pth is redone."""
    run_dir = interrupted_run(setup, tmp_path / "model", monkeypatch)
    (run_dir / ".tmp-abcdepoch_3.pth").write_bytes(b"half")
    (run_dir / "epoch_9.pth").write_bytes(b"no log row")
    log_lines = (run_dir / runs.LOG_NAME).read_text().splitlines()
    fake = {**json.loads(log_lines[-1]), "epoch": 3, "train_loss": 123.0}
    (run_dir / runs.LOG_NAME).write_text("\n".join([*log_lines, json.dumps(fake)]) + "\n")
    code, _ = run_cli(main_cli, ["--resume", str(run_dir), "--num-workers", "0"])
    assert code is None
    assert not list(run_dir.glob(".tmp-*")) and not (run_dir / "epoch_9.pth").exists()
    assert numbers(runs.read_log(run_dir)) == numbers(uninterrupted)


def test_resume_of_a_run_stopped_in_its_first_epoch(setup, uninterrupted, tmp_path,
                                                    monkeypatch):
    """Stopped before any epoch completed: a new run leaves no folder (nothing to resume)."""
    out = tmp_path / "model"
    calls = []
    monkeypatch.setattr(training, "train_epoch", lambda *a: calls.append(1) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        run_cli(main_cli, train_argv(setup, out))
    assert calls and (not out.exists() or not list(out.iterdir()))


def test_resume_with_more_epochs_extends_the_run(setup, uninterrupted, tmp_path):
    """-e given with --resume extends a finished run: a None default, never compared with the
    default (a 4-epoch run resumed with -e 50 and with the default's value both continue)."""
    code, run_dir = run_cli(main_cli, train_argv(setup, tmp_path / "model", epochs=2))
    assert code is None and len(runs.read_log(run_dir)) == 2
    code, _ = run_cli(main_cli, ["--resume", str(run_dir), "--num-workers", "0", "-e", "4"])
    assert code is None
    assert numbers(runs.read_log(run_dir)) == numbers(uninterrupted)
    code, _ = run_cli(main_cli, ["--resume", str(run_dir), "--num-workers", "0", "-e",
                                 str(main_cli.EPOCHS)])
    assert code is None and len(runs.read_log(run_dir)) > 4
    assert json.loads((run_dir / "config.json").read_text())["epochs"] == 2


def test_resume_needs_a_run_directory(tmp_path, capsys):
    code, _ = run_cli(main_cli, ["--resume", str(tmp_path / "nothing")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "is not a run directory" in err and "\n" not in err
