"""The only module that writes through openpyxl: a Book in, a reproducible .xlsx out.

Reproducible means byte-identical for the same Book: openpyxl stamps the current time
into docProps/core.xml and into every zip entry, so the saved archive is rewritten with
fixed timestamps. The file is written next to its destination and moved into place
only when complete, so an interrupted build never leaves half a workbook.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import zipfile
from datetime import datetime
from pathlib import Path

from openpyxl import Workbook
from openpyxl.chart import BarChart, Reference
from openpyxl.comments import Comment
from openpyxl.formatting.rule import ColorScaleRule
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils.cell import coordinate_to_tuple
from openpyxl.workbook.defined_name import DefinedName
from openpyxl.worksheet.datavalidation import DataValidation
from openpyxl.worksheet.hyperlink import Hyperlink

from .a1 import col_letters, span
from .book import FORMULA, NUMBER, Book, Cell, Chart, Sheet

EPOCH = datetime(2000, 1, 1)
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_STAMP = re.compile(rb"(<dcterms:(?:created|modified)[^>]*>)[^<]*(</dcterms:)")

# The colour convention (stated on the guide sheet): what you may type in is yellow with
# blue bold text, typed-in weights are blue on light blue, computed cells are black on
# white, the output is green. Heatmaps colour computed values by size.
INPUT_FILL, WEIGHT_FILL, OUTPUT_FILL, TITLE_FILL = "FFF2CC", "DDEBF7", "E2EFDA", "EDEDED"
# Heatmap kinds: "unit" for values in 0..1 (white to blue), "diverging" for anything
# else (blue for the lowest, white for the median, red for the highest).
BLUE, WHITE, RED = "5B9BD5", "FFFFFF", "F8696B"
_WRAP = Alignment(wrap_text=True, vertical="top")
_LOOKS = {
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


def save(book: Book, path: Path) -> None:
    """Write `book` to `path` atomically."""
    atomic_write(Path(path), to_bytes(book))


def to_bytes(book: Book) -> bytes:
    wb = Workbook()
    wb.remove(wb.active)
    for sheet in book.sheets.values():
        ws = wb.create_sheet(sheet.name)
        for (row, col), cell in sorted(sheet.cells.items()):
            _write_cell(ws.cell(row=row, column=col), cell)
        for col, width in sorted(sheet.widths.items()):
            ws.column_dimensions[col_letters(col)].width = width
        for row, height in sorted(sheet.heights.items()):
            ws.row_dimensions[row].height = height
        if sheet.freeze:
            ws.freeze_panes = sheet.freeze
        _present(ws, sheet)
    if wb.worksheets:
        wb.worksheets[0].sheet_view.tabSelected = True  # opens on the first sheet, the guide
    for name, area in book.names.items():
        wb.defined_names[name] = DefinedName(name, attr_text=area.full_ref("", absolute=True))
    wb.properties.creator = "xlformer"
    wb.properties.created = EPOCH
    buffer = io.BytesIO()
    wb.save(buffer)
    return _normalize_zip(buffer.getvalue())


def _write_cell(target, cell: Cell) -> None:
    if cell.kind in (FORMULA, NUMBER):
        target.value = cell.value
    else:
        # Text is data: an explicit string type, and a quote prefix so that engines
        # re-reading or re-typing the cell never evaluate a leading '='.
        target.value = str(cell.value)
        target.data_type = "s"
        if target.value.startswith(_FORMULA_START):
            target.quotePrefix = True
    for attr, value in _LOOKS.get(cell.style, {}).items():
        setattr(target, attr, value)


def _present(ws, sheet: Sheet) -> None:
    """Everything that changes how values look, never what they are."""
    for area, fmt in sheet.formats:
        for r in range(area.row, area.row + area.nrows):
            for c in range(area.col, area.col + area.ncols):
                ws.cell(row=r, column=c).number_format = fmt
    for area, kind in sheet.heatmaps:
        ws.conditional_formatting.add(span(area.row, area.col, area.nrows, area.ncols),
                                      _SCALES[kind]())
    for (row, col), text in sorted(sheet.notes.items()):
        lines = sum(len(p) // 48 + 1 for p in text.split("\n"))
        ws.cell(row=row, column=col).comment = Comment(text, "xlformer", height=16 * lines + 20,
                                                       width=320)
    for (row, col), location in sorted(sheet.links.items()):
        cell = ws.cell(row=row, column=col)
        cell.hyperlink = Hyperlink(ref=cell.coordinate, location=location)
    for area, low, high in sheet.whole_numbers:
        rule = DataValidation(type="whole", operator="between", formula1=str(low),
                              formula2=str(high), allow_blank=True, errorStyle="warning",
                              error=f"Type a whole number from {low} to {high}.",
                              prompt=f"A whole number from {low} to {high}.")
        rule.add(span(area.row, area.col, area.nrows, area.ncols))
        ws.add_data_validation(rule)
    for area in sheet.merges:
        ws.merge_cells(span(area.row, area.col, area.nrows, area.ncols))
    for chart in sheet.charts:
        ws.add_chart(_bar_chart(ws, chart), chart.anchor)
    ws.print_area = f"A1:{col_letters(ws.max_column)}{_last_row(ws, sheet)}"
    ws.page_setup.orientation = "landscape"
    if sheet.print_titles:
        ws.print_title_cols = "A:B"


def _last_row(ws, sheet: Sheet) -> int:
    """The last row to print: the last cell's, or the bottom of the lowest chart."""
    charts = [coordinate_to_tuple(c.anchor)[0] + CHART_ROWS for c in sheet.charts]
    return max([ws.max_row, *charts])


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


def _normalize_zip(data: bytes) -> bytes:
    """Same entries in the same order, with fixed timestamps."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, \
            zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            body = src.read(info.filename)
            if info.filename == "docProps/core.xml":
                body = _STAMP.sub(rb"\g<1>2000-01-01T00:00:00Z\g<2>", body)
            fixed = zipfile.ZipInfo(info.filename, date_time=_ZIP_EPOCH)
            fixed.compress_type = zipfile.ZIP_DEFLATED
            fixed.external_attr = 0o644 << 16
            dst.writestr(fixed, body)
    return out.getvalue()


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename over `path`."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide the workbook from others
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
