"""Output names the file system refuses: said as such in one line (not "choose a writable output
folder"), and names that fit are written even when a temporary name beside them would not."""

import os

import pytest

from flowercam import core


def test_a_250_byte_name_is_written(tmp_path):
    """Was: the temporary file (.tmp-XXXXXXXX + the name) passed 255 bytes: "cannot write ...
    (File name too long): choose a writable output folder"."""
    path = tmp_path / ("m" * 245 + ".json")
    core.atomic_save_json(path, {"a": 1})
    assert path.read_text() and os.listdir(tmp_path) == [path.name]


def test_a_name_too_long_says_so(tmp_path):
    with pytest.raises(core.UserError, match="its name is 300 bytes long, more than the 255") as e:
        core.atomic_save_json(tmp_path / ("n" * 295 + ".json"), {})
    assert "writable" not in str(e.value) and "\n" not in str(e.value)
    assert os.listdir(tmp_path) == []


def test_fit_name_keeps_short_names_and_shortens_long_ones():
    assert core.fit_name("photo", ".png") == "photo.png"
    long = core.fit_name("é" * 200, "_x.png")  # 400 bytes of stem
    assert len(os.fsencode(long)) <= core.NAME_MAX and long.endswith("_x.png")
    assert long.startswith("é" * 10) and "~" in long
    assert core.fit_name("é" * 200 + "a", "_x.png") != long  # distinct stems stay distinct
