"""Issue #11, large images: accepted beyond Pillow's decompression-bomb limit up to --max-pixels
(JPEGs decoded at a reduced scale), refused above it with one line saying why.

Pillow's limit is lowered here (monkeypatch): small files stand in for a 20000 x 20000 one."""

import pytest
from PIL import Image
from training_data import make_folder_dataset, synthetic_image

import augment
import inference as inference_cli
from flowercam import core
from flowercam.data import dataset, prepare
from flowercam.report import image_files


@pytest.fixture
def low_pillow_limit(monkeypatch):
    """Pillow refuses above 2 x MAX_IMAGE_PIXELS: here 2,000 pixels instead of 179 million."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)


def test_png_beyond_pillow_limit_decodes(tmp_path, low_pillow_limit):
    """Was: a valid 20000x20000 PNG called "unreadable" (Pillow's decompression-bomb error)."""
    path = tmp_path / "big.png"
    synthetic_image(1, 0, (120, 90)).save(path)
    image = dataset.open_rgb(path)
    assert image.size == (120, 90) and image.mode == "RGB"
    assert Image.MAX_IMAGE_PIXELS == 1000  # Pillow's own setting is left as it was
    tensor, _ = dataset.load_image(path, size=32)
    assert tensor.shape == (3, 32, 32)


def test_above_max_pixels_is_one_line(tmp_path):
    path = tmp_path / "big.png"
    synthetic_image(1, 0, (120, 90)).save(path)
    with pytest.raises(core.UserError) as err:
        dataset.open_rgb(path, max_pixels=120 * 90 - 1)
    message = str(err.value)
    assert "120x90" in message and "--max-pixels 10799" in message and "\n" not in message
    assert dataset.open_rgb(path, max_pixels=120 * 90).size == (120, 90)  # the bound is inclusive


def test_large_jpeg_is_decoded_at_the_scale_needed(tmp_path, monkeypatch):
    path = tmp_path / "big.jpg"
    synthetic_image(2, 0, (400, 320)).save(path, quality=95)
    full = dataset.open_rgb(path, size=64)
    assert full.size == (400, 320)  # below the draft threshold: decoded exactly as always
    monkeypatch.setattr(dataset, "DRAFT_ABOVE_PIXELS", 1000)
    reduced = dataset.open_rgb(path, size=64)
    assert reduced.size == (100, 80)  # 1/4: the smallest JPEG scale still >= 64 on both sides
    assert dataset.open_rgb(path).size == (400, 320)  # no size: nothing to reduce to


def test_augment_takes_large_images_and_names_those_above_the_bound(tmp_path, low_pillow_limit,
                                                                    capsys):
    source = make_folder_dataset(tmp_path / "src", per_class=2, size=(80, 60))
    settings = prepare.AugmentSettings(copies=1, size=32)
    result = prepare.prepare(tmp_path / "data", settings, source)
    assert result["written"] == 6
    capsys.readouterr()
    argv = ["--source", str(source), "--data-dir", str(tmp_path / "other"), "--copies", "1",
            "--size", "32", "--num-workers", "1", "--max-pixels", "4000"]
    with pytest.raises(SystemExit) as stop:
        core.run_main(augment.main, augment.get_args_parser(), argv)
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the check's progress bar
    assert stop.value.code == 2 and err.startswith("error: ")
    assert "6 images above --max-pixels 4000" in err and "80x60" in err



def test_inference_takes_max_pixels(tmp_path):
    """inference.py --max-pixels reaches the image reader (a bound below the image: one line)."""
    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "small.png")
    args = inference_cli.get_args_parser().parse_args(["--max-pixels", "100"])
    assert inference_cli.figure_options(args).max_pixels == 100
    with pytest.raises(core.UserError, match="max-pixels 100"):
        image_files.load_items([str(tmp_path / "small.png")], 32, args.max_pixels)
