"""render.py: colormaps, blending, captions and the pixel sizes of every figure layout."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from flowercam.report import fonts, render

T = 64  # tile size used throughout


def tiles(n, size=T, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


# matplotlib's jet (matplotlib/_cm.py _jet_data): piecewise linear (x, value) per channel
JET = {"red": [(0, 0), (0.35, 0), (0.66, 1), (0.89, 1), (1, 0.5)],
       "green": [(0, 0), (0.125, 0), (0.375, 1), (0.64, 1), (0.91, 0), (1, 0)],
       "blue": [(0, 0.5), (0.11, 1), (0.34, 1), (0.65, 0), (1, 0)]}


def test_jet_lut_is_matplotlibs_jet_within_one_level():
    lut = render.jet_lut()
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    x = np.arange(256) / 255
    want = np.stack([np.interp(x, *zip(*JET[c], strict=True)) for c in ("red", "green", "blue")],
                    axis=1) * 255
    assert np.abs(lut - want).max() <= 0.5 + 1e-6  # rounded, not truncated
    assert lut[0].argmax() == 2 and lut[-1].argmax() == 0  # blue at 0, red at 1
    assert lut[128, 1] == 255  # green middle
    # the old hand-written formula (breaks at 1/8s) differs by up to 34 levels, see jet_lut
    old = np.round(np.stack([np.clip(1.5 - np.abs(4 * x - c), 0, 1) for c in (3, 2, 1)], 1) * 255)
    assert 0 < np.abs(lut - old).max() <= 34


def test_colorize_red_puts_map_in_red_channel():
    heat = np.array([[0.0, 0.5], [1.0, 2.0]])
    out = render.colorize(heat, "red")
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    assert out[..., 0].tolist() == [[0, 128], [255, 255]]  # values clipped to [0, 1]
    assert not out[..., 1:].any()
    assert render.colorize(heat, "jet").shape == (2, 2, 3)
    with pytest.raises(ValueError):
        render.colorize(heat, "viridis")


def test_blend_draws_at_the_image_resolution_and_leaves_inputs_alone():
    image = Image.new("L", (50, 30), 100)  # any mode -> RGB
    heat = np.ones((8, 8), np.float32)
    out = render.blend(image, heat, alpha=0.5, colormap="red")
    assert out.shape == (30, 50, 3)
    assert out[0, 0].tolist() == [178, 50, 50]  # 0.5 * 100 + 0.5 * (255, 0, 0)
    assert heat.sum() == 64 and image.mode == "L"


def test_resize_map_is_bilinear_float():
    heat = np.array([[0.0, 1.0]], np.float32)
    out = render.resize_map(heat, (4, 3))
    assert out.shape == (3, 4) and out.dtype == np.float32
    assert 0.0 <= out.min() < out.max() <= 1.0


def test_caption_lines_show_true_label_and_top3():
    top = [("Iris", 0.8), ("Crocus", 0.15), ("Tulip", 0.05)]
    lines = render.caption_lines("Crocus", top)
    assert lines == ["true: Crocus", "1. Iris 80.0%", "2. Crocus 15.0%", "3. Tulip 5.0%"]
    assert render.caption_lines(None, top[:1]) == ["1. Iris 80.0%"]
    assert render.is_correct("Crocus", top) is False
    assert render.is_correct("Iris", top) is True
    assert render.is_correct(None, top) is None


def test_topk_predictions_are_softmax_sorted():
    top = render.topk_predictions(np.array([0.0, 2.0, 1.0, -1.0]), ["a", "b", "c", "d"], k=3)
    assert [name for name, _ in top] == ["b", "c", "a"]
    probs = np.exp([0.0, 2.0, 1.0, -1.0]) / np.exp([0.0, 2.0, 1.0, -1.0]).sum()
    assert top[0][1] == pytest.approx(probs[1])


def test_compact_grid_and_strip_sizes():
    assert render.compact_grid(tiles(12), cols=4).size == (4 * T, 3 * T)
    assert render.compact_grid(tiles(5), cols=4).size == (4 * T, 2 * T)
    assert render.compact_grid(tiles(5), cols=4, gap=2).size == (4 * T + 6, 2 * T + 2)
    assert render.strip(tiles(12), tiles(12, seed=1), tiles(12, seed=2)).size == (3 * T, 12 * T)


def test_labelled_grid_frames_right_green_and_wrong_red():
    captions = [render.caption_lines("a", [("a", 0.9)])] * 2
    grid = render.labelled_grid(tiles(2), captions, [True, False], "run | CAM | minmax | seed 0")
    frame = max(2, T // 32)
    assert grid.width == 4 * (T + 2 * frame) and grid.height > T
    pixels = np.array(grid)
    top = grid.height - (T + 2 * frame + frame + (render.font_size_for(T) + 4) * 2)
    assert tuple(pixels[top, 0]) == render.RIGHT_COLOUR  # top-left corner of the first frame
    assert tuple(pixels[top, T + 2 * frame]) == render.WRONG_COLOUR


def test_comparison_figure_has_a_column_per_pair_plus_the_image():
    columns = [("CAM_lr0.0001: CAM (minmax)", tiles(3)), ("ReCAM: ReCAM (relu)", tiles(3))]
    fig = render.comparison_figure(tiles(3), columns)
    gap = max(2, T // 64)
    assert fig.width == 3 * T + 2 * gap and fig.height > 3 * T + 2 * gap


def test_text_helpers_fit_the_width():
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    font = fonts.get_font(12)
    assert render.fit_text(draw, "short", font, 200) == "short"
    cut = render.fit_text(draw, "a very long class name indeed", font, 40)
    assert cut.endswith("...") and draw.textlength(cut, font=font) <= 40
    lines = render.wrap_text(draw, "ReCAM_minmax_lr0.0001: ReCAM (minmax)", font, 60, max_lines=3)
    assert 1 < len(lines) <= 3


def test_labelled_captions_use_class_names_and_true_labels():
    logits = np.array([[3.0, 0.0, 1.0], [0.0, 0.0, 5.0]])
    lines, correct = render.labelled_captions(logits, [0, 1], ["Iris", "Tulip", "Daisy"])
    assert lines[0][0] == "true: Iris" and lines[0][1].startswith("1. Iris ")
    assert lines[1][0] == "true: Tulip" and lines[1][1].startswith("1. Daisy ")
    assert correct == [True, False] and all(len(c) == 4 for c in lines)


def test_mask_boundary_is_the_inner_ring_and_not_the_image_border():
    mask = np.zeros((8, 8), bool)
    mask[2:6, 2:6] = True
    ring = render.mask_boundary(mask)
    want = mask.copy()
    want[3:5, 3:5] = False
    assert (ring == want).all()
    full = np.ones((5, 5), bool)
    assert not render.mask_boundary(full).any()  # touching the image edge is no boundary
    edge = np.zeros((5, 5), bool)
    edge[:, :2] = True
    assert render.mask_boundary(edge)[:, 1].all() and not render.mask_boundary(edge)[:, 0].any()


def test_draw_outline_resizes_the_mask_nearest_and_leaves_the_tile_alone():
    tile = np.zeros((T, T, 3), np.uint8)
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True  # -> rows/cols 16..47 of a 64 px tile
    out = render.draw_outline(tile, mask)
    assert not tile.any() and out.shape == tile.shape
    drawn = (out == render.OUTLINE_COLOUR).all(-1)
    assert drawn[16, 16:48].all() and drawn[47, 16:48].all() and drawn[16:48, 16].all()
    assert drawn.sum() == 4 * 32 - 4 and not drawn[17:47, 17:47].any()


# issue #22, case 11: names beyond ASCII


def test_accented_names_get_a_font_that_has_them():
    """Was: Pillow's built-in font, which draws 'é', 'Ω', 'Ж' as boxes."""
    path, missing = fonts.choose_font(["Œillet d'Inde é", "Ωmega", "Жасмин"])
    assert path and "DejaVu" in path and not missing
    assert fonts.missing_glyphs(path, "Œé ΩЖ") == set()
    assert fonts.choose_font(["Daffodil 90.0%"]) == (None, set())  # ASCII: as always


def test_characters_no_font_has_are_escaped_visibly(capsys, monkeypatch):
    dejavu = fonts.font_paths()[0]
    monkeypatch.setattr(fonts, "font_paths", lambda: [dejavu])  # a machine without CJK fonts
    tiles = [np.zeros((16, 16, 3), np.uint8)] * 2
    grid = render.labelled_grid(tiles, [["true: 菊"], ["true: Lys é"]], [True, False], "run", 2)
    err = capsys.readouterr().err
    assert grid.width == 2 * (16 + 4) and "菊 (\\u83ca)" in err and err.count("\n") == 1
    assert fonts.figure_texts(["a 菊 é"])[1] == ["a \\u83ca é"]
