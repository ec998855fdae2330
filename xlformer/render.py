"""Pictures of a sheet, for slides: LibreOffice exports the recomputed workbook to PDF,
one page per sheet, and poppler's `pdftoppm` turns the sheet's page into an image.

LibreOffice loads the workbook with a fresh profile that recomputes every formula
(recalc.py's), so the picture shows the values of the text in the input cell.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from openpyxl import load_workbook

from . import recalc

# Every sheet on one page of its own size, so page n is sheet n.
_PDF = 'pdf:calc_pdf_Export:{"SinglePageSheets":{"type":"boolean","value":"true"}}'
_PDFTOPPM_HINT = "install it with: apt-get install -y poppler-utils"


class NoSuchSheet(ValueError):
    """The workbook has no sheet of that name."""


def sheet_names(path: Path) -> list[str]:
    return load_workbook(path, read_only=True).sheetnames


def first_layer(path: Path) -> str:
    """The first block's sheet: Layer0, or Decoder0 (with its cross-attention) for an
    encoder-decoder."""
    names = sheet_names(path)
    return next(s for s in ("Layer0", "Decoder0", "Encoder0") if s in names)


def render(workbooks: Sequence[tuple[Path, str | None, Path]], dpi: int = 80,
           timeout: float = 600) -> list[Path]:
    """(workbook, sheet or None for the first, output .png or .ppm) each; one LibreOffice run
    for all. A .ppm output is a plain NetPBM image (readable with `read_ppm`)."""
    pdftoppm = shutil.which("pdftoppm")
    if pdftoppm is None:
        raise recalc.EngineMissing(f"pdftoppm not found on PATH; {_PDFTOPPM_HINT}")
    exe = recalc._executable("libreoffice")
    pages = []
    for path, sheet, _ in workbooks:
        names = sheet_names(path)
        if sheet is not None and sheet not in names:
            raise NoSuchSheet(f"{path} has no sheet {sheet!r}; its sheets: {', '.join(names)}")
        pages.append(1 + (names.index(sheet) if sheet else 0))
    with tempfile.TemporaryDirectory(prefix="xlformer-render-") as tmp:
        pdfs = [Path(tmp) / f"{i}.pdf" for i in range(len(workbooks))]
        sheet_pages([w[0] for w in workbooks], pdfs, timeout, exe)
        for pdf, page, (_, _, out) in zip(pdfs, pages, workbooks, strict=True):
            _page_image(pdftoppm, pdf, page, Path(out), dpi, timeout)
    return [Path(w[2]) for w in workbooks]


def sheet_pages(workbooks: Sequence[Path], pdfs: Sequence[Path], timeout: float = 600,
                exe: str | None = None) -> None:
    """Each workbook recomputed and saved as a PDF whose page n is sheet n, whole; one
    LibreOffice run for all."""
    recalc.convert_libreoffice(exe or recalc._executable("libreoffice"),
                               [Path(w).absolute() for w in workbooks], pdfs, _PDF, timeout)


def _page_image(pdftoppm: str, pdf: Path, page: int, out: Path, dpi: int,
                timeout: float) -> None:
    fmt = ["-png"] if out.suffix.lower() == ".png" else []  # default: PPM
    stem = out.with_suffix("")
    cmd = [pdftoppm, *fmt, "-r", str(dpi), "-f", str(page), "-l", str(page), "-singlefile",
           str(pdf), str(stem)]
    recalc._run(cmd, "pdftoppm", [pdf], timeout)
    made = stem.with_suffix(".png" if fmt else ".ppm")
    if made != out:
        made.replace(out)


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
