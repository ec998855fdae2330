"""Pictures of a sheet, for slides: LibreOffice exports the recomputed workbook to PDF,
one page per sheet, and poppler's `pdftoppm` turns the sheet's page into an image.

LibreOffice loads the workbook with a fresh profile that recomputes every formula
(recalc.py's), so the picture shows the values of the text in the input cell.

A part of a sheet (`Cells`: a block by its defined name, or an A1 range) is drawn from
a temporary copy of the workbook in which every other row and column of that sheet is
hidden: LibreOffice's one-page-per-sheet export leaves hidden rows and columns out (it
ignores print areas). A block is drawn with its title and column-label rows above it
and the row-label columns A:B to its left.

Without a resolution, a picture fits a projector: the highest resolution up to
`FIT_DPI[1]` at which it is at most `FIT_WIDTH` pixels wide; a sheet still wider at
`FIT_DPI[0]` (below which text is hard to read) is cut to its left `FIT_WIDTH` pixels.
"""

from __future__ import annotations

import difflib
import math
import posixpath
import re
import shutil
import tempfile
import warnings
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from openpyxl import load_workbook

from . import a1, recalc, writer
from .layout import LABEL_COLS
from .reader import NotAWorkbook, _area, check_xlsx

# Every sheet on one page of its own size, so page n is sheet n.
_PDF = 'pdf:calc_pdf_Export:{"SinglePageSheets":{"type":"boolean","value":"true"}}'
_POPPLER_HINT = "install it with: apt-get install -y poppler-utils"

FIT_WIDTH = 1920  # pixels: a projector's width
FIT_DPI = (60, 100)  # the default picture's resolution: the highest in this range that fits


class NoSuchSheet(ValueError):
    """The workbook has no sheet of that name."""


class BadRange(ValueError):
    """A --range that is neither a defined name of the workbook nor a range on one of its
    sheets."""


@dataclass(frozen=True)
class Cells:
    """A rectangle of one sheet to draw (its top-left cell, counted from 1, and its size),
    and whether the row-label columns A:B are drawn to its left."""

    sheet: str
    row: int
    col: int
    nrows: int
    ncols: int
    labels: bool = False

    def columns(self) -> list[tuple[int, int]]:
        """The columns drawn, as (first, last) runs."""
        last = self.col + self.ncols - 1
        if self.labels and self.col > LABEL_COLS + 1:
            return [(1, LABEL_COLS), (self.col, last)]
        return [(1 if self.labels else self.col, last)]


@dataclass(frozen=True)
class Drawn:
    """A picture written: its size in pixels, its resolution, and the width of the whole
    page when the picture is cut to its left part (else None)."""

    path: Path
    width: int
    height: int
    dpi: int
    cut_from: int | None = None


def _open(path: Path):
    check_xlsx(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return load_workbook(path, read_only=True)
    except Exception as e:  # openpyxl's many ways of failing on a damaged file
        raise NotAWorkbook(f"{path} is not a readable .xlsx workbook: {e}") from None


def sheet_names(path: Path) -> list[str]:
    wb = _open(path)
    try:
        return wb.sheetnames
    finally:
        wb.close()


def first_layer(path: Path) -> str:
    """The first block's sheet: Layer0, or Decoder0 (with its cross-attention) for an
    encoder-decoder."""
    names = sheet_names(path)
    return next(s for s in ("Layer0", "Decoder0", "Encoder0") if s in names)


_SHEET_CELLS = re.compile(r"^(?:'(?P<quoted>(?:[^']|'')+)'|(?P<plain>[^'!]+))!(?P<cells>.*)$")


def find_cells(path: Path, text: str, sheet: str | None = None) -> Cells:
    """What --range names: a defined name (a block, drawn with its title and labels), or
    an A1 range ("Layer0!A1:H20", or "A1:H20" on `sheet`, by default the first), drawn
    as it is."""
    wb = _open(path)
    try:
        return _find_cells(wb, path, text.strip(), sheet)
    finally:
        wb.close()


def _find_cells(wb, path: Path, text: str, sheet: str | None) -> Cells:
    names = dict(_defined_areas(wb))
    folded = {name.lower(): name for name in names}  # Excel's names ignore case
    if text.lower() in folded:
        return _block(wb, names[folded[text.lower()]])
    match = _SHEET_CELLS.match(text)
    if match:
        on = match["quoted"].replace("''", "'") if match["quoted"] else match["plain"].strip()
        cells = match["cells"]
    else:
        on, cells = sheet or wb.sheetnames[0], text
    if ":" not in cells and not re.fullmatch(r"\$?[A-Za-z]{1,3}\$?\d+", cells.strip()):
        close = difflib.get_close_matches(text, list(names), n=1)
        hint = (f" (it is a sheet: --sheet {text})" if text in wb.sheetnames else
                f" (did you mean {close[0]!r}?)" if close else "")
        raise BadRange(f"{path} has no defined name {text!r}{hint}, and it is not a range "
                       "like Layer0!A1:H20")
    if on not in wb.sheetnames:
        raise NoSuchSheet(f"{path} has no sheet {on!r}; its sheets: {', '.join(wb.sheetnames)}")
    try:
        row, col, nrows, ncols = a1.parse_span(cells)
    except ValueError as e:
        raise BadRange(f"--range {text!r}: {e}") from None
    return Cells(on, row, col, nrows, ncols)


def _defined_areas(wb):
    """(name, Cells) of every workbook-level defined name that is a range."""
    for name, dn in wb.defined_names.items():
        try:
            area = _area(dn.attr_text or "")
        except ValueError:
            continue  # a print area, a constant or a formula: not one range
        yield name, Cells(area.sheet, area.row, area.col, area.nrows, area.ncols)


def _block(wb, area: Cells) -> Cells:
    """A block with the title row and column-label row above it and the row labels to
    its left, and to the right the empty cells of the title row as far as its title
    reaches (a narrow block's title runs over the gap after it). A part of a wider block
    (one head's q of h.0.attn.c_attn) has its own columns only: their labels name it."""
    top = max(1, area.row - 2)
    last = area.col + area.ncols - 1
    if area.row > 2:
        last = _title_end(wb[area.sheet], top, area.col, last)
    return Cells(area.sheet, top, area.col, area.row + area.nrows - top, last - area.col + 1,
                 labels=True)


_TITLE_CHARS = 10  # characters of a bold title that a column of the default width holds


def _title_end(ws, row: int, first: int, last: int) -> int:
    """The last column that the title in (row, first) needs, from `last` on over empty
    cells of its row."""
    end = min(a1.MAX_COLS, last + 64)
    values = next(ws.iter_rows(min_row=row, max_row=row, min_col=first, max_col=end,
                               values_only=True), ())
    title = values[0] if values else None
    if not isinstance(title, str):
        return last
    reach = first - 1 + math.ceil(len(title) / _TITLE_CHARS)
    for col in range(last + 1, min(reach, end) + 1):
        if col - first >= len(values) or values[col - first] is not None:
            break
        last = col
    return last


def render(workbooks: Sequence[tuple[Path, str | None, Path]], dpi: int | None = 80,
           timeout: float = 600) -> list[Path]:
    """(workbook, sheet or None for the first, output .png or .ppm) each; one LibreOffice run
    for all. A .ppm output is a plain NetPBM image (readable with `read_ppm`)."""
    return [d.path for d in draw(workbooks, dpi, timeout)]


def draw(workbooks: Sequence[tuple[Path, str | Cells | None, Path]], dpi: int | None = None,
         timeout: float = 600) -> list[Drawn]:
    """(workbook, what to draw: a sheet, Cells or None for the first sheet, output .png or
    .ppm) each, in one LibreOffice run; dpi None fits each picture to FIT_WIDTH. Writes
    each output whole or not at all."""
    for path, what, _ in workbooks:  # a wrong sheet is said before a missing tool
        _page(path, what)
    pdftoppm = _poppler("pdftoppm")
    pdfinfo = _poppler("pdfinfo") if dpi is None else ""
    with tempfile.TemporaryDirectory(prefix="xlformer-render-") as tmp:
        pdfs = export_pdf([(path, what) for path, what, _ in workbooks], Path(tmp), timeout)
        drawn = []
        for i, ((pdf, page), (_, _, out)) in enumerate(zip(pdfs, workbooks, strict=True)):
            image = Path(tmp) / f"{i}{Path(out).suffix.lower()}"
            drawn.append(_page_image(pdftoppm, pdfinfo, pdf, page, image, dpi, timeout))
        for d, (_, _, out) in zip(drawn, workbooks, strict=True):
            writer.atomic_write(Path(out), d.path.read_bytes())
    return [Drawn(Path(out), d.width, d.height, d.dpi, d.cut_from)
            for d, (_, _, out) in zip(drawn, workbooks, strict=True)]


def export_pdf(workbooks: Sequence[tuple[Path, str | Cells | None]], folder: Path,
               timeout: float = 600) -> list[tuple[Path, int]]:
    """Recompute each workbook in LibreOffice (one run for all) and export it to a PDF in
    `folder`, one page per sheet (with Cells, only those cells on their sheet's page);
    returns each PDF and the page of the sheet to draw."""
    pages = [_page(path, what) for path, what in workbooks]
    exe = recalc._executable("libreoffice")
    sources = []
    for i, (path, what) in enumerate(workbooks):
        if isinstance(what, Cells):
            copy = Path(folder) / f"cells{i}.xlsx"
            _hide_all_but(Path(path), copy, what)
            sources.append(copy)
        else:
            sources.append(Path(path).absolute())
    pdfs = [Path(folder) / f"{i}.pdf" for i in range(len(workbooks))]
    recalc.convert_libreoffice(exe, sources, pdfs, _PDF, timeout)
    return list(zip(pdfs, pages, strict=True))


def _page(path: Path, what: str | Cells | None) -> int:
    """The PDF page of the sheet to draw: page n is sheet n."""
    names = sheet_names(path)
    sheet = what.sheet if isinstance(what, Cells) else what
    if sheet is not None and sheet not in names:
        raise NoSuchSheet(f"{path} has no sheet {sheet!r}; its sheets: {', '.join(names)}")
    return 1 + (names.index(sheet) if sheet else 0)


def _poppler(tool: str) -> str:
    found = shutil.which(tool)
    if found is None:
        raise recalc.EngineMissing(f"{tool} not found on PATH; {_POPPLER_HINT}")
    return found


def _page_image(pdftoppm: str, pdfinfo: str, pdf: Path, page: int, out: Path,
                dpi: int | None, timeout: float) -> Drawn:
    full = None  # the page's width in pixels, when the picture is cut to FIT_WIDTH
    if dpi is None:
        width_pt = _page_width(pdfinfo, pdf, page, timeout)
        dpi = max(FIT_DPI[0], min(FIT_DPI[1], math.floor(FIT_WIDTH * 72 / width_pt)))
        if math.ceil(width_pt * dpi / 72) > FIT_WIDTH:
            full = math.ceil(width_pt * dpi / 72)
    fmt = ["-png"] if out.suffix == ".png" else []  # default: PPM
    stem = out.with_suffix("")
    cmd = [pdftoppm, *fmt, "-r", str(dpi), "-f", str(page), "-l", str(page),
           *(["-x", "0", "-y", "0", "-W", str(FIT_WIDTH)] if full else []),
           "-singlefile", str(pdf), str(stem)]
    recalc._run(cmd, "pdftoppm", [pdf], timeout)
    made = stem.with_suffix(".png" if fmt else ".ppm")
    if made != out:
        made.replace(out)
    got_width, got_height = _image_size(out)
    return Drawn(out, got_width, got_height, dpi, full)


def _page_width(pdfinfo: str, pdf: Path, page: int, timeout: float) -> float:
    """A page's width in points (1/72 inch)."""
    log = recalc._run([pdfinfo, "-f", str(page), "-l", str(page), str(pdf)], "pdfinfo",
                      [pdf], timeout)
    match = re.search(rf"^Page\s+{page} size:\s*([\d.]+) x [\d.]+ pts", log, re.MULTILINE)
    if not match:
        raise recalc.EngineError(f"pdfinfo gave no size of page {page} of {pdf}: {log[-500:]}")
    return float(match[1])


def _image_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:32]
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    height, width = read_ppm(path).shape[:2]
    return width, height


# --- a copy of the workbook with everything but the cells hidden --------------------

def _hide_all_but(src: Path, dst: Path, cells: Cells) -> None:
    """Copy the workbook, hiding every row and column of the cells' sheet outside them,
    and leaving out its charts that are anchored outside them (a chart keeps its size
    when the rows under it are hidden, so it would cover the cells); the charts left
    plot their hidden cells as well."""
    with zipfile.ZipFile(src) as zin:
        part = _sheet_part(zin, cells.sheet)
        changed = {part: _hidden(zin.read(part).decode("utf-8"), cells)}
        for drawing in _related(zin, part, "/drawing"):
            changed[drawing] = _anchored_in(zin.read(drawing).decode("utf-8"), cells)
            for chart in _related(zin, drawing, "/chart"):  # plot the hidden cells too
                changed[chart] = re.sub(r'(<(?:\w+:)?plotVisOnly val=")(?:1|true)"', r'\g<1>0"',
                                        zin.read(chart).decode("utf-8"))
        with zipfile.ZipFile(dst, "w") as zout:
            for info in zin.infolist():
                if info.filename in changed:
                    zout.writestr(info, changed[info.filename].encode("utf-8"))
                    continue
                with zin.open(info) as fin, zout.open(info, "w", force_zip64=True) as fout:
                    shutil.copyfileobj(fin, fout, 1 << 20)


_NS_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"


def _sheet_part(archive: zipfile.ZipFile, sheet: str) -> str:
    """The zip member that holds a sheet, from the workbook's relationships."""
    book = ET.fromstring(archive.read("xl/workbook.xml"))
    rid = next(s.get(f"{{{_NS_REL}}}id") for s in book.iter()
               if s.tag.endswith("}sheet") and s.get("name") == sheet)
    return next(target for target, rel_id, _ in _relations(archive, "xl/workbook.xml")
                if rel_id == rid)


def _related(archive: zipfile.ZipFile, part: str, kind: str) -> list[str]:
    """The parts that `part` relates to with a relationship type ending in `kind`."""
    return [target for target, _, rel_type in _relations(archive, part)
            if rel_type.endswith(kind)]


def _relations(archive: zipfile.ZipFile, part: str) -> list[tuple[str, str, str]]:
    """(target part, id, type) of each relationship of `part`."""
    where = PurePosixPath(part)
    rels = str(where.parent / "_rels" / f"{where.name}.rels")
    if rels not in archive.namelist():
        return []
    out = []
    for rel in ET.fromstring(archive.read(rels)):
        target = rel.get("Target", "")
        if rel.get("TargetMode") == "External":
            continue
        path = target.lstrip("/") if target.startswith("/") else \
            posixpath.normpath(str(where.parent / target))
        out.append((path, rel.get("Id", ""), rel.get("Type", "")))
    return out


_ANCHOR = re.compile(r"<(?P<p>\w+:)?(?P<kind>oneCellAnchor|twoCellAnchor|absoluteAnchor)\b"
                     r".*?</(?P=p)?(?P=kind)>", re.S)
_FROM = re.compile(r"<(?:\w+:)?from>\s*<(?:\w+:)?col>(\d+)</.*?<(?:\w+:)?row>(\d+)</", re.S)


def _anchored_in(xml: str, cells: Cells) -> str:
    """A drawing's XML without the objects whose top-left corner is outside the cells."""
    def keep(m: re.Match) -> str:
        corner = _FROM.search(m[0])
        if corner is None:
            return ""
        col, row = int(corner[1]) + 1, int(corner[2]) + 1
        inside = cells.row <= row < cells.row + cells.nrows and any(
            lo <= col <= hi for lo, hi in cells.columns())
        return m[0] if inside else ""

    return _ANCHOR.sub(keep, xml)


_COLS = re.compile(r"<(?P<p>\w+:)?cols>(?P<body>.*?)</(?P=p)?cols>|<(?:\w+:)?cols\s*/>", re.S)
_COL = re.compile(r"<(?:\w+:)?col\b([^>]*?)/?>")
_ATTR = re.compile(r'([\w:]+)="([^"]*)"')
_ROW = re.compile(r"<(?P<p>\w+:)?row\b(?P<attrs>[^>]*?)(?P<end>/?)>")
_SHEET_DATA = re.compile(r"<(?P<p>\w+:)?sheetData\b")


def _hidden(xml: str, cells: Cells) -> str:
    """A worksheet's XML with every row and column outside the cells hidden."""
    keep_cols = cells.columns()
    match = _COLS.search(xml)
    prefix = (_SHEET_DATA.search(xml)["p"] or "") if _SHEET_DATA.search(xml) else ""
    specs = [dict(_ATTR.findall(m)) for m in _COL.findall(match["body"] or "")] if match else []
    cols = f"<{prefix}cols>{_col_tags(specs, keep_cols, prefix)}</{prefix}cols>"
    if match:
        xml = xml[:match.start()] + cols + xml[match.end():]
    else:
        at = _SHEET_DATA.search(xml).start()
        xml = xml[:at] + cols + xml[at:]
    first, last = cells.row, cells.row + cells.nrows - 1
    seen = 0

    def row(m: re.Match) -> str:
        nonlocal seen
        attrs = m["attrs"]
        number = re.search(r'\br="(\d+)"', attrs)
        n = int(number[1]) if number else seen + 1
        missing = "".join(f'<{m["p"] or ""}row r="{k}" hidden="1"/>'  # rows not listed
                          for k in range(seen + 1, n) if not first <= k <= last)
        seen = n
        if first <= n <= last:
            return missing + m[0]
        attrs = re.sub(r'\s+hidden="[^"]*"', "", attrs)
        return f'{missing}<{m["p"] or ""}row{attrs} hidden="1"{m["end"]}>'

    return _ROW.sub(row, xml)


def _col_tags(specs: list[dict], keep: list[tuple[int, int]], prefix: str) -> str:
    """<col> elements: the sheet's own, split where the kept runs start and end, and
    every column outside the kept runs hidden."""
    cuts = {1, a1.MAX_COLS + 1}
    for spec in specs:
        cuts |= {int(spec["min"]), int(spec["max"]) + 1}
    for lo, hi in keep:
        cuts |= {lo, hi + 1}
    cuts = sorted(c for c in cuts if 1 <= c <= a1.MAX_COLS + 1)
    tags = []
    for lo, nxt in zip(cuts, cuts[1:], strict=False):
        spec = next((s for s in specs if int(s["min"]) <= lo <= int(s["max"])), None)
        shown = any(a <= lo <= b for a, b in keep)
        if spec is None and shown:
            continue
        attrs = {"min": str(lo), "max": str(nxt - 1)}
        attrs |= {k: v for k, v in (spec or {"width": "0", "customWidth": "1"}).items()
                  if k not in ("min", "max", "hidden")}
        if not shown:
            attrs["hidden"] = "1"
        tags.append(f"<{prefix}col " + " ".join(f'{k}="{v}"' for k, v in attrs.items()) + "/>")
    return "".join(tags)


def read_ppm(path: Path) -> np.ndarray:
    """A binary PPM (P6) as an array [height, width, 3] of uint8."""
    data = Path(path).read_bytes()
    fields, pos = [], 0
    while len(fields) < 4:  # magic, width, height, maxval; '#' starts a comment
        while data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            pos = data.index(b"\n", pos) + 1
            continue
        end = pos
        while not data[end:end + 1].isspace():
            end += 1
        fields.append(data[pos:end])
        pos = end
    if fields[0] != b"P6" or int(fields[3]) != 255:
        raise ValueError(f"{path} is not an 8-bit binary PPM")
    width, height = int(fields[1]), int(fields[2])
    pixels = np.frombuffer(data, dtype=np.uint8, count=width * height * 3, offset=pos + 1)
    return pixels.reshape(height, width, 3)
