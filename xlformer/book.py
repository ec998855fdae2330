"""What goes in the cells: the plan of a workbook, which the builder makes and the writer saves.

Single cells (titles, labels, scalars) are kept as they are. Blocks are kept as a
`Fill`: an area and a function that makes one row of its values when the writer
reaches that row, so a model's millions of cells never all exist at once.

Four kinds of cell, kept apart so that no user text can turn into a formula and no
Python-computed number can pose as a model value:
- FORMULA: computed by the spreadsheet;
- NUMBER: a weight or a spec constant (epsilon, padding id), written as given;
- TEXT: data from the user or the spec (input text, tokens), always a literal string;
- LABEL: the workbook's own titles and labels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
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
class Fill:
    """A block of cells of one kind, made a row at a time: `row(i)` gives the values of
    the block's row i (prepared formulas, numbers or text), left to right."""

    name: str
    area: Area
    kind: str
    row: Callable[[int], Sequence]
    style: str = ""

    def cell(self, i: int, j: int) -> Cell:
        return Cell(self.kind, self.row(i)[j], self.style)


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
    cells: dict[tuple[int, int], Cell] = field(default_factory=dict)  # single cells
    fills: list[Fill] = field(default_factory=list)  # blocks, made when written
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

    def add(self, fill: Fill) -> None:
        a = fill.area
        limits.check_area(fill.name, self.name, a.row + a.nrows - 1, a.col + a.ncols - 1)
        self.fills.append(fill)

    def get(self, row: int, col: int) -> Cell | None:
        """The cell at (row, col), made from its block if it is in one."""
        if (row, col) in self.cells:
            return self.cells[(row, col)]
        for fill in self.fills:
            a = fill.area
            if a.row <= row < a.row + a.nrows and a.col <= col < a.col + a.ncols:
                return fill.cell(row - a.row, col - a.col)
        return None

    def items(self, kind: str | None = None) -> Iterator[tuple[tuple[int, int], Cell]]:
        """Every cell (or every cell of one kind: other blocks are not made), single cells
        first, then each block row by row; for counting and checking, as the writer
        streams rows instead."""
        yield from ((p, c) for p, c in self.cells.items() if kind in (None, c.kind))
        for fill in self.fills:
            if kind not in (None, fill.kind):
                continue
            a = fill.area
            for i in range(a.nrows):
                for j, value in enumerate(fill.row(i)):
                    yield (a.row + i, a.col + j), Cell(fill.kind, value, fill.style)

    def bounds(self) -> tuple[int, int]:
        """(last row, last column) holding a cell."""
        rows = [r for r, _ in self.cells] + [f.area.row + f.area.nrows - 1 for f in self.fills]
        cols = [c for _, c in self.cells] + [f.area.col + f.area.ncols - 1 for f in self.fills]
        return max(rows, default=1), max(cols, default=1)


@dataclass
class Book:
    sheets: dict[str, Sheet] = field(default_factory=dict)
    names: dict[str, Area] = field(default_factory=dict)  # defined names
    blocks: dict[str, Area] = field(default_factory=dict)  # computed blocks by trace name
    # Every block a reader is shown, in computation order: name -> (title cell, header).
    headers: dict[str, tuple[Area, Header]] = field(default_factory=dict)
    # What was left out to keep a big workbook small, said to the user when it is built.
    notices: list[str] = field(default_factory=list)

    def sheet(self, name: str) -> Sheet:
        if name not in self.sheets:
            self.sheets[name] = Sheet(names.check_sheet_name(name))
        return self.sheets[name]

    def put(self, area: Area, i: int, j: int, cell: Cell) -> None:
        self.sheet(area.sheet).put(*area.at(i, j), cell)

    def fill(self, fill: Fill) -> None:
        self.sheet(fill.area.sheet).add(fill)

    def formulas(self) -> Iterator[str]:
        """Every formula in the book (blocks of numbers are not read)."""
        for sheet in self.sheets.values():
            yield from (str(c.value) for _, c in sheet.items(FORMULA))

    def counts(self) -> tuple[int, int]:
        """(cells written, of which formulas)."""
        cells = formulas = 0
        for sheet in self.sheets.values():
            cells += len(sheet.cells)
            formulas += sum(c.kind == FORMULA for c in sheet.cells.values())
            for fill in sheet.fills:
                size = fill.area.nrows * fill.area.ncols
                cells += size
                formulas += size if fill.kind == FORMULA else 0
        return cells, formulas

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
