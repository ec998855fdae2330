"""The only module that writes through openpyxl: a Book in, a reproducible .xlsx out.

Rows are streamed through openpyxl's write-only mode, sheet by sheet and top to
bottom: each row's cells are made from the Book's single cells and its blocks' rows
just before they are written, so memory stays flat however big the model. Cells are
recycled from one prepared cell per look, since making and styling a fresh openpyxl
cell costs more than writing it.

Reproducible means byte-identical for the same Book: every zip entry gets a fixed
timestamp as it is written, and so do the document properties. The file is written
next to its destination and moved into place only when complete, so an interrupted
build never leaves half a workbook.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import shutil
import tempfile
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterator
from copy import copy
from datetime import datetime
from pathlib import Path

import openpyxl
from openpyxl import Workbook
from openpyxl.cell import _writer as cell_writer
from openpyxl.cell.cell import Cell as XlCell
from openpyxl.chart import BarChart, Reference
from openpyxl.comments import Comment
from openpyxl.formatting.formatting import ConditionalFormattingList
from openpyxl.formatting.rule import ColorScaleRule
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils.cell import coordinate_to_tuple
from openpyxl.workbook.defined_name import DefinedName
from openpyxl.worksheet.cell_range import CellRange
from openpyxl.worksheet.datavalidation import DataValidation
from openpyxl.worksheet.hyperlink import Hyperlink
from openpyxl.writer.excel import ExcelWriter

from .a1 import col_letters, span
from .book import FORMULA, NUMBER, Book, Cell, Chart, Sheet
from .weights import SHORTEST_DIGITS

EPOCH = datetime(2000, 1, 1)
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_DATA_TYPE = {FORMULA: "f", NUMBER: "n"}  # anything else is text: "s"

# The colour convention (stated on the guide sheet): what you may type in is yellow with
# blue bold text, typed-in weights are blue on light blue, computed cells are black on
# white, the output is green. Heatmaps colour computed values by size.
INPUT_FILL, WEIGHT_FILL, OUTPUT_FILL, TITLE_FILL = "FFF2CC", "DDEBF7", "E2EFDA", "EDEDED"
# Heatmap kinds: "unit" for values in 0..1 (white to blue), "diverging" for anything
# else (blue for the lowest, white for the median, red for the highest).
BLUE, WHITE, RED = "5B9BD5", "FFFFFF", "F8696B"
_WRAP = Alignment(wrap_text=True, vertical="top")
LOOKS = {
    "title": {"font": Font(bold=True), "fill": PatternFill("solid", fgColor=TITLE_FILL)},
    "header": {"font": Font(italic=True, color="555555")},
    "collabel": {"font": Font(italic=True, color="555555"),
                 "alignment": Alignment(horizontal="right")},
    "label": {"font": Font(italic=True, color="555555")},
    "input": {"fill": PatternFill("solid", fgColor=INPUT_FILL),
              "font": Font(bold=True, color="0000CC")},
    "output": {"fill": PatternFill("solid", fgColor=OUTPUT_FILL), "font": Font(bold=True)},
    "weight": {"fill": PatternFill("solid", fgColor=WEIGHT_FILL), "font": Font(color="1F4E79")},
    "computed": {},
    "heading": {"font": Font(bold=True, size=16)},
    "subheading": {"font": Font(bold=True, size=12)},
    "text": {"alignment": _WRAP},
    "link": {"font": Font(color="0563C1", underline="single")},
    "swatch_blue": {"fill": PatternFill("solid", fgColor=BLUE)},
    "swatch_red": {"fill": PatternFill("solid", fgColor=RED)},
}
_SCALES = {
    "unit": lambda: ColorScaleRule(start_type="num", start_value=0, start_color=WHITE,
                                   end_type="num", end_value=1, end_color=BLUE),
    "diverging": lambda: ColorScaleRule(start_type="min", start_color=BLUE,
                                        mid_type="percentile", mid_value=50, mid_color=WHITE,
                                        end_type="max", end_color=RED),
}
# A leading character that would make a spreadsheet read text as a formula.
_FORMULA_START = ("=", "+", "-", "@")
CHART_ROWS = 16



# progress(sheet name, cells just written): called once per row.
Progress = Callable[[str, int], None]


def save(book: Book, path: Path, progress: Progress | None = None) -> None:
    """Write `book` to `path` atomically."""
    with atomic_file(Path(path)) as fh:
        write(book, fh, progress)


def to_bytes(book: Book) -> bytes:
    buffer = io.BytesIO()
    write(book, buffer)
    return buffer.getvalue()


def write(book: Book, fh, progress: Progress | None = None) -> None:
    """Stream `book` into the binary file `fh`."""
    if openpyxl.LXML:
        raise RuntimeError(
            "openpyxl was imported with lxml before xlformer, and lxml writes other bytes: "
            "import xlformer before openpyxl, or set OPENPYXL_LXML=False (see "
            "xlformer/__init__.py)")
    wb = Workbook(write_only=True)
    looks = _Looks(wb)
    sheets = [(sheet, wb.create_sheet(sheet.name)) for sheet in book.sheets.values()]
    if sheets:
        sheets[0][1].sheet_view.tabSelected = True  # opens on the first sheet, the guide
    try:
        with _texts_as_given():
            _write(book, wb, sheets, looks, progress, fh)
    except BaseException:
        _abandon([ws for _, ws in sheets])
        raise


def _write(book: Book, wb, sheets, looks, progress, fh) -> None:
    for sheet, ws in sheets:
        _write_sheet(ws, sheet, looks, progress or (lambda _sheet, _cells: None))
    for name, area in book.names.items():
        wb.defined_names[name] = DefinedName(name,
                                             attr_text=area.full_ref("", absolute=True))
    wb.properties.creator = "xlformer"
    wb.properties.created = wb.properties.modified = EPOCH
    archive = _FixedTimeZip(fh, "w", zipfile.ZIP_DEFLATED, allowZip64=True)
    ExcelWriter(wb, archive).save()  # closes the archive


@contextlib.contextmanager
def _texts_as_given():
    """While writing: a number cell's value, which `number_text` has made its text,
    goes into the file as it is. openpyxl's `safe_string` would do the same, but only
    after checking it against 30 numeric types, which costs more than the formatting."""
    given = cell_writer.safe_string
    cell_writer.safe_string = lambda value: value if type(value) is str else given(value)
    try:
        yield
    finally:
        cell_writer.safe_string = given


def _abandon(worksheets) -> None:
    """After an error or Ctrl-C: stop openpyxl's half-written sheets now, and delete
    their temporary files, rather than leave both to interpreter shutdown (which
    prints tracebacks and, on a hard exit, leaves gigabytes in the temp folder)."""
    for ws in worksheets:
        with contextlib.suppress(Exception):
            if ws._rows is not None:
                ws._rows.close()  # ends the rows' generator while its file is open
        if ws._writer is not None:
            with contextlib.suppress(Exception):
                ws._writer.close()
            with contextlib.suppress(OSError):
                os.remove(ws._writer.out)


# docProps/app.xml as every openpyxl 3.1 writes it but for its own version number, which
# would make the bytes depend on the installed openpyxl. "Microsoft" opens the name, as
# openpyxl's does: LibreOffice reads the generator's name (some import quirks follow it).
APP_PART = "docProps/app.xml"
APP_XML = (b'<Properties xmlns="http://schemas.openxmlformats.org/officeDocument/2006/'
           b'extended-properties"><Application>Microsoft Excel Compatible / Openpyxl'
           b'</Application><AppVersion>3.1</AppVersion></Properties>')


class _FixedTimeZip(zipfile.ZipFile):
    """A zip whose entries all carry the same timestamp and mode, whoever writes them,
    and the same application properties whichever openpyxl 3.1 writes them."""

    def writestr(self, name, data, *args, **kwargs):
        name = name if isinstance(name, str) else name.filename
        super().writestr(_entry(name), APP_XML if name == APP_PART else data)

    def write(self, filename, arcname=None, *args, **kwargs):
        info = _entry(arcname or os.path.basename(filename))
        info.file_size = os.path.getsize(filename)  # > 2 GB switches on zip64
        with open(filename, "rb") as src, self.open(info, "w") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    return info


class _FastCell(XlCell):
    """An openpyxl cell whose style is worked out once, not at every write."""

    __slots__ = ("_sid",)

    @property
    def style_id(self) -> int:
        return self._sid

    @property
    def has_style(self) -> bool:
        return self._sid != 0


class _Looks:
    """One prepared cell per (look, number format, quote prefix), reused for every cell
    with that look: the writer writes each cell before the next one is made."""

    def __init__(self, wb):
        self.wb = wb
        self.styles: dict[tuple, tuple] = {}

    def style(self, ws, key: tuple) -> tuple:
        if key not in self.styles:
            look, fmt, quote = key
            probe = XlCell(ws)
            for attr, value in LOOKS.get(look, {}).items():
                setattr(probe, attr, value)
            if fmt:
                probe.number_format = fmt
            if quote:
                probe.quotePrefix = True
            self.styles[key] = (probe._style, probe.style_id if probe.has_style else 0)
        return self.styles[key]

    def cell(self, ws, key: tuple) -> _FastCell:
        array, sid = self.style(ws, key)
        cell = _FastCell(ws, style_array=copy(array))
        cell._sid = sid
        return cell


def _write_sheet(ws, sheet: Sheet, looks: _Looks, progress: Progress) -> None:
    # Everything that goes before the rows in the sheet's XML comes first.
    for col, width in sorted(sheet.widths.items()):
        ws.column_dimensions[col_letters(col)].width = width
    for row, height in sorted(sheet.heights.items()):
        ws.row_dimensions[row].height = height
    if sheet.freeze:
        ws.freeze_panes = sheet.freeze
    # Rows are handed over as ready cells (see _Row): skip openpyxl's wrapping of values.
    ws._values_to_row = lambda cells, _row: cells
    last_row, last_col = sheet.bounds()
    for row in _Rows(ws, sheet, looks):
        ws.append(iter(row))  # a generator: openpyxl takes no other iterable
        progress(f"{sheet.name} {row.block}", row.size)
    _present(ws, sheet, last_row, last_col)


class _Rows:
    """The sheet's rows in order, each merging the single cells and block rows on it."""

    def __init__(self, ws, sheet: Sheet, looks: _Looks):
        self.ws, self.sheet, self.looks = ws, sheet, looks
        self.singles: dict[int, list[tuple[int, Cell]]] = defaultdict(list)
        for (row, col), cell in sorted(sheet.cells.items()):
            self.singles[row].append((col, cell))
        for row, col in sorted(sheet.notes.keys() | sheet.links.keys()):
            if (row, col) not in sheet.cells:  # a note on an empty cell
                self.singles[row].append((col, Cell(NUMBER, None)))
                self.singles[row].sort(key=lambda cc: cc[0])
        self.formats = _formats_by_row(sheet)
        self.fill_formats = {id(fill): _format_of(sheet, fill.area) for fill in sheet.fills}
        self.reused: dict[tuple, _FastCell] = {}

    def __iter__(self) -> Iterator[_Row]:
        fills = sorted(self.sheet.fills, key=lambda f: (f.area.row, f.area.col))
        last_row = self.sheet.bounds()[0]
        active, k = [], 0
        for r in range(1, last_row + 1):
            while k < len(fills) and fills[k].area.row == r:
                active.append(fills[k])
                k += 1
            active = [f for f in active if f.area.row + f.area.nrows > r]
            parts = [(f.area.col, f, f.row(r - f.area.row)) for f in active]
            parts += [(col, None, cell) for col, cell in self.singles.get(r, ())]
            parts.sort(key=lambda p: p[0])
            yield _Row(self, r, parts)

    def reusable(self, kind: str, look: str, fmt: str, quote: bool = False) -> _FastCell:
        key = (look, fmt, quote)
        cell = self.reused.get((kind, key))
        if cell is None:
            cell = self.reused[(kind, key)] = self.looks.cell(self.ws, key)
            cell.data_type = _DATA_TYPE.get(kind, "s")
        return cell

    def text(self, r: int, c: int, cell: Cell, fmt: str) -> XlCell:
        quote = str(cell.value).startswith(_FORMULA_START)
        out = self.reusable(cell.kind, cell.style, fmt, quote)
        out.row, out.column = r, c
        _set_value(out, cell.kind, cell.value)
        return out

    def single(self, r: int, c: int, cell: Cell) -> XlCell:
        sheet = self.sheet
        fmt = next((fmt for c0, c1, fmt in self.formats.get(r, ()) if c0 <= c <= c1), "")
        quote = cell.kind not in _DATA_TYPE and str(cell.value).startswith(_FORMULA_START)
        decorated = (r, c) in sheet.notes or (r, c) in sheet.links
        out = (self.looks.cell(self.ws, (cell.style, fmt, quote)) if decorated
               else self.reusable(cell.kind, cell.style, fmt, quote))
        out.row, out.column = r, c
        _set_value(out, cell.kind, cell.value)
        if (r, c) in sheet.notes:
            text = sheet.notes[(r, c)]
            lines = sum(len(p) // 48 + 1 for p in text.split("\n"))
            out.comment = Comment(text, "xlformer", height=16 * lines + 20, width=320)
        if (r, c) in sheet.links:
            out.hyperlink = Hyperlink(ref=out.coordinate, location=sheet.links[(r, c)])
        return out


class _Row:
    """One row's cells, made as openpyxl writes them."""

    def __init__(self, rows: _Rows, r: int, parts: list):
        self.rows, self.r, self.parts = rows, r, parts
        self.size = sum(len(v) if f is not None else 1 for _, f, v in parts)
        blocks = [(len(v), f.name) for _, f, v in parts if f is not None]
        self.block = max(blocks)[1] if blocks else ""  # the widest, for the progress bar

    def __iter__(self) -> Iterator[XlCell]:
        rows, r, free = self.rows, self.r, 1
        for col, fill, values in self.parts:
            if col < free:
                raise ValueError(f"{rows.sheet.name}: cell ({r}, {col}) is written twice")
            if fill is None:
                free = col + 1
                yield rows.single(r, col, values)
                continue
            free = col + len(values)
            fmt = rows.fill_formats[id(fill)]
            if fill.kind not in _DATA_TYPE:  # text: each value checked for a quote prefix
                for j, value in enumerate(values, col):
                    yield rows.text(r, j, Cell(fill.kind, value, fill.style), fmt)
                continue
            cell = rows.reusable(fill.kind, fill.style, fmt)
            cell.row = r
            number = fill.kind == NUMBER
            for j, value in enumerate(values, col):
                cell.column, cell._value = j, number_text(value) if number else value
                yield cell


def _set_value(cell: XlCell, kind: str, value) -> None:
    # Text is data: an explicit string type (never parsed as a formula), and a quote
    # prefix so that an engine re-typing the cell does not evaluate a leading '='.
    if kind == NUMBER:
        cell._value = number_text(value)
    else:
        cell._value = value if kind in _DATA_TYPE or value is None else str(value)
    cell.data_type = _DATA_TYPE.get(kind, "s")


_SHORT = max(SHORTEST_DIGITS.values())  # 9: a float32's most digits


def number_text(value):
    """A number as the file holds it: as openpyxl writes numbers ("%.16g"), except a
    number whose shortest decimal has at most 9 significant digits (a weight from a
    float32 or float16 source: see weights.to_sheet_precision) where "%.16g" would
    show 16 ("0.9939422999999999" for 0.9939423, one such weight in 25): then that
    decimal, which reads back as the same double."""
    if value is None or not math.isfinite(value):
        return value  # for openpyxl, which writes no value for NaN and infinities
    text = "%.16g" % value  # noqa: UP031 (openpyxl's own expression, so the same bytes)
    # A 16-digit form of a number of at most 9 digits ends in a run of 0s or 9s.
    if ("000000" in text or "999999" in text) and _significant(text) == 16:
        short = repr(float(value))
        if _significant(short) <= _SHORT:
            return short
    return text


def _significant(text: str) -> int:
    """The significant digits of a number written as Python writes it."""
    mantissa = text.partition("e")[0].replace(".", "").lstrip("-0")
    return len(mantissa.rstrip("0")) or 1


def _formats_by_row(sheet: Sheet) -> dict[int, list[tuple[int, int, str]]]:
    """Number formats by row, for the single cells that lie inside a formatted block."""
    out: dict[int, list] = defaultdict(list)
    rows = {r for r, _ in sheet.cells}
    for area, fmt in sheet.formats:
        for r in rows.intersection(range(area.row, area.row + area.nrows)):
            out[r].append((area.col, area.col + area.ncols - 1, fmt))
    return out


def _format_of(sheet: Sheet, area) -> str:
    """The number format of a block: its own, else the block it lies in."""
    for fmt_area, fmt in sheet.formats:
        if fmt_area == area:
            return fmt
    for a, fmt in sheet.formats:
        if (a.sheet == area.sheet and a.row <= area.row and a.col <= area.col
                and area.row + area.nrows <= a.row + a.nrows
                and area.col + area.ncols <= a.col + a.ncols):
            return fmt
    return ""


def _present(ws, sheet: Sheet, last_row: int, last_col: int) -> None:
    """Everything that changes how values look, never what they are."""
    ws.conditional_formatting = ConditionalFormattingList()
    for area, kind in sheet.heatmaps:
        ws.conditional_formatting.add(span(area.row, area.col, area.nrows, area.ncols),
                                      _SCALES[kind]())
    for area, low, high in sheet.whole_numbers:
        rule = DataValidation(type="whole", operator="between", formula1=str(low),
                              formula2=str(high), allow_blank=True, errorStyle="warning",
                              error=f"Type a whole number from {low} to {high}.",
                              prompt=f"A whole number from {low} to {high}.")
        rule.add(span(area.row, area.col, area.nrows, area.ncols))
        ws.data_validations.append(rule)
    for area in sheet.merges:
        ws.merged_cells.add(CellRange(span(area.row, area.col, area.nrows, area.ncols)))
    for chart in sheet.charts:
        ws.add_chart(_bar_chart(ws, chart), chart.anchor)
    charts = [coordinate_to_tuple(c.anchor)[0] + CHART_ROWS for c in sheet.charts]
    ws.print_area = f"A1:{col_letters(last_col)}{max([last_row, *charts])}"
    ws.page_setup.orientation = "landscape"
    if sheet.print_titles:
        ws.print_title_cols = "A:B"


def _bar_chart(ws, chart: Chart) -> BarChart:
    bar = BarChart()
    bar.type, bar.title, bar.legend = "col", chart.title, None
    bar.x_axis.title, bar.y_axis.title = chart.x_title, chart.y_title
    bar.width, bar.height = 24, 8  # cm: about CHART_ROWS rows of the default height
    v, c = chart.values, chart.categories
    bar.add_data(Reference(ws, min_col=v.col, min_row=v.row, max_col=v.col + v.ncols - 1,
                           max_row=v.row + v.nrows - 1), from_rows=True)
    bar.set_categories(Reference(ws, min_col=c.col, min_row=c.row,
                                 max_col=c.col + c.ncols - 1, max_row=c.row + c.nrows - 1))
    return bar


@contextlib.contextmanager
def atomic_file(path: Path):
    """A binary file in the same folder as `path`, renamed over it only once complete."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide the workbook from others
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename over `path`."""
    with atomic_file(path) as fh:
        fh.write(data)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
