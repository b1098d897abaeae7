"""The sanity checks' pictures: Adebayo et al. 2018's grid (rows = map methods, columns = the
trained model then the cascading randomisation, top layer first; one block per image) and the
plot of each similarity against the depth of randomisation, one line per method.

    python evaluate.py -d model/RUN --sanity --limit 12      # -> sanity_grid.png, sanity_plot.png
    python -c "from flowercam.sanity import figures as s; help(s.grid)"

Takes plain data (the summary and the maps of evaluate.py --sanity), never the metrics package.
"""

import numpy as np
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from flowercam.core import atomic_write
from flowercam.data import dataset
from flowercam.report import fonts, image_files, render
from flowercam.sanity import similarity

TILE = 96
LABEL_WIDTH = 110


def short(name):
    return "data" if name == "data" else name.split(":", 1)[-1]


def _text_row(labels, font, height):
    """One header strip: a blank label cell, then one cell per column label."""
    strip = Image.new("RGB", (LABEL_WIDTH + len(labels) * TILE, height), render.BACKGROUND)
    draw = ImageDraw.Draw(strip)
    for c, text in enumerate(labels):
        fitted = render.fit_text(draw, text, font, TILE - 4)
        draw.text((LABEL_WIDTH + c * TILE + 2, 2), fitted, fill=render.TEXT_COLOUR, font=font)
    return strip


def _block(photo, rows, columns, maps, k, font):
    """One image's block: per row its label, the photo, then its map under every column."""
    height = TILE * len(rows)
    block = Image.new("RGB", (LABEL_WIDTH + (len(columns) + 1) * TILE, height), render.BACKGROUND)
    draw = ImageDraw.Draw(block)
    for r, row in enumerate(rows):
        draw.text((4, r * TILE + TILE // 2 - 6), render.fit_text(draw, row, font, LABEL_WIDTH - 6),
                  fill=render.TEXT_COLOUR, font=font)
        block.paste(photo, (LABEL_WIDTH, r * TILE))
        for c, column in enumerate(columns, 1):
            heat = render.resize_map(np.asarray(maps[(row, column)][k], np.float32), (TILE, TILE))
            tile = Image.fromarray(render.colorize(heat, "jet"))
            block.paste(tile, (LABEL_WIDTH + c * TILE, r * TILE))
    return block


def grid(paths, rows, columns, maps):
    """PIL image: for each image path, a block of rows (methods) x (photo, columns)."""
    font_path, _ = fonts.figure_texts(rows + [short(c) for c in columns])
    font = fonts.get_font(11, font_path)
    header = _text_row(["image", *[short(c) for c in columns]], font, 18)
    blocks = [header]
    for k, path in enumerate(paths):
        blocks.append(_block(_photo(path), rows, columns, maps, k, font))
    sheet = Image.new("RGB", (header.width, sum(b.height + 4 for b in blocks)), render.BACKGROUND)
    y = 0
    for b in blocks:
        sheet.paste(b, (0, y))
        y += b.height + 4
    return sheet


def _photo(path):
    return dataset.open_rgb(path).resize((TILE, TILE), Image.BILINEAR)


def _values(figures):
    """[(value, lo, hi)] -> three float arrays (None -> NaN)."""
    table = [[np.nan if v is None else v for v in (f["value"], *f["ci95"])] for f in figures]
    return np.array(table, float).reshape(-1, 3).T


def _curve(ax, per, cascade, measure, label, style):
    """The cascade as a line with its interval band; data randomisation as one point after it."""
    value, lo, hi = _values([per[c][measure] for c in cascade])
    x = np.arange(len(cascade))
    line, = ax.plot(x, value, style, ms=4, label=label)
    ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15)
    if "data" in per:
        (v,), (a,), (b,) = _values([per["data"][measure]])
        ax.errorbar([len(cascade)], [v], yerr=[[v - a], [b - v]], fmt=style[0], ms=5,
                    color=line.get_color(), capsize=3)


def plot(path, summary):
    """similarity vs cascade depth, one panel per measure; data randomisation at the right end."""
    cascade = [s["name"] for s in summary["states"] if s["group"] == "cascade"]
    columns = cascade + (["data"] if summary.get("data_randomisation") else [])
    fig = Figure(figsize=(4.2 * len(similarity.SIMILARITIES), 4))  # no pyplot: no global state
    axes = fig.subplots(1, len(similarity.SIMILARITIES), squeeze=False)[0]
    for ax, measure in zip(axes, similarity.SIMILARITIES, strict=True):
        for row, per in summary["similarities"].items():
            style = "o-" if row in summary["methods"] else "s--"
            label = row if row in summary["methods"] else f"{row} (baseline)"
            _curve(ax, per, cascade, measure, label, style)
        if measure.startswith("spearman"):  # the verdict's bound
            ax.axhline(summary["bound"], color="grey", lw=0.8, linestyle=":")
        ax.set_xticks(np.arange(len(columns)), [short(c) for c in columns], rotation=45,
                      fontsize=8)
        ax.set_title(similarity.TITLES[measure], fontsize=10)
        ax.set_xlabel("randomised from the top down to")
        ax.set_ylim(-0.3, 1.05)
    axes[0].set_ylabel("similarity with the trained model's map")
    axes[-1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=80))
    print(f"wrote {path}")


def write(out_dir, summary, maps, paths):
    """sanity_grid.png (the figure's images) and sanity_plot.png in out_dir."""
    rows = summary["methods"] + [b for b in summary["baselines"] if b in ("random", "sobel")]
    columns = ["trained"] + [s["name"] for s in summary["states"] if s["group"] == "cascade"]
    columns += ["data"] if summary.get("data_randomisation") else []
    if paths:
        image_files.save_png(grid(paths, rows, columns, maps), f"{out_dir}/sanity_grid.png")
    plot(f"{out_dir}/sanity_plot.png", summary)
