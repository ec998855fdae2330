"""A1 addressing: small pure helpers, tested from tables of cases."""

from __future__ import annotations

MAX_ROWS = 1_048_576
MAX_COLS = 16_384


def col_letters(col: int) -> str:
    """1 -> A, 26 -> Z, 27 -> AA, 16384 -> XFD."""
    if not 1 <= col <= MAX_COLS:
        raise ValueError(f"column {col} is outside 1..{MAX_COLS}")
    letters = ""
    while col:
        col, rem = divmod(col - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


def cell(row: int, col: int, absolute: bool = False) -> str:
    """(1, 1) -> A1; absolute -> $A$1."""
    if not 1 <= row <= MAX_ROWS:
        raise ValueError(f"row {row} is outside 1..{MAX_ROWS}")
    d = "$" if absolute else ""
    return f"{d}{col_letters(col)}{d}{row}"


def span(row: int, col: int, nrows: int, ncols: int, absolute: bool = False) -> str:
    """A rectangle; a single cell stays a single cell."""
    first = cell(row, col, absolute)
    if nrows == 1 and ncols == 1:
        return first
    return f"{first}:{cell(row + nrows - 1, col + ncols - 1, absolute)}"


def sheet_prefix(sheet: str) -> str:
    """Sheet qualifier for a reference from another sheet; quoted unless plain."""
    if sheet.replace("_", "a").isalnum() and not sheet[0].isdigit():
        return f"{sheet}!"
    return "'" + sheet.replace("'", "''") + "'!"
