"""Contact sheet: a grid of enlarged world samples with their first clean caption and the noisy caption."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from edgevl.data.world.sample import WorldSample
from edgevl.errors import DataError

_TEXT_LINES = 8
_LINE_HEIGHT = 12
_PAD = 4


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> list[str]:
    """Greedy word wrap to `width` pixels."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def contact_sheet(items: Sequence[WorldSample], columns: int = 4, scale: int = 3) -> Image.Image:
    """RGB sheet: each cell is the image enlarged `scale` times (nearest) above 'clean:' and 'noisy:' text."""
    if not items or columns < 1 or scale < 1:
        got = f"{len(items)} samples, columns={columns}, scale={scale}"
        raise DataError(f"a contact sheet needs >= 1 sample and columns, scale >= 1; got {got}")
    font = ImageFont.load_default()
    side = items[0].image.width * scale
    cell_w, cell_h = side + 2 * _PAD, side + 2 * _PAD + _TEXT_LINES * _LINE_HEIGHT
    rows = (len(items) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, s in enumerate(items):
        x, y = (k % columns) * cell_w + _PAD, (k // columns) * cell_h + _PAD
        sheet.paste(s.image.resize((side, side), Image.Resampling.NEAREST), (x, y))
        clean = _wrap(draw, "clean: " + s.captions[0], font, side)
        noisy = _wrap(draw, "noisy: " + s.noisy, font, side)
        budget = _TEXT_LINES // 2
        lines = [(t, (0, 90, 0)) for t in clean[:budget]]
        lines += [(t, (160, 0, 0)) for t in noisy[: _TEXT_LINES - budget]]
        for j, (text, color) in enumerate(lines):
            draw.text((x, y + side + 2 + j * _LINE_HEIGHT), text, fill=color, font=font)
    return sheet
