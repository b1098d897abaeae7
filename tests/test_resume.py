"""An interrupted evaluate.py --cam-metrics resumes to the files of a run without a break
(metrics/resume.py; --sanity's resume is tested in test_sanity_pass.py), and the partial-run
folder itself: settings check, batches read back as saved, --no-resume."""

import dataclasses
import json
import re

import numpy as np
import pytest
import training_data
from mask_data import write_masks
from metrics_run import cli

import evaluate as evaluate_cli
from flowercam.core import UserError
from flowercam.metrics import measuring, registry, resume, runner
from flowercam.metrics.config import MetricsConfig

TIMINGS = ("seconds", "seconds_per_image", "row_seconds_per_image", "tau_seconds",
           "summary_seconds")


def _untimed(folder):
    """cam_metrics.json and cam_metrics.md without their timings."""
    result = json.loads((folder / "cam_metrics.json").read_text())
    for key in TIMINGS:
        result.pop(key, None)
    text = re.sub(r"Seconds per image.*\n", "", (folder / "cam_metrics.md").read_text())
    return json.dumps(result, sort_keys=True), re.sub(r"[0-9.]+ s\b", "", text)


def _argv(run, masks, out, *extra):
    data, weights, run_dir = run
    argv = ["-d", str(run_dir), "--data-dir", data, "--backbone-weights", weights, "--cam-metrics",
            "--steps", "3", "--bootstrap", "50", "--methods", "CAM", "GradCAM", "--batch-size", "1",
            "--perturb-limit", "0", "--split-name", "test", "--masks-dir", str(masks),
            "--ignore-values", "128", "--output-dir", str(out), *extra]
    return evaluate_cli.get_args_parser().parse_args(argv)


def test_an_interrupted_cam_metrics_run_resumes_to_the_files_of_a_run_without_a_break(
        tmp_path, monkeypatch):
    """Stopped in the test pass, then in the tau pass (valid): each rerun measures only the
    batches not saved, and the files equal a run without a break (full's deletion order is all
    ties, drawn from the shared generator: the skipped batches' draws are skipped too)."""
    masks = write_masks(tmp_path / "masks", ["image_0003", "image_0007", "image_0004",
                                             "image_0008"])
    fresh, broken = tmp_path / "fresh", tmp_path / "broken"
    trained = training_data.trained_run(tmp_path, 2, 1)  # scores that move with the pixels
    real_batch, calls = measuring._measure_batch, []

    def run(folder, stop_at=None, *extra):  # -> batches measured; KeyboardInterrupt at stop_at
        calls.clear()

        def counted(*args):
            calls.append(1)
            if len(calls) == stop_at:
                raise KeyboardInterrupt
            return real_batch(*args)
        monkeypatch.setattr(measuring, "_measure_batch", counted)
        evaluate_cli.main(_argv(trained, masks, folder, *extra))
        return len(calls)
    n_batches = run(fresh)
    n_test = json.loads((fresh / "cam_metrics.json").read_text())["n_images"]  # 1 image a batch
    assert n_batches - n_test == 2 and not list(fresh.glob("*.partial"))  # 2 valid masks
    with pytest.raises(KeyboardInterrupt):
        run(broken, 2)
    assert len(list((broken / "cam_metrics.partial").glob("batch_*.pt"))) == 1
    with pytest.raises(UserError, match="other settings .*seed"):  # another seed: refused
        run(broken, None, "-s", "3")
    with pytest.raises(KeyboardInterrupt):
        run(broken, n_test + 1)  # the test pass's other batches, then 1 of the tau pass
    assert len(list((broken / "cam_metrics.partial").glob("batch_*.pt"))) == n_test
    assert len(list((broken / "cam_metrics_tau.partial").glob("batch_*.pt"))) == 1
    assert run(broken) == 1  # the tau pass's last batch
    assert _untimed(broken) == _untimed(fresh)
    assert not list(broken.glob("*.partial"))


def test_a_partial_run_of_another_metrics_version_is_not_resumed(synthetic_run, tmp_path,
                                                                 monkeypatch):
    """Batches measured by other metric code (registry.METRICS_VERSION bumped when a metric
    changes) are refused, never read back as if the current code had measured them."""
    real_batch, calls = measuring._measure_batch, []

    def stopping(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_batch(*args)
    monkeypatch.setattr(measuring, "_measure_batch", stopping)
    cfg = cli(synthetic_run, "--methods", "CAM", "--batch-size", "1", "--output-dir",
              str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        runner.run(cfg)
    assert len(list((tmp_path / "cam_metrics.partial").glob("batch_*.pt"))) == 1
    monkeypatch.setattr(measuring, "_measure_batch", real_batch)
    monkeypatch.setattr(registry, "METRICS_VERSION", registry.METRICS_VERSION + 1)
    with pytest.raises(UserError, match="other settings .*metrics_version"):
        runner.run(cfg)
    assert runner.run(dataclasses.replace(cfg, resume=False))["n_images"] == 3


def test_no_resume_is_the_config_s_resume_in_both_modes(synthetic_run):
    assert cli(synthetic_run).resume and not cli(synthetic_run, "--no-resume").resume
    args = evaluate_cli.get_args_parser().parse_args(["--sanity", "--no-resume"])
    assert not evaluate_cli.metrics_config(args).resume


def test_no_resume_discards_the_partial_run(tmp_path, capsys):
    out = tmp_path / "out"
    key = {"ids": ["a"]}
    cfg = MetricsConfig(data_dir=str(tmp_path))
    ckpt = tmp_path / "epoch_1.pth"
    ckpt.write_bytes(b"weights")
    resume.Partial(out, "sanity", resume.run_settings(cfg, ckpt, {"ids": ["c"]}))
    part = resume.Partial(out, "sanity", resume.run_settings(cfg, ckpt, key))  # no work
    batch = {"per_image": {"CAM": {"data": {"ssim": np.arange(2.0)}}},
             "figure": {("CAM", "data"): np.ones((1, 4, 4), np.float16)}, "seconds": 1.5}
    part.save_batch(0, batch)
    again = resume.Partial(out, "sanity", resume.run_settings(cfg, ckpt, key)).batches()
    assert len(again) == 1 and np.array_equal(again[0]["per_image"]["CAM"]["data"]["ssim"],
                                              np.arange(2.0))
    assert again[0]["figure"][("CAM", "data")].dtype == np.float16
    with pytest.raises(UserError, match="ids"):
        resume.Partial(out, "sanity", resume.run_settings(cfg, ckpt, {"ids": ["b"]}))
    fresh = resume.Partial(out, "sanity", resume.run_settings(cfg, ckpt, {"ids": ["b"]}),
                           resume=False)
    assert fresh.batches() == [] and "discarded" in capsys.readouterr().out


def test_a_partial_run_continues_in_another_clone(tmp_path, monkeypatch):
    """The settings hold no absolute path: a committed partial run fits any clone's command."""
    settings = []
    for clone in ("one", "two"):
        root = tmp_path / clone
        (root / "model").mkdir(parents=True)
        (root / "model" / "epoch_1.pth").write_bytes(b"weights")
        monkeypatch.chdir(root)
        settings.append(resume.run_settings(MetricsConfig(data_dir="./data"), "model/epoch_1.pth",
                                            {"ids": ["a"]}))
    assert settings[0] == settings[1] and settings[0]["data_dir"] == "data"
    assert str(tmp_path) not in json.dumps(settings[0])
    resume.Partial(tmp_path / "out", "cam_metrics", settings[0]).save_batch(0, {"seconds": 1.0})
    assert len(resume.Partial(tmp_path / "out", "cam_metrics", settings[1]).batches()) == 1
