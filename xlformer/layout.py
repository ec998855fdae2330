"""Where blocks go: rectangles on sheets, stacked in bands that keep positions aligned.

A sheet is a vertical flow of bands. A band is a title row, a column-label row and
then one row per position (or per weight row); its blocks sit side by side, so row i
of every block in the band is position i. Column A labels the position and column B
shows its character, so a reader can follow a position across blocks by reading along
a row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from . import a1, limits

LABEL_COLS = 2  # position label, character
FIRST_COL = LABEL_COLS + 1
GAP = 1  # empty columns between blocks in a band, and rows between bands


@dataclass(frozen=True)
class Area:
    """A rectangle of cells on one sheet; i, j count from 0 inside it."""

    sheet: str
    row: int
    col: int
    nrows: int
    ncols: int

    def at(self, i: int, j: int) -> tuple[int, int]:
        """Sheet (row, col) of the block's cell (i, j)."""
        return self.row + i, self.col + j

    def ref(self, i: int, j: int, here: str, absolute: bool = False) -> str:
        """A1 reference to cell (i, j) as written in a formula on sheet `here`."""
        return self._qualify(a1.cell(self.row + i, self.col + j, absolute), here)

    def rows_ref(self, i: int, here: str, n: int = 1) -> str:
        """Reference to rows i .. i+n-1 of the block, all its columns."""
        if i < 0 or n < 1 or i + n > self.nrows:
            raise ValueError(f"rows {i}..{i + n - 1} leave {self}")
        return self._qualify(a1.span(self.row + i, self.col, n, self.ncols), here)

    def col_ref(self, j: int, here: str) -> str:
        if not 0 <= j < self.ncols:
            raise ValueError(f"column {j} leaves {self}")
        return self._qualify(a1.span(self.row, self.col + j, self.nrows, 1), here)

    def full_ref(self, here: str, absolute: bool = False) -> str:
        return self._qualify(a1.span(self.row, self.col, self.nrows, self.ncols, absolute), here)

    def window(self, i: int, j: int, nrows: int, ncols: int) -> Area:
        """A sub-rectangle, e.g. one head's columns of a wider block."""
        if i < 0 or j < 0 or i + nrows > self.nrows or j + ncols > self.ncols:
            raise ValueError(f"window ({i}, {j}, {nrows}, {ncols}) leaves {self}")
        return Area(self.sheet, self.row + i, self.col + j, nrows, ncols)

    def _qualify(self, ref: str, here: str) -> str:
        return ref if here == self.sheet else a1.sheet_prefix(self.sheet) + ref


@dataclass(frozen=True)
class SheetLimits:
    """The sheet size the layout plans for: Excel's, or smaller in tests, so that a small
    model takes the layouts a large one needs."""

    rows: int = a1.MAX_ROWS
    cols: int = a1.MAX_COLS


EXCEL = SheetLimits()


def band_end(widths: Sequence[int]) -> int:
    """The last column that a band of blocks of these widths reaches."""
    return FIRST_COL - 1 + sum(widths) + GAP * (len(widths) - 1)


def vocab_down(vocab_size: int, sheet: SheetLimits) -> bool:
    """Whether blocks as wide as the vocabulary run down the rows instead (one row per
    token, one column per position): when the widest band holding one (the input's
    characters, ids, note and one-hot) would cross the sheet's last column. A
    vocabulary of 50,257 tokens does not fit across Excel's 16,384 columns."""
    return band_end((1, 1, 1, vocab_size)) > sheet.cols


@dataclass(frozen=True)
class Slot:
    """A block asked of a band: its name, width and column labels."""

    name: str
    ncols: int
    labels: tuple = ()  # text, or a book.Cell (e.g. a formula showing a key's character)


class Flow:
    """Stacks bands down one sheet and hands out their areas."""

    def __init__(self, sheet: str, top: int = 1, cols: int = a1.MAX_COLS):
        self.sheet = sheet
        self.next_row = top
        self.cols = cols  # the sheet's last column, as planned (see SheetLimits)

    def band(self, slots: list[Slot], nrows: int) -> tuple[int, list[Area]]:
        """Place blocks side by side; returns the band's title row and the data areas.

        A block that would cross the sheet's last column starts a new band below (the
        band wraps): its own title row, column labels and rows of the same positions.
        Each block's title row is its area's row - 2."""
        title_row = first = self.next_row
        col, areas = FIRST_COL, []
        for slot in slots:
            if col > FIRST_COL and col + slot.ncols - 1 > self.cols:
                title_row += 2 + nrows + GAP
                col = FIRST_COL
            area = Area(self.sheet, title_row + 2, col, nrows, slot.ncols)
            limits.check_area(slot.name, area.sheet, *area.at(nrows - 1, slot.ncols - 1))
            areas.append(area)
            col += slot.ncols + GAP
        self.next_row = title_row + 2 + nrows + GAP
        return first, areas

    def fits(self, nrows: int, last_row: int) -> bool:
        """Whether a band of `nrows` rows placed next ends by `last_row`."""
        return self.next_row + 2 + nrows - 1 <= last_row

    def skip(self, rows: int) -> int:
        """Reserve `rows` rows (e.g. for a heading); returns the first."""
        first = self.next_row
        self.next_row += rows
        return first
