"""Drawing helpers for activation maps: colormaps, blending, labelled and compact grids, strips and
the comparison figure. numpy + PIL + matplotlib's colormaps (no torch, no pyplot).

    python -c "from flowercam.report import render; print(render.jet_lut()[[0, 128, 255]])"
    python -c "from flowercam.report import render as r; \
print(r.caption_lines('Iris', [('Iris', .9)]))"
"""

import math
import re

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw

from flowercam.report.fonts import figure_texts, get_font

COLORMAPS = ("red", "jet")
RIGHT_COLOUR = (0, 160, 0)
WRONG_COLOUR = (210, 0, 0)
NEUTRAL_COLOUR = (128, 128, 128)
BACKGROUND = (255, 255, 255)
TEXT_COLOUR = (0, 0, 0)
OUTLINE_COLOUR = (255, 255, 255)  # mask outlines: white shows on red, jet and photos
REFINED_COLOUR = (0, 255, 255)  # the refined pseudo-mask's outline (inference.py --refine): cyan


def jet_lut() -> np.ndarray:
    """matplotlib's 'jet' as a [256, 3] uint8 table (dark blue -> cyan -> yellow -> dark red).

    Its 256 entries, rounded (matplotlib's own bytes=True truncates). It is not the old formula
    clip(1.5 - |4x - c|) (breaks at multiples of 1/8): matplotlib's jet breaks at 0.11, 0.125,
    0.34, 0.35, 0.375, 0.64, 0.65, 0.66, 0.89, 0.91, so channels differ by up to 34/255.
    """
    return np.round(colormaps["jet"](np.arange(256))[:, :3] * 255).astype(np.uint8)


def colorize(heat, colormap="red") -> np.ndarray:
    """Map [H, W] in [0, 1] -> uint8 [H, W, 3]; 'red' = map in the red channel (the report's)."""
    heat = np.clip(np.nan_to_num(np.asarray(heat, dtype=np.float32)), 0.0, 1.0)
    if colormap == "red":
        out = np.zeros(heat.shape + (3,), dtype=np.uint8)
        out[..., 0] = np.round(heat * 255).astype(np.uint8)
        return out
    if colormap == "jet":
        return jet_lut()[np.round(heat * 255).astype(np.int64)]
    raise ValueError(f"unknown colormap {colormap!r}; choose from {COLORMAPS}")


def resize_map(heat, size) -> np.ndarray:
    """Bilinear resize of a float map [h, w] to size=(width, height) -> float32 [height, width]."""
    heat = np.asarray(heat, dtype=np.float32)
    if heat.shape == (size[1], size[0]):
        return heat.copy()
    return np.asarray(Image.fromarray(heat, mode="F").resize(size, Image.BILINEAR), np.float32)


def as_rgb_array(image) -> np.ndarray:
    """PIL image (any mode) or array -> uint8 [H, W, 3] (a copy; the input is left alone)."""
    if isinstance(image, Image.Image):
        return np.array(image.convert("RGB"))
    return np.array(image, dtype=np.uint8)


def blend(image, heat, alpha=0.5, colormap="red") -> np.ndarray:
    """Blend the coloured map over the image at the image's own resolution -> uint8 [H, W, 3]."""
    rgb = as_rgb_array(image)
    heat = resize_map(heat, (rgb.shape[1], rgb.shape[0]))
    mixed = (1.0 - alpha) * rgb.astype(np.float32) + alpha * colorize(heat, colormap)
    return np.clip(np.round(mixed), 0, 255).astype(np.uint8)


def font_size_for(tile) -> int:
    return max(10, tile // 16)


def fit_text(draw, text, font, width) -> str:
    """Cut `text` with '...' so that it fits in `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def wrap_text(draw, text, font, width, max_lines=3) -> list[str]:
    """Greedy wrap at spaces, '_', ':', '/' and '-'; the last line is cut with '...' if needed."""
    lines, current = [], ""
    for token in re.split(r"(?<=[ _:/\\-])", text):
        if current and draw.textlength(current + token, font=font) > width:
            lines.append(current)
            current = token
        else:
            current += token
    lines.append(current)
    if len(lines) > max_lines:
        lines = lines[: max_lines - 1] + ["".join(lines[max_lines - 1 :])]
    return [fit_text(draw, line.strip(), font, width) for line in lines]


def topk_predictions(logits, class_names, k=3) -> list[tuple[str, float]]:
    """Softmax of one image's logits [C] -> the k most probable (class name, probability)."""
    logits = np.asarray(logits, dtype=np.float64)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    order = np.argsort(-probs, kind="stable")[:k]
    return [(class_names[i], float(probs[i])) for i in order]


def caption_lines(true_name, top) -> list[str]:
    """Caption of a labelled tile: the true label (if known) then the top-k with probabilities."""
    lines = [f"true: {true_name}"] if true_name is not None else []
    lines += [f"{rank}. {name} {prob:.1%}" for rank, (name, prob) in enumerate(top, start=1)]
    return lines


def is_correct(true_name, top):
    """True/False when the true label is known (top-1 == true), else None."""
    return None if true_name is None or not top else top[0][0] == true_name


def labelled_captions(logits, labels, class_names):
    """Caption lines (true label, top-3 with probabilities) and right/wrong for each image."""
    tops = [topk_predictions(row, class_names) for row in logits]
    truths = [class_names[label] for label in labels]
    return ([caption_lines(t, top) for t, top in zip(truths, tops, strict=True)],
            [is_correct(t, top) for t, top in zip(truths, tops, strict=True)])


def panels(originals, heat, size, colormap="red", alpha=0.5):
    """PIL originals + maps [B,size,size] in [0,1] -> (image, map, overlay) uint8 tiles."""
    images = [as_rgb_array(im.resize((size, size))) for im in originals]
    heats = [colorize(h, colormap) for h in heat]
    overlays = [blend(im, h, alpha, colormap) for im, h in zip(images, heat, strict=True)]
    return images, heats, overlays


def to_image(tile) -> Image.Image:
    return tile if isinstance(tile, Image.Image) else Image.fromarray(as_rgb_array(tile))


def compact_grid(tiles, cols=4, gap=0) -> Image.Image:
    """Tiles of equal size T, `gap` white pixels between them, no text -> (cols*T + gaps) wide."""
    first = to_image(tiles[0])
    width, height = first.width + gap, first.height + gap
    rows = math.ceil(len(tiles) / cols)
    sheet = Image.new("RGB", (cols * width - gap, rows * height - gap), BACKGROUND)
    for i, tile in enumerate(tiles):
        sheet.paste(to_image(tile), ((i % cols) * width, (i // cols) * height))
    return sheet


def strip(images, heats, overlays) -> Image.Image:
    """One image per row: image | map | overlay (all the same tile size)."""
    tiles = [tile for row in zip(images, heats, overlays, strict=True) for tile in row]
    return compact_grid(tiles, cols=3)


def labelled_cell(tile, lines, correct, font, line_height) -> Image.Image:
    """One grid cell: tile in a frame (green right, red wrong, grey unknown) above its caption."""
    tile = to_image(tile)
    frame = max(2, tile.width // 32)
    pad = frame
    cell = Image.new("RGB", (tile.width + 2 * frame, tile.height + 2 * frame + pad
                             + line_height * len(lines)), BACKGROUND)
    colour = NEUTRAL_COLOUR if correct is None else (RIGHT_COLOUR if correct else WRONG_COLOUR)
    draw = ImageDraw.Draw(cell)
    draw.rectangle([0, 0, tile.width + 2 * frame - 1, tile.height + 2 * frame - 1], fill=colour)
    cell.paste(tile, (frame, frame))
    y = tile.height + 2 * frame + pad // 2
    for i, line in enumerate(lines):
        # the top-1 line takes the frame's colour so right/wrong also shows in the text
        fill = colour if (correct is not None and line.startswith("1. ")) else TEXT_COLOUR
        draw.text((frame, y + i * line_height), fit_text(draw, line, font, tile.width), fill=fill,
                  font=font)
    return cell


def labelled_grid(tiles, captions, correct, title, cols=4) -> Image.Image:
    """Grid of framed tiles with captions (see caption_lines) under a title bar."""
    tile_size = to_image(tiles[0]).width
    lengths = [len(lines) for lines in captions]
    font_path, texts = figure_texts([title, *(line for lines in captions for line in lines)])
    title, flat = texts[0], iter(texts[1:])
    captions = [[next(flat) for _ in range(n)] for n in lengths]
    font = get_font(font_size_for(tile_size), font_path)
    line_height = font_size_for(tile_size) + 4
    n_lines = max(lengths)
    cells = [labelled_cell(t, list(c) + [""] * (n_lines - len(c)), ok, font, line_height)
             for t, c, ok in zip(tiles, captions, correct, strict=True)]
    body = compact_grid(cells, cols=cols)
    title_font = get_font(font_size_for(tile_size) + 4, font_path)
    title_height = font_size_for(tile_size) + 4 + line_height  # title + half a line each side
    sheet = Image.new("RGB", (body.width, body.height + title_height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    draw.text((6, line_height // 2), fit_text(draw, title, title_font, body.width - 12),
              fill=TEXT_COLOUR, font=title_font)
    sheet.paste(body, (0, title_height))
    return sheet


def comparison_figure(images, columns) -> Image.Image:
    """The report's Figure 8: first column the plain images, then one column per (name, tiles);
    columns are separated by a thin white gap and named on top."""
    tile_size = to_image(images[0]).width
    gap = max(2, tile_size // 64)
    columns = [("image", images)] + list(columns)
    font_path, names = figure_texts([name for name, _ in columns])
    font = get_font(font_size_for(tile_size), font_path)
    line_height = font_size_for(tile_size) + 4
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    headers = [wrap_text(probe, name, font, tile_size - 8) for name in names]
    header_height = line_height * max(len(h) for h in headers) + 8
    rows = [tiles[i] for i in range(len(images)) for _, tiles in columns]
    body = compact_grid(rows, cols=len(columns), gap=gap)
    sheet = Image.new("RGB", (body.width, body.height + header_height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for c, lines in enumerate(headers):
        for k, line in enumerate(lines):
            draw.text((c * (tile_size + gap) + 4, 4 + k * line_height), line, fill=TEXT_COLOUR,
                      font=font)
    sheet.paste(body, (0, header_height))
    return sheet


def mask_boundary(mask) -> np.ndarray:
    """bool [H, W] -> bool [H, W]: the mask's pixels with a 4-neighbour outside the mask (the
    image border itself is not drawn)."""
    mask = np.asarray(mask, dtype=bool)
    padded = np.pad(mask, 1, mode="edge")  # the image border is not a boundary
    inner = (padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
    return mask & ~inner


def draw_outline(tile, mask, colour=OUTLINE_COLOUR) -> np.ndarray:
    """Copy of tile (uint8 [T, T, 3]) with the boundary of mask (bool [h, w], resized nearest to
    the tile) drawn in `colour`."""
    tile = as_rgb_array(tile)
    small = Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255, mode="L")
    resized = np.array(small.resize((tile.shape[1], tile.shape[0]), Image.NEAREST)) > 127
    tile[mask_boundary(resized)] = colour
    return tile
