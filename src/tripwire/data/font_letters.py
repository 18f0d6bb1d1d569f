"""Letters rendered from fonts, notMNIST-like (Bulatov 2011): 28×28 white on black, no download.

``font-letters`` holds the letters A–J (notMNIST's ten classes); ``font-letters-kz`` the letters
K–Z, a disjoint set for Outlier Exposure or for choosing hyper-parameters without touching any test
OOD set. Glyphs come from the TrueType fonts matplotlib ships (DejaVu Sans / Serif / Sans Mono and
STIX General, each regular, bold, italic and bold-italic; Computer Modern roman, sans, typewriter)
and are drawn with Pillow. Each image draws, from a seeded ``numpy.random.Generator``: a font, a
rotation in ±12°, a glyph height of 14–22 px, a width stretch of 0.8–1.2, and an offset of ±2 px
from the centre. Same seed → the same images, bit for bit.
"""

from __future__ import annotations

import string
from dataclasses import replace
from functools import cache
from pathlib import Path

import matplotlib
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from tripwire.data.base import ImageSet, Source, register_source
from tripwire.data.imagefiles import RESAMPLE

FONTS = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
    "cmr10.ttf",
    "cmss10.ttf",
    "cmtt10.ttf",
)
LETTERS_AJ = "ABCDEFGHIJ"
LETTERS_KZ = string.ascii_uppercase[10:]
SPLIT_SEEDS = {"test": 0, "train": 1}
PER_LETTER = 500
_RENDER_PX = 64  # glyphs are drawn at this font size, then shrunk


@cache
def _font(name: str) -> ImageFont.FreeTypeFont:
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name
    return ImageFont.truetype(str(path), _RENDER_PX)


@cache
def _glyph(font: str, letter: str) -> Image.Image:
    """The glyph drawn white on black, cropped to its ink with a 2 px black margin."""
    canvas = Image.new("L", (2 * _RENDER_PX, 2 * _RENDER_PX), 0)
    draw = ImageDraw.Draw(canvas)
    draw.text((_RENDER_PX, _RENDER_PX), letter, fill=255, font=_font(font), anchor="mm")
    box = canvas.getbbox()
    if box is None:
        return canvas
    return canvas.crop((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2))


def render_letters(
    letters: str = LETTERS_AJ, per_letter: int = PER_LETTER, seed: int = 0, size: int = 28
) -> tuple[np.ndarray, np.ndarray]:
    """Render `per_letter` jittered images of each letter in `letters`.

    Returns images (N×size×size uint8, white on black, N = len(letters) · per_letter, letters
    interleaved) and labels (int64, the index of the letter in `letters`).

    Examples:
        >>> x, y = render_letters("AB", per_letter=3, seed=0)
        >>> x.shape, y.tolist()
        ((6, 28, 28), [0, 1, 0, 1, 0, 1])
    """
    rng = np.random.default_rng(seed)
    n = len(letters) * per_letter
    x = np.zeros((n, size, size), dtype=np.uint8)
    y = np.tile(np.arange(len(letters), dtype=np.int64), per_letter)
    fonts = rng.integers(len(FONTS), size=n)
    angles = rng.uniform(-12.0, 12.0, size=n)
    heights = rng.uniform(14.0, 22.0, size=n) * size / 28
    stretch = rng.uniform(0.8, 1.2, size=n)
    shifts = rng.uniform(-2.0, 2.0, size=(n, 2)) * size / 28
    for i in range(n):
        glyph = _glyph(FONTS[fonts[i]], letters[y[i]])
        glyph = glyph.rotate(float(angles[i]), Image.Resampling.BILINEAR, expand=True)
        box = glyph.getbbox()
        if box is None:  # a font without this glyph: leave the image black
            continue
        glyph = glyph.crop(box)
        gw, gh = glyph.size
        scale = heights[i] / max(gh, 1)
        w = max(1, min(size, round(gw * scale * stretch[i])))
        h = max(1, min(size, round(gh * scale)))
        small = glyph.resize((w, h), RESAMPLE, reducing_gap=None)
        left = int(np.clip(round((size - w) / 2 + shifts[i, 0]), 0, size - w))
        top = int(np.clip(round((size - h) / 2 + shifts[i, 1]), 0, size - h))
        x[i, top : top + h, left : left + w] = np.asarray(small, dtype=np.uint8)
    return x, y


def _loader(letters: str, tag: str):
    def load(split: str, data_dir: Path) -> ImageSet:
        seed = SPLIT_SEEDS[split]
        x, y = render_letters(letters, PER_LETTER, seed)
        info: dict[str, object] = {
            "source": "rendered from matplotlib's bundled fonts",
            "letters": letters,
            "seed": seed,
            "fonts": list(FONTS),
        }
        return ImageSet(
            f"{tag}-{split}", torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y), info
        )

    return load


_ORIGIN = "generated: rendered from matplotlib's DejaVu/STIX/CM fonts with Pillow (no download)"

FONT_LETTERS = register_source(
    Source(
        name="font-letters",
        description="letters A–J rendered from fonts, notMNIST-like, 28×28 white on black "
        "(validation anomalies for MNIST)",
        origin=_ORIGIN,
        splits=tuple(SPLIT_SEEDS),
        image_shape=(1, 28, 28),
        loader=_loader(LETTERS_AJ, "font-letters"),
        needs_files=False,
        sizes={s: len(LETTERS_AJ) * PER_LETTER for s in SPLIT_SEEDS},
    )
)
FONT_LETTERS_KZ = register_source(
    replace(
        FONT_LETTERS,
        name="font-letters-kz",
        description="letters K–Z rendered from fonts, 28×28 white on black (Outlier Exposure set)",
        loader=_loader(LETTERS_KZ, "font-letters-kz"),
        sizes={s: len(LETTERS_KZ) * PER_LETTER for s in SPLIT_SEEDS},
    )
)
