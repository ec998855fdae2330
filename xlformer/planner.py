"""The layout alone: where every block of a workbook goes, without making its cells.

`plan` runs the builder with a book that keeps names, blocks and headers but drops
cells, and formulas that are never written. It checks a model against the sheet
limits in a fraction of a build's time, e.g. GPT-2's vocabulary of 50,257 tokens.
"""

from __future__ import annotations

from collections.abc import Callable

from . import limits
from .a1 import MAX_COLS, MAX_ROWS
from .book import Book, Cell, Sheet
from .builder import _Builder
from .layout import EXCEL, Area, SheetLimits
from .names import check_sheet_name
from .spec import Spec
from .weights import Params


def plan(spec: Spec, params: Params, text, sheet: SheetLimits = EXCEL) -> Book:
    """The workbook's layout for sheets of `sheet`'s size: names and blocks, no cells."""
    return _Planner(spec, params, sheet).build(text)


class _PlanSheet(Sheet):
    def put(self, row: int, col: int, cell: Cell) -> None:
        if row > MAX_ROWS or col > MAX_COLS:
            limits.check_area(f"cell ({row}, {col})", self.name, row, col)


class _PlanBook(Book):
    def sheet(self, name: str) -> Sheet:
        if name not in self.sheets:
            self.sheets[name] = _PlanSheet(check_sheet_name(name))
        return self.sheets[name]


class _Planner(_Builder):
    def __init__(self, spec: Spec, params: Params, sheet: SheetLimits):
        super().__init__(spec, params, sheet)
        self.book = _PlanBook()

    def fill(self, name: str, area: Area, body: Callable[[int, int], str],
             trace: bool = True) -> Area:
        (self.book.block if trace else self.book.name)(name, area)
        return area
