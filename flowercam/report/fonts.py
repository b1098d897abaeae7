"""Fonts of the figures' text: Pillow's built-in font for ASCII text (the figures' bytes as they
always were), matplotlib's DejaVu Sans or another font of this machine for anything else, and a
visible escape (\\u83ca) with one warning line for a character no font here can draw.

    python -c "from flowercam.report import fonts; print(fonts.choose_font(['Renoncule é']))"
    python -c "from flowercam.report import fonts; print(fonts.figure_texts(['菊'])[1])"
"""

import sys

from matplotlib import font_manager, ft2font
from PIL import ImageFont


def font_paths() -> list[str]:
    """Fonts for text beyond ASCII: matplotlib's DejaVu Sans (Latin, Greek, Cyrillic and more),
    then this machine's fonts (not 'Last Resort', whose glyphs are placeholder boxes)."""
    dejavu = str(font_manager.findfont("DejaVu Sans"))  # matplotlib ships it
    rest = [f.fname for f in font_manager.fontManager.ttflist
            if "Last Resort" not in f.name and f.fname.lower().endswith((".ttf", ".otf"))]
    return list(dict.fromkeys([dejavu, *rest]))


_GLYPHS: dict = {}  # font path -> FT2Font, for glyph lookups


def missing_glyphs(path, text) -> set[str]:
    """The visible characters of text that the font at path has no glyph for."""
    font = _GLYPHS.setdefault(path, ft2font.FT2Font(path))
    return {c for c in set(text) if c.isprintable() and not c.isspace()
            and font.get_char_index(ord(c)) == 0}


def choose_font(texts) -> tuple[str | None, set[str]]:
    """(font path, characters no font here can draw) for the texts of one figure. All ASCII:
    (None, {}) = Pillow's built-in font, as always; else the first of font_paths() with every
    glyph, or the one missing fewest."""
    text = "".join(texts)
    if text.isascii():
        return None, set()
    best = None
    for path in font_paths():
        missing = missing_glyphs(path, text)
        if not missing:
            return path, set()
        best = best if best and len(best[1]) <= len(missing) else (path, missing)
    return best


def escaped(text, missing) -> str:
    """text with each character of `missing` written as its escape (\\u83ca), visibly."""
    return "".join(c.encode("unicode_escape").decode() if c in missing else c for c in text)


def figure_texts(texts) -> tuple[str | None, list[str]]:
    """(font path, texts as they will be drawn) of one figure; a character no font here has is
    drawn as its escape, with one warning line naming it."""
    path, missing = choose_font(texts)
    if missing:
        shown = " ".join(f"{c} ({escaped(c, missing)})" for c in sorted(missing))
        print(f"warning: no font on this machine draws {shown}: drawn as escapes; install a "
              "font that covers them (e.g. Noto Sans CJK, Noto Emoji)", file=sys.stderr)
    return path, [escaped(t, missing) for t in texts]


def get_font(size, path=None):
    """The TrueType font at path (figure_texts), else Pillow's built-in font at `size` px
    (Pillow >= 10.1), else its small bitmap font."""
    if path:
        return ImageFont.truetype(path, size)
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # older Pillow: no size argument
        return ImageFont.load_default()
