"""Issue #40: a run remembers what it was made with, and whatever is read back from disk is
checked when read (one line naming the file and the field); #37: typed checkpoint settings."""

import dataclasses
import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from mask_data import flowers17_masks
from training_data import make_dataset, random_weights, run_cli, synthetic_image, trained_run

import evaluate as evaluate_cli
import grid as grid_cli
import inference as inference_cli
import main as main_cli
import models as models_cli
from flowercam.core import UserError
from flowercam.metrics import measuring
from flowercam.model import checkpoints, heads, vgg
from flowercam.train import runs, training

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "model" / "reference" / "CAM_lr0.0001_epoch6.pth"


# ---------------------------------------------------------------- #37 typed settings


def test_settings_are_typed_with_every_field_present():
    s = training.make_settings("CAM", "sigmoid", ["a", "b"], 64, "id")
    # cut None: the backbone's default cut (VGG16's pool5), checked when the backbone loads
    assert isinstance(s, heads.HeadSettings) and s.normalize_by is None and s.cut is None
    assert set(s.to_dict()) == {f.name for f in dataclasses.fields(heads.HeadSettings)}
    assert heads.HeadSettings.from_dict(s.to_dict()) == s
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.num_classes = 3


def test_the_reference_checkpoint_loads_with_defaults_filled():
    """model/reference's checkpoint predates cut, backbone and backbone_weights_id."""
    raw = torch.load(REFERENCE, weights_only=True)["settings"]
    assert "cut" not in raw and raw["backbone"].startswith("vgg16-file-")
    _, s, _ = checkpoints.load_checkpoint(REFERENCE)
    assert (s.model_type, s.num_classes, s.input_size, s.cut) == ("CAM", 17, 256, None)
    assert (s.backbone, s.backbone_id, s.backbone_weights_id) == ("vgg16", raw["backbone"], None)
    old_recam = {"model_type": "ReCAM", "num_classes": 2}  # normalize_by missing: minmax
    assert heads.HeadSettings.from_dict(old_recam).normalize_by == "minmax"


GOOD = training.make_settings("ReCAM", "relu", ["a", "b"], 64, "id").to_dict()
BAD = [("model_type", "X"), ("num_classes", 0), ("num_classes", "2"), ("num_classes", True),
       ("num_classes", 3), ("class_names", "ab"), ("class_names", [1, 2]), ("input_size", 0),
       ("input_size", -5), ("input_size", 64.0), ("normalize_by", "abc"), ("cut", ""),
       ("backbone", 3), ("backbone_id", 5), ("backbone_weights_id", "abc"),
       ("recam_lambda", 1.0)]


@pytest.mark.parametrize("field,value", BAD, ids=[f"{f}={v!r}" for f, v in BAD])
def test_a_wrong_field_is_one_line_naming_the_file_and_field(tmp_path, field, value):
    path = tmp_path / "epoch_1.pth"
    settings = heads.HeadSettings.from_dict(GOOD)
    checkpoints.save_checkpoint(path, heads.build_head(settings), settings)
    torch.save({**torch.load(path, weights_only=True), "settings": {**GOOD, field: value}}, path)
    with pytest.raises(UserError) as err:
        checkpoints.load_checkpoint(path)
    assert str(path) in str(err.value) and field in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("settings", ["CAM", None, [1], 3.5, {"model_type": "CAM"},
                                      {**GOOD, "extra": 1}])
def test_settings_that_are_not_a_settings_mapping_are_refused(tmp_path, settings):
    path = tmp_path / "epoch_1.pth"
    good = heads.HeadSettings.from_dict(GOOD)
    checkpoints.save_checkpoint(path, heads.build_head(good), good)
    torch.save({**torch.load(path, weights_only=True), "settings": settings}, path)
    with pytest.raises(UserError, match=f"checkpoint {path} settings"):
        checkpoints.load_checkpoint(path)


# ---------------------------------------------------------------- shared tiny run


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 2-epoch CAM run of main.py on 3 synthetic classes (32 px, random backbone weights)."""
    root = tmp_path_factory.mktemp("records")
    data_dir, weights, run_dir = trained_run(root, 2, 2, "-l", "1e-3")
    return {"root": root, "data": data_dir, "weights": weights, "run": Path(run_dir)}


def copy_run(tiny, tmp_path) -> Path:
    run = tmp_path / tiny["run"].name
    shutil.copytree(tiny["run"], run)
    return run


def one_line_exit_2(module, argv, capsys, *named):
    """Runs module's main(argv) as the command does: exit 2, one line on stderr naming `named`."""
    capsys.readouterr()
    code, _ = run_cli(module, [str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for thing in named:
        assert str(thing) in err, err
    return err


# ---------------------------------------------------------------- defect 9: non-finite weights


def _spoil(path, how):
    ckpt = torch.load(path, weights_only=True)
    weight = ckpt["state_dict"]["fc.weight"]
    ckpt["state_dict"]["fc.weight"] = (weight * 1e38 if how == "overflow"
                                       else torch.full_like(weight, float(how)))
    torch.save(ckpt, path)


@pytest.mark.parametrize("how", ["nan", "inf", "overflow"])
def test_non_finite_weights_are_refused_at_load(tiny, tmp_path, capsys, how):
    """Defect 9: `evaluate.py -d RUN` printed 'loss nan' and named the NaN epoch the figures'
    checkpoint; cam-metrics wrote a table of NaN."""
    run = copy_run(tiny, tmp_path)
    bad = run / "epoch_2.pth"
    _spoil(bad, how)
    common = ["--data-dir", tiny["data"], "--backbone-weights", tiny["weights"],
              "--num-workers", "0"]
    one_line_exit_2(evaluate_cli, ["-d", run, *common], capsys, bad, "fc.weight")
    one_line_exit_2(evaluate_cli, ["cam-metrics", "--checkpoint", bad, "--limit", "2",
                                   "--figures", "localization", "--output-dir", tmp_path / "o",
                                   *common], capsys, bad)
    assert not (tmp_path / "o" / "cam_metrics.json").exists()


def test_non_finite_backbone_weights_are_refused(tmp_path):
    sd = torch.load(random_weights(tmp_path / "w.pth"), weights_only=True)
    sd["0.weight"][0, 0, 0, 0] = float("nan")
    torch.save(sd, tmp_path / "w.pth")
    with pytest.raises(UserError, match=f"backbone weights {tmp_path / 'w.pth'} hold non-finite"):
        vgg.load_backbone(str(tmp_path / "w.pth"))


# ---------------------------------------------------------------- defect 10: the damaged corpus
# Every kind of file the toolkit reads back, damaged: wrong types, missing keys, out-of-range
# numbers, truncation. Each through the real command: one line naming the file, exit 2.


def _truncate(path):
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])


def _edit_json(path, change):
    path = Path(path)
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))


CHECKPOINT_CORPUS = {
    "settings-a-string": lambda c: c.update(settings="CAM"),
    "settings-none": lambda c: c.update(settings=None),
    "no-settings": lambda c: c.pop("settings"),
    "no-model-type": lambda c: c["settings"].pop("model_type"),
    "input-size-0": lambda c: c["settings"].update(input_size=0),
    "input-size-negative": lambda c: c["settings"].update(input_size=-64),
    "num-classes-a-string": lambda c: c["settings"].update(num_classes="3"),
    "class-names-short": lambda c: c["settings"].update(class_names=["a"]),
    "cut-unknown": lambda c: c["settings"].update(cut=7),
    "no-state-dict": lambda c: c.pop("state_dict"),
    "state-dict-a-list": lambda c: c.update(state_dict=[1, 2]),
    "weight-an-int-tensor": lambda c: c["state_dict"].update(
        {"fc.weight": c["state_dict"]["fc.weight"].long()}),
}


@pytest.mark.parametrize("damage", [*CHECKPOINT_CORPUS, "truncated"])
def test_damaged_checkpoints_are_one_line(tiny, tmp_path, capsys, damage):
    path = tmp_path / "epoch_1.pth"
    shutil.copy(tiny["run"] / "epoch_1.pth", path)
    if damage == "truncated":
        _truncate(path)
    else:
        ckpt = torch.load(path, weights_only=True)
        CHECKPOINT_CORPUS[damage](ckpt)
        torch.save(ckpt, path)
    one_line_exit_2(models_cli, ["--checkpoint", path], capsys, path)


CONFIG_CORPUS = {
    "lr-a-string": lambda c: c.update(lr="abc"),
    "lr-negative": lambda c: c.update(lr=-1e-4),
    "lr-zero": lambda c: c.update(lr=0),
    "epochs-zero": lambda c: c.update(epochs=0),
    "epochs-a-float": lambda c: c.update(epochs=2.5),
    "batch-size-a-string": lambda c: c.update(batch_size="8"),
    "seed-null": lambda c: c.update(seed=None),
    "split-7": lambda c: c.update(split=7),
    "data-dir-a-number": lambda c: c.update(data_dir=5),
    "no-cache-a-string": lambda c: c.update(no_cache="yes"),
    "precision-unknown": lambda c: c.update(precision="fp8"),
    "model-type-unknown": lambda c: c.update(model_type="X"),
    "no-lr": lambda c: c.pop("lr"),
    "no-split": lambda c: c.pop("split"),
    "settings-a-string": lambda c: c.update(settings="abc"),
    "settings-input-size-0": lambda c: c["settings"].update(input_size=0),
    "a-list": None,
}


@pytest.mark.parametrize("damage", [*CONFIG_CORPUS, "truncated"])
def test_damaged_run_configs_are_one_line(tiny, tmp_path, capsys, damage):
    """Was: --resume of a config.json with "lr": "abc" or a negative lr: TypeError in Adam."""
    run = copy_run(tiny, tmp_path)
    config = run / "config.json"
    if damage == "truncated":
        _truncate(config)
    elif damage == "a-list":
        config.write_text("[1, 2]")
    else:
        _edit_json(config, CONFIG_CORPUS[damage])
    one_line_exit_2(main_cli, ["--resume", run], capsys, config)
    if damage == "no-lr":  # evaluating a run needs no lr
        return
    one_line_exit_2(evaluate_cli, ["-d", run, "--data-dir", tiny["data"], "--num-workers", "0"],
                    capsys, config)


def test_a_run_config_of_main_py_s_defaults_is_read_back(tiny, tmp_path, capsys):
    """main.py's default cut is None (the backbone's own); config.json records it as null, and
    evaluate.py -d / main.py --resume read it back (it was refused as "cut must be one of ...")."""
    run = copy_run(tiny, tmp_path)
    _edit_json(run / "config.json", lambda c: c.update(cut=None))
    assert json.loads((run / "config.json").read_text())["cut"] is None
    code, _ = run_cli(evaluate_cli, ["-d", str(run), "--data-dir", str(tiny["data"]),
                                     "--num-workers", "0"])
    assert code is None, capsys.readouterr().err


def _rows(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _write_rows(path, rows):
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in rows))


LOG_CORPUS = {
    "no-valid-loss": lambda rows: rows[1].pop("valid_loss"),
    "no-train-loss": lambda rows: rows[0].pop("train_loss"),
    "valid-loss-a-string": lambda rows: rows[1].update(valid_loss="x"),
    "valid-top1-500": lambda rows: rows[0].update(valid_top1=500),
    "epoch-zero": lambda rows: rows[0].update(epoch=0),
    "epoch-a-string": lambda rows: rows[1].update(epoch="2"),
    "epochs-out-of-order": lambda rows: rows.reverse(),
    "overfit-a-string": lambda rows: rows[0].update(overfit="no"),
    "checkpoint-a-path": lambda rows: rows[0].update(checkpoint="../../x.pth"),
    "a-row-a-list": lambda rows: rows.__setitem__(0, [1]),
}


@pytest.mark.parametrize("damage", [*LOG_CORPUS, "truncated"])
def test_damaged_training_logs_are_one_line(tiny, tmp_path, capsys, damage):
    """Was: --resume of a log missing valid_loss on a row: KeyError."""
    run = copy_run(tiny, tmp_path)
    log = run / runs.LOG_NAME
    if damage == "truncated":
        _truncate(log)
    else:
        rows = _rows(log)
        LOG_CORPUS[damage](rows)
        _write_rows(log, rows)
    one_line_exit_2(main_cli, ["--resume", run, "-e", "3"], capsys, log)


STATE_CORPUS = {
    "a-string": lambda s: "abc",
    "empty": lambda s: {},
    "epoch-a-string": lambda s: {**s, "epoch": "2"},
    "epoch-negative": lambda s: {**s, "epoch": -1},
    "no-optimizer": lambda s: {k: v for k, v in s.items() if k != "optimizer"},
    "head-of-another-shape": lambda s: {**s, "head": {"conv.weight": torch.zeros(1)}},
}


@pytest.mark.parametrize("damage", [*STATE_CORPUS, "truncated"])
def test_damaged_resume_states_are_one_line(tiny, tmp_path, capsys, damage):
    run = copy_run(tiny, tmp_path)
    state = run / runs.STATE_NAME
    if damage == "truncated":
        _truncate(state)
    else:
        torch.save(STATE_CORPUS[damage](torch.load(state, weights_only=True)), state)
    one_line_exit_2(main_cli, ["--resume", run, "-e", "3"], capsys, state)


def test_damaged_partial_batches_are_one_line_naming_no_resume(synthetic_run, tmp_path,
                                                               monkeypatch, capsys):
    """Was: a damaged cam_metrics.partial/batch_*.pt: OSError / UnpicklingError, the run stuck
    with no hint of --no-resume."""
    real_batch, calls = measuring._measure_batch, []

    def stopping(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_batch(*args)
    argv = [*metrics_argv(synthetic_run), "--methods", "CAM", "--batch-size", "1",
            "--figures", "localization", "--output-dir", str(tmp_path)]
    monkeypatch.setattr(measuring, "_measure_batch", stopping)
    assert run_cli(evaluate_cli, argv)[0] == 130
    monkeypatch.setattr(measuring, "_measure_batch", real_batch)
    batch = tmp_path / "cam_metrics.partial" / "batch_00000.pt"
    good = batch.read_bytes()
    for damage in (lambda: _truncate(batch), lambda: batch.write_bytes(b"junk" * 10),
                   lambda: torch.save([1, 2], batch), lambda: batch.write_bytes(b"")):
        batch.write_bytes(good)
        damage()
        err = one_line_exit_2(evaluate_cli, argv, capsys, batch)
        assert "--no-resume" in err
    assert run_cli(evaluate_cli, [*argv, "--no-resume"])[0] is None


TAU_CORPUS = {
    "tau-a-string": lambda r: r["methods"]["CAM"]["overall"]["oracle_tau"]["miou"].update(
        tau="abc"),
    "tau-2": lambda r: r["methods"]["CAM"]["overall"]["oracle_tau"]["max_box_acc"].update(
        tau=2.0),
    "tau-null": lambda r: r["methods"]["CAM"]["overall"]["oracle_tau"]["miou"].update(tau=None),
    "v2-taus-a-number": lambda r: r["methods"]["CAM"]["overall"]["oracle_tau"][
        "max_box_acc_v2"].update(tau=0.5),
    "no-miou": lambda r: r["methods"]["CAM"]["overall"]["oracle_tau"].pop("max_box_acc"),
    "oracle-a-list": lambda r: r["methods"]["CAM"]["overall"].update(oracle_tau=[1]),
    "methods-a-list": lambda r: r.update(methods=[1]),
    "localization-a-string": lambda r: r.update(localization="x"),
    "images-with-mask-a-string": lambda r: r["localization"].update(images_with_mask="3"),
    "options-null": lambda r: r.update(options=None),
}


@pytest.mark.parametrize("damage", [*TAU_CORPUS, "truncated", "a-list"])
def test_damaged_tau_files_are_one_line(synthetic_run, tau_run, tmp_path, capsys, damage):
    """Was: a --tau-from JSON whose tau is "abc": numpy UFuncNoLoopError."""
    data, valid = tau_run
    path = tmp_path / "cam_metrics.json"
    shutil.copy(valid, path)
    if damage == "truncated":
        _truncate(path)
    elif damage == "a-list":
        path.write_text("[1]")
    else:
        _edit_json(path, TAU_CORPUS[damage])
    argv = [*metrics_argv(synthetic_run, data), "--methods", "CAM", "--figures", "localization",
            "--masked-only", "--split-name", "test", "--output-dir", str(tmp_path / "out"),
            "--tau-from", str(path)]
    one_line_exit_2(evaluate_cli, argv, capsys, path)
    assert not (tmp_path / "out" / "cam_metrics.json").exists()


@pytest.fixture(scope="module")
def tau_run(synthetic_run, tmp_path_factory):
    """(data folder with masks, the cam_metrics.json of a masked valid run) of synthetic_run."""
    root = tmp_path_factory.mktemp("tau")
    data = root / "data"
    shutil.copytree(synthetic_run["data"], data)
    flowers17_masks(data / "masks", [f"image_{i:04d}" for i in range(1, 12)])
    argv = [*metrics_argv(synthetic_run, data), "--methods", "CAM", "--figures", "localization",
            "--masked-only", "--split-name", "valid", "--output-dir", str(root / "valid")]
    assert run_cli(evaluate_cli, argv)[0] is None
    return data, root / "valid" / "cam_metrics.json"


def metrics_argv(run, data=None):
    return ["cam-metrics", "-d", str(run["run"]), "--data-dir", str(data or run["data"]),
            "--backbone-weights", run["weights"], "--steps", "3", "--bootstrap", "20",
            "--num-workers", "0"]


@pytest.mark.parametrize("argv", [["--num-images", "0"], ["--size", "-1"], ["--repeats", "0"]])
def test_benchmark_counts_are_checked(capsys, argv):
    """Was: python -m benchmarks.cams --num-images 0: a traceback."""
    from benchmarks import cams as cams_cli
    one_line_exit_2(cams_cli, ["--random-backbone", "--synthetic", *argv], capsys, argv[0])


# ---------------------------------------------------------------- defect 1: the run's data folder


def test_a_run_is_evaluated_and_resumed_on_its_own_data_from_any_folder(tmp_path, monkeypatch,
                                                                        capsys):
    """Was: evaluate.py -d RUN used ./data, and a relative recorded path meant another folder
    from another working directory; --resume trained on another data folder and exited 0."""
    root = tmp_path / "project"
    make_dataset(root / "data", per_class=4, copies=2, size=32)
    weights = random_weights(tmp_path / "w.pth")
    monkeypatch.chdir(root)
    code, run = run_cli(main_cli, ["--data-dir", "data", "--backbone-weights", weights,
                                   "--output-dir", str(tmp_path / "model"), "-e", "1",
                                   "--num-workers", "0", "--batch-size", "4"])
    assert code is None
    config = json.loads((run / "config.json").read_text())
    assert config["data_dir"] == str(root / "data") and len(config["split_sha256"]) == 64
    elsewhere = tmp_path / "elsewhere"
    make_dataset(elsewhere / "data", per_class=2, copies=1, size=32)  # another ./data
    monkeypatch.chdir(elsewhere)
    code, result = run_cli(evaluate_cli, ["-d", str(run), "--backbone-weights", weights,
                                          "--num-workers", "0"])
    assert code is None and result["images"] == 3  # 1 valid image per class of ITS data
    code, _ = run_cli(main_cli, ["--resume", str(run), "-e", "2"])
    assert code is None and len(runs.read_log(run)) == 2
    assert "training CAM on 12 images" in capsys.readouterr().out  # 4 per class x 2 copies / 2


def test_a_changed_gone_or_contradicting_data_folder_is_one_line(tiny, tmp_path, capsys):
    run = copy_run(tiny, tmp_path)
    data = tmp_path / "data"
    shutil.copytree(tiny["data"], data)
    _edit_json(run / "config.json", lambda c: c.update(data_dir=str(data)))
    common = ["--backbone-weights", tiny["weights"], "--num-workers", "0"]
    assert run_cli(evaluate_cli, ["-d", str(run), *common])[0] is None
    other = tmp_path / "other"
    make_dataset(other, per_class=4, copies=2, size=32, seed=1)
    _edit_json(other / "splits.json", lambda s: s["splits"]["1"]["valid"].reverse())
    one_line_exit_2(evaluate_cli, ["-d", run, "--data-dir", other, *common], capsys, other,
                    "is not the one")
    one_line_exit_2(main_cli, ["--resume", run, "--data-dir", other], capsys, other)

    def swap(splits):  # one training image moves to validation
        part = splits["splits"]["1"]
        part["train"][0], part["valid"][0] = part["valid"][0], part["train"][0]
    _edit_json(data / "splits.json", swap)
    one_line_exit_2(evaluate_cli, ["-d", run, *common], capsys, data, "changed since")
    one_line_exit_2(main_cli, ["--resume", run], capsys, data, "changed since")
    shutil.rmtree(data)
    one_line_exit_2(evaluate_cli, ["-d", run, *common], capsys, data, "is gone")
    one_line_exit_2(main_cli, ["--resume", run], capsys, data, "is gone")


# ---------------------------------------------------------------- defect 8: --resume's flags


@pytest.mark.parametrize("argv,named", [
    (["-l", "1e-2"], ["--lr", "0.001", "0.01"]),
    (["-m", "ReCAM", "-n", "relu"], ["--model-type", "CAM", "ReCAM"]),
    (["--cut", "conv5_3"], ["--cut", "backbone's default", "conv5_3"]),  # main.py's cut: None
    (["--batch-size", "2"], ["--batch-size", "4", "2"]),
    (["-s", "9"], ["--seed"]),
    (["--split", "2"], ["--split", "1", "2"]),
    (["--precision", "bf16"], ["--precision", "fp32", "bf16"]),
    (["--no-cache"], ["--no-cache", "False", "True"]),
])
def test_resume_refuses_a_flag_that_contradicts_the_run(tiny, tmp_path, capsys, argv, named):
    """Was: main.py --resume RUN -l 1e-2 (or -m ReCAM on a CAM run, --cut conv5_3 on a pool5
    run) exited 0 and trained the run as it was."""
    run = copy_run(tiny, tmp_path)
    before = (run / runs.LOG_NAME).read_text()
    one_line_exit_2(main_cli, ["--resume", run, "-e", "3", *argv], capsys, run, *named)
    assert (run / runs.LOG_NAME).read_text() == before


def test_resume_accepts_more_epochs_and_the_run_s_own_values(tiny, tmp_path):
    run = copy_run(tiny, tmp_path)
    code, _ = run_cli(main_cli, ["--resume", str(run), "-e", "3", "-l", "1e-3", "-m", "CAM"])
    assert code is None and len(runs.read_log(run)) == 3


# ---------------------------------------------------------------- defect 7: the run's weights


def test_a_run_finds_its_backbone_weights_again_without_the_variable(tmp_path, monkeypatch,
                                                                     capsys):
    """Was: config.json recorded "backbone_weights": null when they came from BACKBONE_WEIGHTS;
    in a new shell without it, evaluate -d RUN and inference -m RUN tried to download VGG16."""
    data = make_dataset(tmp_path / "data", per_class=4, copies=2, size=32)
    weights = Path(random_weights(tmp_path / "w.pth"))
    monkeypatch.setenv("BACKBONE_WEIGHTS", str(weights))
    code, run = run_cli(main_cli, ["--data-dir", data, "--output-dir", str(tmp_path / "model"),
                                   "-e", "1", "--num-workers", "0", "--batch-size", "4"])
    assert code is None
    config = json.loads((run / "config.json").read_text())
    assert config["backbone_weights"] == str(weights)
    assert config["backbone_weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    monkeypatch.delenv("BACKBONE_WEIGHTS")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-torch-cache"))  # nothing to download
    code, result = run_cli(evaluate_cli, ["-d", str(run), "--num-workers", "0"])
    assert code is None and result["images"] == 3
    image = tmp_path / "photo.png"
    synthetic_image(1, 0, (40, 30)).save(image)
    out = tmp_path / "out"
    code, _ = run_cli(inference_cli, ["-m", str(run), "--image", str(image), "--output-dir",
                                      str(out), "--num-workers", "0"])
    assert code is None and any(out.iterdir())
    code, _ = run_cli(main_cli, ["--resume", str(run), "-e", "2"])
    assert code is None
    # the file changed since (the hash tells), or gone: one line naming it
    torch.save({k: v * 2 for k, v in torch.load(weights, weights_only=True).items()}, weights)
    for module, argv in ((evaluate_cli, ["-d", run]), (main_cli, ["--resume", run, "-e", "3"]),
                         (inference_cli, ["-m", run, "--image", image, "--output-dir", out])):
        one_line_exit_2(module, argv, capsys, weights, "changed since")
    weights.unlink()
    one_line_exit_2(evaluate_cli, ["-d", run], capsys, weights, "gone")


# ---------------------------------------------------------------- defect 5: --tau-from's match


def test_tau_from_matches_the_checkpoint_by_content(synthetic_run, tau_run, tmp_path, capsys):
    """Was: a checkpoint replaced at the same path kept the old run's thresholds."""
    data, _ = tau_run
    run = {**synthetic_run, "run": tmp_path / "run"}
    shutil.copytree(synthetic_run["run"], run["run"])
    masked = ["--methods", "CAM", "--figures", "localization", "--masked-only"]
    valid = [*metrics_argv(run, data), *masked, "--split-name", "valid", "--output-dir",
             str(tmp_path / "valid")]
    assert run_cli(evaluate_cli, valid)[0] is None
    tau = tmp_path / "valid" / "cam_metrics.json"
    assert len(json.loads(tau.read_text())["checkpoint_sha256"]) == 64
    test = [*metrics_argv(run, data), *masked, "--split-name", "test", "--tau-from", str(tau)]
    assert run_cli(evaluate_cli, [*test, "--output-dir", str(tmp_path / "same")])[0] is None
    for path in run["run"].glob("epoch_*.pth"):  # retrained in place: same paths, new weights
        ckpt = torch.load(path, weights_only=True)
        ckpt["state_dict"] = {k: v + 0.01 for k, v in ckpt["state_dict"].items()}
        torch.save(ckpt, path)
    one_line_exit_2(evaluate_cli, [*test, "--output-dir", tmp_path / "replaced"], capsys, tau,
                    "another checkpoint")


def test_a_tau_file_without_a_checkpoint_hash_is_matched_by_path_and_says_so(
        synthetic_run, tau_run, tmp_path, capsys):
    """Runs measured before checkpoint_sha256 was recorded (the kept ones under
    output/reference/) still give their tau to the checkpoint they name, with a warning line; one
    that names another file is refused."""
    data, _ = tau_run
    masked = ["--methods", "CAM", "--figures", "localization", "--masked-only"]
    valid = [*metrics_argv(synthetic_run, data), *masked, "--split-name", "valid",
             "--output-dir", str(tmp_path / "valid")]
    assert run_cli(evaluate_cli, valid)[0] is None
    tau = tmp_path / "valid" / "cam_metrics.json"
    old = json.loads(tau.read_text())
    del old["checkpoint_sha256"]
    tau.write_text(json.dumps(old))
    test = [*metrics_argv(synthetic_run, data), *masked, "--split-name", "test", "--tau-from",
            str(tau)]
    capsys.readouterr()
    assert run_cli(evaluate_cli, [*test, "--output-dir", str(tmp_path / "old")])[0] is None
    assert "records no checkpoint hash" in capsys.readouterr().err
    old["checkpoint"] = str(tmp_path / "elsewhere.pth")
    tau.write_text(json.dumps(old))
    one_line_exit_2(evaluate_cli, [*test, "--output-dir", tmp_path / "other"], capsys, tau,
                    "names another file")


# ---------------------------------------------------------------- defect 15: grid.py resumes


def test_an_interrupted_grid_resumes_without_retraining_into_new_folders(tmp_path, monkeypatch):
    """Was: an interrupted grid.py left a folder holding only config.json, and a rerun trained
    every configuration again into new folders."""
    data = make_dataset(tmp_path / "data", per_class=4, copies=2, size=32)
    weights = random_weights(tmp_path / "w.pth")
    model = tmp_path / "model"
    argv = ["--data-dir", data, "--backbone-weights", weights, "--lrs", "1e-3", "-e", "2",
            "--model-types", "CAM", "ReCAM", "--output-dir", str(model), "--results-dir",
            str(tmp_path / "out"), "--num-workers", "0", "--report-facts", "none"]
    calls, train_epoch = [], training.train_epoch

    def stopping(*args):  # Ctrl-C in the second configuration's second epoch
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return train_epoch(*args)
    monkeypatch.setattr(training, "train_epoch", stopping)
    assert run_cli(grid_cli, argv)[0] == 130
    monkeypatch.undo()
    first = sorted(model.iterdir())
    assert len(first) == 2 and all(len(runs.read_log(d)) >= 1 for d in first)
    logs = {d: (d / runs.LOG_NAME).read_bytes() for d in first}
    calls.clear()
    code, results = run_cli(grid_cli, argv)
    assert code is None and len(results) == 4  # CAM + 3 ReCAM normalisers
    assert sorted(model.iterdir())[:2] == first and len(list(model.iterdir())) == 4
    assert (first[0] / runs.LOG_NAME).read_bytes() == logs[first[0]]  # finished: kept as is
    assert len(runs.read_log(first[1])) == 2  # continued after its saved epoch
    again = sorted(model.iterdir())
    assert run_cli(grid_cli, argv)[0] is None and sorted(model.iterdir()) == again


def test_a_grid_stopped_before_a_first_epoch_leaves_no_folder(tmp_path, monkeypatch):
    data = make_dataset(tmp_path / "data", per_class=4, copies=2, size=32)
    argv = ["--data-dir", data, "--backbone-weights", random_weights(tmp_path / "w.pth"),
            "--lrs", "1e-3", "-e", "1", "--model-types", "CAM", "--output-dir",
            str(tmp_path / "model"), "--results-dir", str(tmp_path / "out"), "--num-workers", "0"]

    def stop(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(training, "train_epoch", stop)
    assert run_cli(grid_cli, argv)[0] == 130
    assert not list((tmp_path / "model").iterdir())


# ---------------------------------------------------------------- defect 14: small things


def test_report_facts_given_but_missing_is_one_line(tmp_path, capsys):
    """Was: grid.py --report-facts MISSING turned the report's columns into '-' without a
    word (and trained the whole grid first)."""
    missing = tmp_path / "facts.md"
    one_line_exit_2(grid_cli, ["--report-facts", missing, "--data-dir", tmp_path / "nodata"],
                    capsys, missing, "not found")


def test_config_normalize_by_is_the_head_s(tiny):
    """Was: config.json had "normalize_by": "minmax" at the top and settings.normalize_by null
    for a CAM head."""
    config = json.loads((tiny["run"] / "config.json").read_text())
    assert config["model_type"] == "CAM"
    assert config["normalize_by"] is None and config["settings"]["normalize_by"] is None


RUN_NAME = re.compile(r"TS\d{8}-\d{6}_(CAM|CAM-paper|ReCAM-published|ReCAM_(minmax|sigmoid|relu))")


def test_the_docs_name_runs_as_main_py_writes_them():
    """Was: the docs' examples named runs TS..._CAM_lr0.0001; main.py writes TS..._CAM (the _lr
    tag is grid.py's)."""
    found = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for line in page.read_text().splitlines():
            if "grid" in line:
                continue
            for name in re.findall(r"model/(TS[\w.-]+)", line):
                found.append(name)
                assert RUN_NAME.fullmatch(name), f"{page.name}: {name}"
    assert found


def test_the_reliability_page_names_tests_that_exist():
    """docs/reliability.md lists all 15 defects of #40, each with tests that exist."""
    page = (REPO / "docs" / "reliability.md").read_text()
    rows = re.findall(r"^\| (\d+) \|", page, re.M)
    assert rows == [str(n) for n in range(1, 16)]
    named, current = [], None
    for match in re.finditer(r"`(tests/\w+\.py)(?:::(\w+))?`|`::(\w+)`|`(test_\w+)`", page):
        path, name, more, bare = match.groups()
        current = path or current
        named += [(current, n) for n in (name, more, bare) if n]
    assert len(named) > 30
    for path, name in named:
        assert re.search(rf"^def {name}\(", (REPO / path).read_text(), re.M), f"{path}::{name}"
