"""Issue #22, never silently wrong: a checkpoint never meets the wrong classes, a run's config is
never guessed, a changed source is redone, and every device and path error says what it is."""

import shutil
import signal

import pytest
import torch
from PIL import Image
from training_data import (
    make_dataset,
    make_folder_dataset,
    make_read_only,
    run_cli,
    trained_run,
)

import evaluate as evaluate_cli
import inference as inference_cli
import main as main_cli
from flowercam.backbones import vgg16
from flowercam.data import prepare
from flowercam.model import heads, vgg
from flowercam.train import evaluation, records, runs

SEVENTEEN = tuple(prepare.FLOWER17_CLASSES)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(root, data dir, weights, run dir of a 2-epoch CAM run on classes Red, Green, Blue)."""
    root = tmp_path_factory.mktemp("checks")
    data_dir, weights, run_dir = trained_run(root, 2, 1)
    return root, data_dir, weights, run_dir


def one_line_error(capsys, module, argv):
    code, _ = run_cli(module, argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and "\n" not in err, err
    return err


def copy_run(run, tmp_path):
    return shutil.copytree(run[3], tmp_path / "run")


# ---------------------------------------------------------------- 1, 5: class names


@pytest.fixture(scope="module")
def swapped(run):
    """A data folder with the run's three class names in another order."""
    return make_dataset(run[0] / "swapped", per_class=4, copies=1, size=32,
                        classes=("Green", "Red", "Blue"))


def test_evaluate_refuses_other_class_names(run, swapped, tmp_path, capsys):
    """Was: scored against any data folder with as many classes, exit 0."""
    run_dir = copy_run(run, tmp_path)
    for extra in ([], ["--cam-metrics", "--methods", "CAM"]):
        err = one_line_error(capsys, evaluate_cli, ["-d", str(run_dir), "--data-dir", swapped,
                                                    "--num-workers", "0", *extra])
        assert "'Red' vs 'Green'" in err and "'Blue'" not in err  # says which differ
    assert not (run_dir / "eval.json").exists() and not (run_dir / "cam_metrics.json").exists()


def test_inference_refuses_other_class_names(run, swapped, tmp_path, capsys):
    """Was: the figure labelled with the other folder's names ("true: Green" on a red image)."""
    _, _, weights, run_dir = run
    err = one_line_error(capsys, inference_cli, [
        "-m", str(run_dir), "--data-dir", swapped, "--backbone-weights", weights,
        "--output-dir", str(tmp_path / "out")])
    assert "other classes" in err and not (tmp_path / "out").exists()
    err = one_line_error(capsys, inference_cli, [
        "--compare", f"{run_dir}:CAM", "--data-dir", swapped, "--backbone-weights", weights,
        "--output-dir", str(tmp_path / "out")])
    assert "other classes" in err


def test_inference_three_classes_on_seventeen(run, tmp_path, capsys):
    """Was: IndexError traceback in render.labelled_captions (exit 1)."""
    _, _, weights, run_dir = run
    data17 = make_dataset(tmp_path / "data17", per_class=4, copies=1, size=32,
                          classes=SEVENTEEN)
    err = one_line_error(capsys, inference_cli, [
        "-m", str(run_dir), "--data-dir", data17, "--backbone-weights", weights,
        "--output-dir", str(tmp_path / "out")])
    assert "3 classes" in err and "17" in err


def test_check_classes_accepts_the_same_and_old_checkpoints(run):
    _, data_dir, _, _ = run
    evaluation.check_classes(heads.HeadSettings("CAM", 3, ("Red", "Green", "Blue")), data_dir)
    evaluation.check_classes(heads.HeadSettings("CAM", 3), data_dir)  # no names: the count


# ---------------------------------------------------------------- 2: the run's config


@pytest.mark.parametrize("text", ["{not json", '{"model_type": "CAM"}', "[1, 2]"])
def test_bad_run_config_is_an_error(run, tmp_path, capsys, text):
    """Was: an unparsable config.json silently meant split 1."""
    run_dir = copy_run(run, tmp_path)
    (run_dir / "config.json").write_text(text)
    err = one_line_error(capsys, evaluate_cli, ["-d", str(run_dir), "--data-dir", run[1],
                                                "--num-workers", "0"])
    assert str(run_dir / "config.json") in err and not (run_dir / "eval.json").exists()


def test_no_run_config_means_split_1(run, tmp_path):
    run_dir = copy_run(run, tmp_path)
    (run_dir / "config.json").unlink()
    assert records.run_defaults(run_dir) == (1, None)


# ---------------------------------------------------------------- 3, 6, also: augment.py


def augment(source, data_dir, copies=2):
    return prepare.prepare(data_dir, prepare.AugmentSettings(copies=copies, size=32), source)


def test_a_replaced_source_image_is_redone(tmp_path):
    """Was: "(0 new files)" and the old copies kept after an image was replaced in place."""
    source = make_folder_dataset(tmp_path / "pets")
    data = tmp_path / "data"
    augment(source, data)
    image = source / "cat" / "cat_00.jpg"
    old = (data / "auged" / "cat_00_1.jpg").read_bytes()
    shutil.copy(source / "dog" / "dog_04.jpg", image)  # another picture under the same name
    result = augment(source, data)
    assert result["redone"] == ["cat_00"] and result["written"] == 2
    fresh = tmp_path / "fresh"
    augment(source, fresh)  # what a new data folder makes of the new source
    for k in (0, 1):
        name = f"cat_00_{k}.jpg"
        assert (data / "auged" / name).read_bytes() == (fresh / "auged" / name).read_bytes()
    assert (data / "auged" / "cat_00_1.jpg").read_bytes() != old
    assert augment(source, data)["written"] == 0  # and then it is up to date


@pytest.mark.real
def test_a_replaced_real_image_is_redone(flowers_jpg, tmp_path):
    source = tmp_path / "real"
    for cls, number in (("daffodil", 1), ("iris", 401)):
        (source / cls).mkdir(parents=True)
        shutil.copy(flowers_jpg / f"image_{number:04d}.jpg", source / cls / "a.jpg")
    augment(source, tmp_path / "data", copies=1)
    shutil.copy(flowers_jpg / "image_0002.jpg", source / "daffodil" / "a.jpg")
    assert augment(source, tmp_path / "data", copies=1)["redone"] == ["daffodil_a"]


def test_a_touched_source_image_is_not_redone(tmp_path):
    source = make_folder_dataset(tmp_path / "pets")
    data = tmp_path / "data"
    augment(source, data)
    image = source / "cat" / "cat_00.jpg"
    image.write_bytes(image.read_bytes())  # new mtime, same content
    result = augment(source, data)
    assert result["redone"] == [] and result["written"] == 0


def test_class_folders_with_a_masks_folder(tmp_path):
    """Was: masks/ taken as a class, every id prefixed, no mask matched."""
    source = make_folder_dataset(tmp_path / "pets")
    (source / "masks").mkdir()
    Image.new("L", (40, 30), 1).save(source / "masks" / "cat_02.png")
    result = augment(source, tmp_path / "data")
    assert result["index"]["classes"] == ["cat", "dog", "fox"]
    assert result["index"]["masks"]["count"] == 1 and "cat_02" in {
        im["id"] for im in result["index"]["images"]}


def test_a_class_with_one_image_is_warned_about(tmp_path, capsys):
    source = make_folder_dataset(tmp_path / "pets")
    for extra in sorted((source / "fox").iterdir())[1:]:
        extra.unlink()
    augment(source, tmp_path / "data")
    err = capsys.readouterr().err
    assert "warning: class 'fox' has 1 image(s)" in err and "valid or test" in err
    assert "'cat'" not in err


def worker_sigint(_):
    return signal.getsignal(signal.SIGINT) == signal.SIG_IGN


def test_pool_workers_leave_ctrl_c_to_the_main_process():
    """Was: Ctrl-C during augment sometimes left a lone "Process ForkPoolWorker-N:" line."""
    assert all(prepare.run_pool(worker_sigint, [1, 2, 3, 4], 2, "test"))


# ---------------------------------------------------------------- 7: devices


SCRIPTS_WITH_DEVICE = [main_cli, evaluate_cli, inference_cli]


@pytest.mark.parametrize("device", ["cuda", "cuda:7", "mps", "bogus", ""])
@pytest.mark.parametrize("module", SCRIPTS_WITH_DEVICE, ids=lambda m: m.__name__)
def test_unavailable_device_is_one_line(module, device, capsys):
    """Was: "backbone weights ... do not match VGG16 features (Found no NVIDIA driver ...)"."""
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has that GPU")
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    with pytest.raises(SystemExit) as stop:
        module.get_args_parser().parse_args(["--device", device])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and "\n" not in err and "this machine has cpu" in err


def test_a_device_error_is_not_called_a_weights_mismatch(run, monkeypatch):
    def no_driver(self, *args, **kwargs):
        raise RuntimeError("Found no NVIDIA driver on your system")

    monkeypatch.setattr(vgg.Backbone, "to", no_driver)
    with pytest.raises(RuntimeError, match="NVIDIA"):
        vgg16.load(run[2], "cuda")


# ---------------------------------------------------------------- 8, 9, 10: paths


def no_work(*args, **kwargs):
    raise AssertionError("the work started before the outputs were checked")


def test_evaluate_read_only_run_folder_fails_first(run, tmp_path, capsys, monkeypatch):
    """Was: computed everything, then "choose a writable output folder"; --output-dir refused."""
    run_dir = copy_run(run, tmp_path)
    with monkeypatch.context() as patch:
        patch.setattr(evaluation, "evaluate_run", no_work)
        make_read_only(run_dir, patch)
        err = one_line_error(capsys, evaluate_cli, ["-d", str(run_dir), "--data-dir", run[1]])
    assert "the run folder" in err and "--output-dir" in err
    code, _ = run_cli(evaluate_cli, ["-d", str(run_dir), "--data-dir", run[1],
                                     "--num-workers", "0", "--output-dir", str(tmp_path / "o")])
    assert code is None and (tmp_path / "o" / "eval.json").is_file()
    assert not (run_dir / "eval.json").exists()


def test_garbage_log_line_is_named_before_any_output(run, tmp_path, capsys):
    """Was: eval.json written, then exit 2 with "line 1 column 1"."""
    run_dir = copy_run(run, tmp_path)
    log = run_dir / runs.LOG_NAME
    log.write_text(log.read_text() + "garbage\n")
    err = one_line_error(capsys, evaluate_cli, ["-d", str(run_dir), "--data-dir", run[1]])
    lines = len(log.read_text().splitlines())
    assert f"line {lines} of {log}" in err and "garbage" in err
    assert not (run_dir / "eval.json").exists()


@pytest.mark.parametrize("flag", ["--output-dir", "--save-maps", "--pseudo-masks-dir"])
def test_inference_checks_output_paths_first(run, tmp_path, capsys, monkeypatch, flag):
    """Was: --output-dir an existing file or --save-maps a folder failed after the maps."""
    _, data_dir, weights, run_dir = run
    monkeypatch.setattr(vgg, "load_backbone", no_work)
    target = tmp_path / "taken"
    if flag == "--save-maps":
        target.mkdir()
    else:
        target.write_text("a file")
    err = one_line_error(capsys, inference_cli, [
        "-m", str(run_dir), "--data-dir", data_dir, "--backbone-weights", weights,
        "--output-dir", str(tmp_path / "out"), flag, str(target)])
    assert flag in err and str(target) in err


def test_resume_given_a_file(run, capsys):
    """Was: "cannot write to --output-dir" (no such flag given)."""
    run_dir = run[3]
    err = one_line_error(capsys, main_cli, ["--resume", str(run_dir / "config.json")])
    assert "--output-dir" not in err and f"--resume {run_dir}" in err


def test_evaluate_given_a_checkpoint(run, capsys):
    """Was: "model directory ... not found" of a file that exists."""
    checkpoint = runs.best_checkpoint(run[3])
    err = one_line_error(capsys, evaluate_cli, ["-d", str(checkpoint), "--data-dir", run[1]])
    assert "is a checkpoint" in err and str(run[3]) in err


def test_two_trainers_of_one_run_lock_each_other(run, tmp_path, capsys):
    run_dir = copy_run(run, tmp_path)
    with runs.training_lock(run_dir):  # another process training it
        err = one_line_error(capsys, main_cli, ["--resume", str(run_dir), "-e", "3",
                                                "--num-workers", "0"])
    assert "being trained by another process" in err
    assert len(runs.read_log(run_dir)) == 2  # untouched
    code, _ = run_cli(main_cli, ["--resume", str(run_dir), "-e", "3", "--num-workers", "0"])
    assert code is None and len(runs.read_log(run_dir)) == 3

