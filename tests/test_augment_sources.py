"""augment.py on sources that used to go wrong without a word (issue 40): 16-bit grey images
(defect 2), an Oxford-named file beside class folders (defect 3), broken symbolic links and link
loops (defect 14)."""

import os

import cv2
import numpy as np
import pytest
from PIL import Image
from training_data import make_folder_dataset

import augment
from flowercam import core
from flowercam.data import dataset

GRADIENT = np.linspace(0, 1, 40 * 30).reshape(30, 40)  # dark at the top, bright at the bottom


def run_error(capsys, source, data):
    argv = ["--source", str(source), "--data-dir", str(data), "--size", "32", "--copies", "1",
            "--num-workers", "1"]
    with pytest.raises(SystemExit) as exc:
        core.run_main(augment.main, augment.get_args_parser(), argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.splitlines()[-1].startswith("error: "), err
    assert not data.exists()
    return err.splitlines()[-1]


def save_16_bit_png(path):
    Image.fromarray((GRADIENT * 65535).astype(np.uint16)).save(path)  # mode I;16


def save_16_bit_tiff_big_endian(path):
    big_endian = (GRADIENT * 65535).astype(">u2")
    Image.frombytes("I;16B", (40, 30), big_endian.tobytes()).save(path)


def save_32_bit_int_tiff(path):
    Image.fromarray((GRADIENT * 65535).astype(np.int32)).save(path)  # mode I, 16-bit values


def save_float_tiff(path):
    Image.fromarray(GRADIENT.astype(np.float32)).save(path)  # mode F in 0..1


def save_float_tiff_any_range(path):
    Image.fromarray((GRADIENT * 3000 - 1000).astype(np.float32)).save(path)  # stretched


def save_48_bit_rgb_png(path):
    grey = (GRADIENT * 65535).astype(np.uint16)
    cv2.imwrite(str(path), np.stack([grey] * 3, axis=-1))


@pytest.mark.parametrize("save", [save_16_bit_png, save_16_bit_tiff_big_endian,
                                  save_32_bit_int_tiff, save_float_tiff,
                                  save_float_tiff_any_range, save_48_bit_rgb_png],
                         ids=lambda f: f.__name__[len("save_"):])
def test_high_bit_depth_images_keep_their_grey_levels(tmp_path, save):
    """Defect 2: Pillow's RGB conversion clips 16-bit values (every pixel 255, a white image)."""
    path = tmp_path / ("image.png" if "png" in save.__name__ else "image.tif")
    save(path)
    pixels = np.asarray(dataset.open_rgb(path), dtype=np.float64)
    expected = np.rint(GRADIENT * 255)
    assert pixels.shape == (30, 40, 3) and (pixels == pixels[..., :1]).all()
    assert np.abs(pixels[..., 0] - expected).max() <= 1


def test_a_16_bit_grey_source_image_is_augmented_as_it_looks(tmp_path):
    source = make_folder_dataset(tmp_path / "src", classes=("a", "b"), per_class=4)
    save_16_bit_png(source / "a" / "grey.png")
    data = tmp_path / "data"
    augment.main(augment.get_args_parser().parse_args(
        ["--source", str(source), "--data-dir", str(data), "--size", "40", "--copies", "1",
         "--num-workers", "1"]))
    copy = np.asarray(Image.open(data / "auged" / "grey_0.jpg"), dtype=np.float64)
    assert copy[:5].mean() < 40 and copy[-5:].mean() > 215  # a gradient, not a white square


def test_an_oxford_named_file_beside_class_folders_is_refused(tmp_path, capsys):
    """Defect 3: image_0161.jpg at the root switched the source to Flower-17's layout (its
    classes, the class folders' images dropped)."""
    source = make_folder_dataset(tmp_path / "src", classes=("a", "b"), per_class=4)
    Image.new("RGB", (40, 30), (9, 9, 9)).save(source / "image_0161.jpg")
    err = run_error(capsys, source, tmp_path / "data")
    assert "both Oxford-named images (image_0161.jpg) and class folders (a, b)" in err


def test_broken_links_and_link_loops_are_named(tmp_path, capsys):
    """Defect 14: they were skipped without a word."""
    source = make_folder_dataset(tmp_path / "src", classes=("a", "b"), per_class=4)
    os.symlink(tmp_path / "gone.jpg", source / "a" / "gone.jpg")
    os.symlink("loop.jpg", source / "b" / "loop.jpg")  # points at itself
    err = run_error(capsys, source, tmp_path / "data")
    assert "gone.jpg" in err and "loop.jpg" in err and "broken symbolic link" in err
    (source / "a" / "gone.jpg").unlink()
    (source / "b" / "loop.jpg").unlink()
    os.symlink(tmp_path / "nowhere", source / "c")  # a class folder gone
    err = run_error(capsys, source, tmp_path / "data")
    assert "broken symbolic link(s)" in err and ": c;" in err
    (source / "c").unlink()
    (source / "masks").mkdir()
    Image.new("L", (40, 30), 0).save(source / "masks" / "a_00.png")
    os.symlink(tmp_path / "gone.png", source / "masks" / "a_01.png")
    err = run_error(capsys, source, tmp_path / "data")
    assert "a_01.png" in err and "broken symbolic link" in err
