"""Column widths so that every label shows whole: no text runs into a neighbouring cell.

A spreadsheet draws text wider than its cell across the empty cells beside it (to the
right; to the left when the text is right-aligned, as column labels are) and cuts it
at the first cell that is not empty, or at the sheet's left edge. Once the builder has
placed everything, `fit` widens a column just enough where a label or a text cell would
be cut so.

Widths are estimated, never measured: engines draw with different fonts, and the same
inputs must give the same file wherever they are built. The estimate is in widths of
the digit 0 (the unit of a column's width) and errs on the wide side for the fonts in
use (Calibri in Excel; DejaVu where LibreOffice has no Calibri, which draws wider).
Formula cells are not fitted: their text is known only once computed.
"""

from __future__ import annotations

import bisect
import functools
import math
import unicodedata

from .a1 import MAX_COLS
from .book import LABEL, TEXT, Sheet
from .writer import LOOKS

DEFAULT_WIDTH = 8.43  # a column's width when the sheet does not set it
_MARGIN = 0.5  # room a cell leaves around its text
# Widths of characters in widths of the digit 0: the widest of DejaVu Sans, Serif and
# Serif Italic (which LibreOffice draws Calibri and the labels' looks with when it has
# no Calibri), in classes; any other character counts 1 (lower case, digits), 1.2
# (upper case, other scripts, symbols) or 2 (East Asian wide).
_CLASSES = (("'j ,.il/:;\\|-f()[]IJ!t\u00b7", 0.6), ('"r*_`szc?', 0.85),
            ("GDOQ#+<=>^~UwHN&\u2212", 1.35), ("%m@MW", 1.6))
_CHAR = {c: w for chars, w in _CLASSES for c in chars}
_BOLD = 1.15  # bold draws up to this much wider


@functools.cache
def _look(style: str) -> tuple[float, str, bool]:
    """(how much wider than plain text, alignment, wrapped) of a look, from the writer's."""
    look = LOOKS.get(style, {})
    font, align = look.get("font"), look.get("alignment")
    bold = _BOLD if font is not None and font.b else 1.0
    size = (font.sz or 11) / 11 if font is not None else 1.0
    return bold * size, getattr(align, "horizontal", None) or "", bool(
        getattr(align, "wrap_text", None))


def _char(c: str) -> float:
    if c in _CHAR:
        return _CHAR[c]
    if unicodedata.east_asian_width(c) in "WF":
        return 2.0
    return 1.2 if c.isupper() or ord(c) > 126 else 1.0


_ASCII = {chr(i): _char(chr(i)) for i in range(128)}
_WIDEST = max(_ASCII.values())  # of a character of ASCII text


@functools.lru_cache(maxsize=1 << 16)  # row labels repeat from block to block
def text_width(text: str, style: str = "") -> float:
    """The width `text` needs in a cell of look `style`, in column-width units."""
    widths = map(_ASCII.__getitem__ if text.isascii() else _char, text)
    return sum(widths) * _look(style)[0] + _MARGIN


def fit(sheet: Sheet) -> None:
    """Widen the columns of `sheet` where a label would be cut by a neighbour (or, to the
    left, by the sheet's edge)."""
    full = _Occupied(sheet)
    for (row, col), cell in sheet.cells.items():
        if cell.kind in (LABEL, TEXT) and cell.value:
            _fit_cell(sheet, full, row, col, str(cell.value), cell.style)
    for fill in sheet.fills:
        scale, _, wrapped = _look(fill.style)
        if fill.kind not in (LABEL, TEXT) or wrapped:
            continue
        a = fill.area  # texts this short fit their column, however they are drawn
        short = [(_width(sheet, a.col + j) - _MARGIN) / (_WIDEST * scale)
                 for j in range(a.ncols)]
        for i in range(a.nrows):
            for j, value in enumerate(fill.row(i)):
                if value and (len(value) > short[j] or not value.isascii()):
                    _fit_cell(sheet, full, a.row + i, a.col + j, value, fill.style)


def _fit_cell(sheet: Sheet, full: _Occupied, row: int, col: int, text: str,
              style: str) -> None:
    """Widen column `col` if the text in (row, col) would be cut."""
    _, align, wrapped = _look(style)
    need, room = text_width(text, style), _width(sheet, col)
    if wrapped or need <= room:
        return
    step = -1 if align == "right" else 1
    c = col + step
    while room < need and 1 <= c <= MAX_COLS and not full.at(row, c):
        room += _width(sheet, c)
        c += step
    if room < need and c <= MAX_COLS:  # cut by a neighbour or the left edge: widen
        sheet.widths[col] = math.ceil((_width(sheet, col) + need - room) * 100) / 100


def _width(sheet: Sheet, col: int) -> float:
    return sheet.widths.get(col, DEFAULT_WIDTH)


class _Occupied:
    """Which cells hold something: single cells, blocks and merged ranges. The rows are
    cut where a block starts or ends, so a look-up reads only the blocks on its row."""

    def __init__(self, sheet: Sheet):
        self.cells = sheet.cells
        areas = [f.area for f in sheet.fills] + list(sheet.merges)
        self.starts = sorted({a.row for a in areas} | {a.row + a.nrows for a in areas})
        self.spans = [[(a.col, a.col + a.ncols) for a in areas
                       if a.row <= start < a.row + a.nrows] for start in self.starts]

    def at(self, row: int, col: int) -> bool:
        if (row, col) in self.cells:
            return True
        k = bisect.bisect_right(self.starts, row) - 1
        return k >= 0 and any(c0 <= col < c1 for c0, c1 in self.spans[k])
