"""What goes in the cells: a plain in-memory workbook the builder fills and the writer saves.

Four kinds of cell, kept apart so that no user text can turn into a formula and no
Python-computed number can pose as a model value:
- FORMULA: computed by the spreadsheet;
- NUMBER: a weight or a spec constant (epsilon, padding id), written as given;
- TEXT: data from the user or the spec (input text, tokens), always a literal string;
- LABEL: the workbook's own titles and labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import limits, names
from .a1 import MAX_COLS, MAX_ROWS
from .a1 import cell as cell_ref
from .layout import Area

FORMULA, NUMBER, TEXT, LABEL = "formula", "number", "text", "label"


@dataclass(frozen=True)
class Cell:
    kind: str
    value: str | float | int
    style: str = ""  # a role the writer maps to a look: "title", "input", "weight", ...


@dataclass
class Sheet:
    name: str
    cells: dict[tuple[int, int], Cell] = field(default_factory=dict)
    widths: dict[int, float] = field(default_factory=dict)  # column -> width
    freeze: str | None = None  # top-left cell of the scrolling part, e.g. "C1"

    def put(self, row: int, col: int, cell: Cell) -> None:
        if (row, col) in self.cells:
            raise ValueError(f"{self.name}: cell ({row}, {col}) is written twice")
        if row > MAX_ROWS or col > MAX_COLS:
            limits.check_area(f"cell ({row}, {col})", self.name, row, col)
        if cell.kind in (TEXT, LABEL):
            limits.check_text(str(cell.value), f"cell {self.name}!{cell_ref(row, col)}")
        self.cells[(row, col)] = cell


@dataclass
class Book:
    sheets: dict[str, Sheet] = field(default_factory=dict)
    names: dict[str, Area] = field(default_factory=dict)  # defined names
    blocks: dict[str, Area] = field(default_factory=dict)  # computed blocks by trace name

    def sheet(self, name: str) -> Sheet:
        if name not in self.sheets:
            self.sheets[name] = Sheet(names.check_sheet_name(name))
        return self.sheets[name]

    def put(self, area: Area, i: int, j: int, cell: Cell) -> None:
        self.sheet(area.sheet).put(*area.at(i, j), cell)

    def counts(self) -> tuple[int, int]:
        """(cells written, of which formulas)."""
        cells = [c for s in self.sheets.values() for c in s.cells.values()]
        return len(cells), sum(c.kind == FORMULA for c in cells)

    def name(self, name: str, area: Area) -> None:
        if name in self.names:
            raise ValueError(f"defined name {name!r} is used twice")
        self.names[names.check_defined_name(name)] = area

    def block(self, name: str, area: Area) -> None:
        """A computed block: checked against the reference trace of the same name."""
        self.blocks[name] = area
        self.name(name, area)
