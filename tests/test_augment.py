"""augment.py on tiny synthetic datasets: layouts, copies, determinism, resume, errors, download."""

import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from PIL import Image
from training_data import REPO, make_oxford_dataset, synthetic_image

import augment
from flowercam import core
from flowercam.core import UserError
from flowercam.data import dataset, download, prepare


def run(source, data_dir, *extra, copies=3, size=32, workers=1):
    argv = ["--data-dir", str(data_dir), "--copies", str(copies), "--size", str(size),
            "--num-workers", str(workers), *extra]
    if source is not None:
        argv += ["--source", str(source)]
    return augment.main(augment.get_args_parser().parse_args(argv))


def run_error(capsys, *args, **kwargs):
    """Run through run_main like the CLI; returns the one stderr line after exit code 2."""
    argv = ["--copies", "2", "--size", "32", "--num-workers", "1", *map(str, args)]
    with pytest.raises(SystemExit) as exc:
        core.run_main(augment.main, augment.get_args_parser(), argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ")
    return err


def file_bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir())}


def test_folder_layout(folder_dataset, tmp_path):
    data = tmp_path / "data"
    run(folder_dataset, data)
    index = json.loads((data / "index.json").read_text())
    assert index["dataset"] == "pets" and index["classes"] == ["cat", "dog", "fox"]
    assert (data / "labels.txt").read_text().split() == ["cat", "dog", "fox"]
    assert len(index["images"]) == 18 and all(Path(im["source"]).is_absolute()
                                              for im in index["images"])
    assert {im["id"]: im["label"] for im in index["images"]}["dog_03"] == 1
    files = sorted((data / "auged").iterdir())
    assert len(files) == 18 * 3 and (data / "auged" / "fox_05_2.jpg").exists()
    assert all(Image.open(p).size == (32, 32) and Image.open(p).mode == "RGB" for p in files)
    assert json.loads((data / "augment.json").read_text()) == {
        "copies": 3, "size": 32, "seed": 0, "complete": True}
    splits = json.loads((data / "splits.json").read_text())
    assert splits["source"] == "generated" and set(splits["splits"]) == {"1", "2", "3"}


def test_oxford_layout(oxford_dataset, tmp_path):
    data = tmp_path / "data"
    run(oxford_dataset, data, copies=2)
    index = json.loads((data / "index.json").read_text())
    assert index["dataset"] == "flowers17" and index["classes"] == prepare.FLOWER17_CLASSES
    labels = {im["id"]: im["label"] for im in index["images"]}
    assert len(labels) == 18 and labels["image_0001"] == 0 and labels["image_0166"] == 2
    assert len(list((data / "auged").glob("image_0081_*.jpg"))) == 2


def test_copies_are_augmented(folder_dataset, tmp_path):
    run(folder_dataset, tmp_path / "data", copies=4, size=40)
    auged = tmp_path / "data" / "auged"
    resized = Image.open(folder_dataset / "cat" / "cat_00.jpg").convert("RGB").resize((40, 40))
    copy0 = Image.open(auged / "cat_00_0.jpg")
    diff0 = sum(abs(a - b) for a, b in zip(copy0.tobytes(), resized.tobytes(), strict=True))
    assert diff0 / len(resized.tobytes()) < 6  # copy 0 = plain resize (up to JPEG loss)
    copies = [(auged / f"cat_00_{k}.jpg").read_bytes() for k in range(4)]
    assert len(set(copies)) == 4


def test_same_bytes_any_workers_and_after_resume(folder_dataset, tmp_path):
    run(folder_dataset, tmp_path / "one", workers=1, size=48)
    run(folder_dataset, tmp_path / "two", workers=2, size=48)
    expected = file_bytes(tmp_path / "one" / "auged")
    assert file_bytes(tmp_path / "two" / "auged") == expected
    # interrupted run: only part of the images done, some of their copies lost
    run(folder_dataset, tmp_path / "three", "--limit-per-class", "2", workers=2, size=48)
    for name in ("cat_00_1.jpg", "dog_01_0.jpg", "dog_01_2.jpg"):
        (tmp_path / "three" / "auged" / name).unlink()
    run(folder_dataset, tmp_path / "three", workers=2, size=48)
    assert file_bytes(tmp_path / "three" / "auged") == expected
    assert (tmp_path / "three" / "splits.json").read_bytes() == (
        tmp_path / "one" / "splits.json").read_bytes()


def test_rerun_skips_finished(folder_dataset, tmp_path, capsys):
    run(folder_dataset, tmp_path / "data")
    stamp = {p: p.stat().st_mtime_ns for p in (tmp_path / "data" / "auged").iterdir()}
    run(None, tmp_path / "data")  # no --source: reuses the recorded one, no download
    assert "(0 new files)" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "data" / "auged").iterdir()} == stamp


def test_other_seed_in_same_data_dir_refused(folder_dataset, tmp_path, capsys):
    run(folder_dataset, tmp_path / "data", copies=2)
    err = run_error(capsys, "--source", folder_dataset, "--data-dir", tmp_path / "data",
                    "--seed", "1")
    assert "--seed 0" in err


def test_corrupt_files_listed_no_output(folder_dataset, tmp_path, capsys):
    (folder_dataset / "dog" / "broken.jpg").write_bytes(b"not an image at all")
    good = (folder_dataset / "cat" / "cat_00.jpg").read_bytes()
    (folder_dataset / "cat" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    err = run_error(capsys, "--source", folder_dataset, "--data-dir", tmp_path / "data")
    assert "2 unreadable" in err and "dog/broken.jpg" in err and "cat/truncated.jpg" in err
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())


def test_empty_folder_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    err = run_error(capsys, "--source", tmp_path / "empty", "--data-dir", tmp_path / "data")
    assert "no images found" in err and not (tmp_path / "data").exists()
    (tmp_path / "empty" / "roses").mkdir()
    err = run_error(capsys, "--source", tmp_path / "empty", "--data-dir", tmp_path / "data")
    assert "roses" in err and not (tmp_path / "data").exists()


def test_cli_error_has_no_traceback(folder_dataset, tmp_path):
    (folder_dataset / "fox" / "notes.jpg").write_text("hello")
    command = [sys.executable, str(REPO / "augment.py"), "--source", str(folder_dataset),
               "--data-dir", str(tmp_path / "data"), "--num-workers", "1"]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "fox/notes.jpg" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "LA", "I;16"])
def test_image_modes_become_rgb(tmp_path, mode):
    source = tmp_path / "modes"
    for label, name in enumerate(("a", "b")):
        (source / name).mkdir(parents=True)
        for i in range(2):
            image = synthetic_image(label, i).convert(mode)
            image.save(source / name / f"{name}{i}.{'jpg' if mode in ('L', 'CMYK') else 'png'}")
    run(source, tmp_path / "data", copies=2)
    for path in (tmp_path / "data" / "auged").iterdir():
        with Image.open(path) as im:
            assert im.mode == "RGB" and im.size == (32, 32)


def test_download_failure_one_line(tmp_path, capsys):
    err = run_error(capsys, "--data-dir", tmp_path / "data", "--base-url", "http://127.0.0.1:9/")
    assert "download of http://127.0.0.1:9/datasplits.mat failed" in err and "--source" in err
    assert not list((tmp_path / "data").glob("datasplits.mat*"))


def make_mirror(mirror, mat_bytes):
    """A file:// stand-in for the Oxford page (no internet here): 17flowers.tgz + datasplits.mat."""
    make_oxford_dataset(mirror / "src", classes=2, per_class=4)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(mirror / "src" / "jpg", arcname="jpg")
    (mirror / "17flowers.tgz").write_bytes(buffer.getvalue())
    shutil.rmtree(mirror / "src")
    (mirror / "datasplits.mat").write_bytes(mat_bytes)
    return mirror.as_uri() + "/"


def test_download_wrong_md5(tmp_path):
    url = make_mirror(tmp_path / "mirror", b"fake")
    with pytest.raises(UserError, match="md5"):
        run(None, tmp_path / "data", "--base-url", url)
    assert not list((tmp_path / "data").glob("datasplits.mat*"))


def test_download_extract_and_official_splits(tmp_path, monkeypatch):
    scipy_io = pytest.importorskip("scipy.io")
    mat = io.BytesIO()
    numbers = {"trn": [1, 2, 81, 82], "val": [3, 83], "tst": [4, 84]}
    scipy_io.savemat(mat, {f"{k}{s}": v for k, v in numbers.items() for s in "123"})
    url = make_mirror(tmp_path / "mirror", mat.getvalue())
    monkeypatch.setattr(download, "SPLITS_MD5", hashlib.md5(mat.getvalue()).hexdigest())
    data = tmp_path / "data"
    run(None, data, "--base-url", url, copies=2)
    assert len(list((data / "jpg").glob("image_*.jpg"))) == 8
    assert len(list((data / "auged").iterdir())) == 16
    splits = json.loads((data / "splits.json").read_text())
    assert splits["source"] == "datasplits.mat"
    assert splits["splits"]["2"]["valid"] == ["image_0003", "image_0083"]


def test_same_names_in_two_classes_and_exif(tmp_path, capsys):
    source = tmp_path / "src"
    for label, name in enumerate(("a", "b")):
        (source / name).mkdir(parents=True)
        synthetic_image(label, 0).save(source / name / "x.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees for display
    synthetic_image(1, 1, size=(40, 20)).save(source / "b" / "tall.jpg", exif=exif)
    # a path with ".." names the same source on a rerun
    run(tmp_path / "src" / ".." / "src", tmp_path / "data", copies=1, size=40)
    run(source, tmp_path / "data", copies=1, size=40)
    index = json.loads((tmp_path / "data" / "index.json").read_text())
    assert [im["id"] for im in index["images"]] == ["a_x", "b_tall", "b_x"]
    assert index["source"] == str(source)
    assert dataset.open_rgb(source / "b" / "tall.jpg").size == (20, 40)
    synthetic_image(0, 1).save(source / "a" / "x.png")
    err = run_error(capsys, "--source", source, "--data-dir", tmp_path / "other")
    assert "differ only by extension" in err and "a/x.png" in err


def test_bad_datasplits_mat_stops_before_output(oxford_dataset, tmp_path, capsys):
    (oxford_dataset / "datasplits.mat").write_bytes(b"junk")
    err = run_error(capsys, "--source", oxford_dataset, "--data-dir", tmp_path / "data")
    assert "datasplits.mat" in err and ("scipy" in err or "unreadable" in err)
    assert not (tmp_path / "data").exists()
