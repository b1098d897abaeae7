"""One mask reader (flowercam/data/masks.py): inference's outlines and evaluate's metrics give the
same verdict on the same mask files; lossy and foreign masks are refused in one line."""

import io

import numpy as np
import pytest
from PIL import Image

from flowercam.core import UserError
from flowercam.data import masks
from flowercam.report import image_files

SIZE = 16


def labels():
    out = np.full((SIZE, SIZE), 3, np.uint8)  # background
    out[4:12, 4:12] = 1  # flower
    out[0] = 0  # unlabelled
    return out


def palette(path):
    image = Image.fromarray(labels(), mode="L").convert("P")
    image.save(path)


def grey(path):
    Image.fromarray(labels(), mode="L").save(path)


def grey_rgb(path):
    Image.fromarray(np.repeat(labels()[..., None], 3, 2)).save(path)


def sixteen_bit(path):
    Image.fromarray(labels().astype(np.uint16)).save(path)


def wrong_size(path):
    Image.fromarray(labels(), mode="L").resize((SIZE * 2, SIZE * 3), Image.NEAREST).save(path)


def colour(path):
    rgb = np.repeat(labels()[..., None], 3, 2)
    rgb[5, 5] = (200, 10, 10)
    Image.fromarray(rgb).save(path)


def jpeg_named_png(path):
    buf = io.BytesIO()
    Image.fromarray(labels() * 80, mode="L").save(buf, format="JPEG", quality=50)
    path.write_bytes(buf.getvalue())


def outline_verdict(folder):
    try:
        fg = image_files.load_masks(folder, ["x/image_0001.jpg"], 1)[0]
    except UserError as err:
        return "error", str(err)
    return "ok", fg


def metrics_verdict(folder):
    spec = masks.resolve_masks("unused", masks_dir=str(folder), mask_values=(1,),
                               ignore_values=(0,))
    try:
        fg, valid, has = masks.batch_masks([("image_0001", "x/image_0001.jpg", 0)], spec, SIZE)
    except UserError as err:
        return "error", str(err)
    return "ok", fg[0]


@pytest.mark.parametrize("write", [palette, grey, grey_rgb, sixteen_bit, wrong_size, colour,
                                   jpeg_named_png], ids=lambda f: f.__name__)
def test_outlines_and_metrics_agree(tmp_path, write):
    write(tmp_path / "image_0001.png")
    (a, fg_a), (b, fg_b) = outline_verdict(tmp_path), metrics_verdict(tmp_path)
    assert a == b, (fg_a, fg_b)
    if a == "ok":
        fg_a = masks.resize_labels(fg_a.astype(np.int64), SIZE).astype(bool)
        assert (fg_a == fg_b).all() and fg_b[4:12, 4:12].all() and fg_b.sum() == 64
    else:
        assert fg_a == fg_b and "image_0001.png" in fg_a


def test_a_lossy_mask_is_refused_naming_the_file(tmp_path):
    jpeg_named_png(tmp_path / "image_0001.png")
    with pytest.raises(UserError, match=r"image_0001.png holds JPEG data, not PNG"):
        masks.read_labels(tmp_path / "image_0001.png")


def test_values_outside_the_declared_ones_are_refused(tmp_path):
    values = labels()
    values[2, 2] = 7  # a value Flower-17's masks never have
    Image.fromarray(values, mode="L").save(tmp_path / "image_0001.png")
    spec = masks.MaskSpec(str(tmp_path), (1,), (0, 5), "data folder", SIZE, (2, 3, 4))
    with pytest.raises(UserError, match=r"values 7 outside the declared \[0, 1, 2, 3, 4, 5\]"):
        masks.batch_masks([("image_0001", "x/image_0001.jpg", 0)], spec, SIZE)
    grey(tmp_path / "image_0001.png")  # the same mask without the stray value is read
    fg = masks.batch_masks([("image_0001", "x/image_0001.jpg", 0)], spec, SIZE)[0]
    assert fg.sum() == 64


def test_copies_find_the_original_images_mask(tmp_path):
    grey(tmp_path / "image_0001.png")
    assert masks.find_mask(tmp_path, "image_0001_3") == tmp_path / "image_0001.png"
    assert masks.find_mask(tmp_path, "x/auged/image_0001_0.jpg") == tmp_path / "image_0001.png"
    assert masks.find_mask(tmp_path, "image_0002_0", "x/image_0002_0.jpg") is None
