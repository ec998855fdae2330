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


@dataclass(frozen=True)
class Header:
    """What a block is, for a reader: shown in its title cell and its cell comment."""

    title: str  # name and math in plain notation, e.g. "Q = X · W_Q (head 2)"
    note: str  # what it means and where its inputs come from
    step: bool = False  # listed in the guide sheet's reading order
    heatmap: str = ""  # "unit" (0..1), "diverging" (min..max) or "" for none
    number_format: str = "0.000"


@dataclass(frozen=True)
class Chart:
    """A bar chart of one row of values against one row of category labels."""

    title: str
    values: Area
    categories: Area
    anchor: str  # top-left cell, e.g. "C20"
    x_title: str = ""
    y_title: str = ""


@dataclass
class Sheet:
    name: str
    cells: dict[tuple[int, int], Cell] = field(default_factory=dict)
    widths: dict[int, float] = field(default_factory=dict)  # column -> width
    heights: dict[int, float] = field(default_factory=dict)  # row -> height (points)
    freeze: str | None = None  # top-left cell of the scrolling part, e.g. "C1"
    # Presentation only: none of it changes a value.
    notes: dict[tuple[int, int], str] = field(default_factory=dict)  # cell comments
    links: dict[tuple[int, int], str] = field(default_factory=dict)  # -> "'Sheet'!C5"
    formats: list[tuple[Area, str]] = field(default_factory=list)  # number formats
    heatmaps: list[tuple[Area, str]] = field(default_factory=list)  # (area, Header.heatmap)
    whole_numbers: list[tuple[Area, int, int]] = field(default_factory=list)  # validation
    charts: list[Chart] = field(default_factory=list)
    merges: list[Area] = field(default_factory=list)  # e.g. a paragraph across columns
    print_titles: bool = True  # repeat the label columns and title rows on printed pages

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
    # Every block a reader is shown, in computation order: name -> (title cell, header).
    headers: dict[str, tuple[Area, Header]] = field(default_factory=dict)

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

    def explain(self, name: str, title: Area, header: Header) -> None:
        """Attach a header: its title at `title`, its note as that cell's comment."""
        self.headers[name] = (title, header)
        self.sheet(title.sheet).notes[(title.row, title.col)] = f"{name}\n{header.note}"

    def block(self, name: str, area: Area) -> None:
        """A computed block: checked against the reference trace of the same name."""
        self.blocks[name] = area
        self.name(name, area)
