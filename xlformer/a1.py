"""A1 addressing: small pure helpers, tested from tables of cases."""

from __future__ import annotations

import functools
import re

MAX_ROWS = 1_048_576
MAX_COLS = 16_384


def _letters(col: int) -> str:
    letters = ""
    while col:
        col, rem = divmod(col - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


# Every column's letters, made once: formulas name millions of cells in a big model.
_COLS = [""] + [_letters(c) for c in range(1, MAX_COLS + 1)]


def col_letters(col: int) -> str:
    """1 -> A, 26 -> Z, 27 -> AA, 16384 -> XFD."""
    if not 1 <= col <= MAX_COLS:
        raise ValueError(f"column {col} is outside 1..{MAX_COLS}")
    return _COLS[col]


def cell(row: int, col: int, absolute: bool = False) -> str:
    """(1, 1) -> A1; absolute -> $A$1."""
    if not 1 <= row <= MAX_ROWS:
        raise ValueError(f"row {row} is outside 1..{MAX_ROWS}")
    if not 1 <= col <= MAX_COLS:
        raise ValueError(f"column {col} is outside 1..{MAX_COLS}")
    return f"${_COLS[col]}${row}" if absolute else f"{_COLS[col]}{row}"


def span(row: int, col: int, nrows: int, ncols: int, absolute: bool = False) -> str:
    """A rectangle; a single cell stays a single cell."""
    first = cell(row, col, absolute)
    if nrows == 1 and ncols == 1:
        return first
    return f"{first}:{cell(row + nrows - 1, col + ncols - 1, absolute)}"


@functools.cache
def sheet_prefix(sheet: str) -> str:
    """Sheet qualifier for a reference from another sheet; quoted unless plain."""
    if sheet.replace("_", "a").isalnum() and not sheet[0].isdigit():
        return f"{sheet}!"
    return "'" + sheet.replace("'", "''") + "'!"


_CELL = r"\$?([A-Za-z]{1,3})\$?(\d{1,7})"
_SPAN = re.compile(rf"{_CELL}(?::{_CELL})?")


def parse_span(text: str) -> tuple[int, int, int, int]:
    """The inverse of span: "B3:D4" -> (3, 2, 2, 3) as (row, col, nrows, ncols). Also
    lower case, "$" and corners in either order, as a spreadsheet's Name Box takes them."""
    match = _SPAN.fullmatch(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a cell or range like A1 or A1:H20")
    letters = [g.upper() for g in match.groups()[0::2] if g]
    numbers = [int(g) for g in match.groups()[1::2] if g]
    cols = [_col_number(s) for s in letters]
    for row, col in zip(numbers, cols, strict=True):
        if not (1 <= row <= MAX_ROWS and 1 <= col <= MAX_COLS):
            raise ValueError(f"{text!r} leaves the sheet (A1:XFD{MAX_ROWS})")
    return min(numbers), min(cols), abs(numbers[-1] - numbers[0]) + 1, abs(cols[-1] - cols[0]) + 1


def _col_number(letters: str) -> int:
    col = 0
    for ch in letters:
        col = col * 26 + ord(ch) - 64
    return col
