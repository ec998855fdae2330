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
from openpyxl.styles import Font, PatternFill
from openpyxl.workbook.defined_name import DefinedName

from .a1 import col_letters
from .book import FORMULA, NUMBER, Book, Cell

EPOCH = datetime(2000, 1, 1)
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_STAMP = re.compile(rb"(<dcterms:(?:created|modified)[^>]*>)[^<]*(</dcterms:)")

# A first step toward the classroom look: inputs stand out, titles are bold.
_LOOKS = {
    "title": {"font": Font(bold=True)},
    "header": {"font": Font(italic=True, color="555555")},
    "input": {"fill": PatternFill("solid", fgColor="FFF2CC"), "font": Font(bold=True)},
    "output": {"fill": PatternFill("solid", fgColor="E2EFDA"), "font": Font(bold=True)},
    "weight": {"font": Font(color="1F4E79")},
}
# A leading character that would make a spreadsheet read text as a formula.
_FORMULA_START = ("=", "+", "-", "@")


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
        if sheet.freeze:
            ws.freeze_panes = sheet.freeze
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
