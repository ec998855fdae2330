"""Reading workbooks back: what a built workbook holds, and what an engine computed.

A workbook carries everything needed to check it: its spec (sheet Spec), its weights
(named blocks on sheet Weights), its input text and the position of every block
(defined names). Recomputed copies keep cell positions, so blocks are located in
the original and read at the same place in the engine's copy.

Every workbook is opened by `load`, which also reads what the engines save: a workbook
a user typed into and saved in LibreOffice or Gnumeric reads like one xlformer wrote.
"""

from __future__ import annotations

import re
import warnings
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
from openpyxl.reader.excel import ExcelReader
from openpyxl.utils.cell import range_boundaries
from openpyxl.utils.exceptions import InvalidFileException
from openpyxl.xml.constants import SHEET_MAIN_NS

from .builder import SPEC, TRANSPOSED
from .layout import Area
from .spec import Spec, parse_spec
from .weights import Params, expected_shapes

# One range on one sheet: 'Sheet name'!$A$1:$B$2 (quotes doubled inside) or Sheet!$A$1.
_TARGET = re.compile(r"^(?:'(?P<quoted>(?:[^']|'')+)'|(?P<plain>[^'!,\s]+))"
                     r"!(?P<range>\$?[A-Z]+\$?\d+(?::\$?[A-Z]+\$?\d+)?)$")


@dataclass
class Built:
    """A workbook as xlformer wrote it (formulas, not values)."""

    spec: Spec
    params: Params
    text: str | tuple  # the input cell's text, or the typed ids' cells (vocab.input = "ids")
    names: dict[str, Area]
    formulas: dict[tuple[str, int, int], str]  # (sheet, row, col) -> formula
    # Blocks stored transposed (a vocabulary too wide for the sheet runs down the rows):
    # their cell (i, j) is the reference's (j, i).
    transposed: frozenset[str] = frozenset()


def open_values(path: Path):
    """A workbook's computed values (openpyxl data_only)."""
    return load(path, data_only=True)


class NotAWorkbook(ValueError):
    """A file that is not an xlformer workbook."""


def check_xlsx(path: Path) -> None:
    """Say what is wrong with a file given as a workbook before anything opens it (a
    NotAWorkbook names it): missing, a folder, not a zip, a zip but not a workbook."""
    path = Path(path)
    if not path.exists():
        raise NotAWorkbook(f"{path} does not exist")
    if path.is_dir():
        raise NotAWorkbook(f"{path} is a folder, not an .xlsx workbook")
    try:
        with zipfile.ZipFile(path) as archive:
            parts = set(archive.namelist())
    except zipfile.BadZipFile:
        raise NotAWorkbook(f"{path} is not an .xlsx workbook: it is not a zip archive, "
                           "which every .xlsx file is") from None
    except OSError as e:
        raise NotAWorkbook(f"{path} cannot be read: {e.strerror or e}") from None
    if "xl/workbook.xml" not in parts:
        raise NotAWorkbook(f"{path} is a zip archive but not an .xlsx workbook "
                           "(it has no xl/workbook.xml)")
    if path.suffix.lower() != ".xlsx":
        raise NotAWorkbook(f"{path} is a workbook, but its name must end in .xlsx")


def load(path: Path, data_only: bool = False):
    """The workbook at `path` as openpyxl reads it (formulas, or with `data_only` the
    values last computed), whichever program saved it last."""
    reader = ExcelReader(path, read_only=False, data_only=data_only)
    reader.archive.close()
    reader.archive = _Archive(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Gnumeric's files lack a default style
            reader.read()
    finally:
        reader.archive.close()
    return reader.wb


class _Archive(zipfile.ZipFile):
    """A workbook's zip with the comment parts openpyxl cannot read mended.

    openpyxl gives each comment the author at its `authorId` in the part's list of
    authors. LibreOffice saves a comment without author as the author " ", and Gnumeric,
    loading that, saves an empty list: every comment's index then points past the end.
    Such a list is filled up with " " (no author), as LibreOffice writes it."""

    def read(self, name, pwd=None):
        data = super().read(name, pwd)
        if b"commentList" not in data:
            return data
        try:
            root = ElementTree.fromstring(data)
        except ElementTree.ParseError:
            return data  # for openpyxl to refuse
        if root.tag != f"{{{SHEET_MAIN_NS}}}comments":
            return data
        authors = root.find(f"{{{SHEET_MAIN_NS}}}authors")
        if authors is None:
            authors = ElementTree.Element(f"{{{SHEET_MAIN_NS}}}authors")
            root.insert(0, authors)
        needed = 1 + max((int(c.get("authorId", 0))
                          for c in root.iter(f"{{{SHEET_MAIN_NS}}}comment")), default=-1)
        if len(authors) >= needed:
            return data
        for _ in range(needed - len(authors)):
            ElementTree.SubElement(authors, f"{{{SHEET_MAIN_NS}}}author").text = " "
        return ElementTree.tostring(root)


def read_built(path: Path) -> Built:
    check_xlsx(path)
    try:
        wb = load(path)
    except (OSError, InvalidFileException, KeyError, ValueError, SyntaxError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise NotAWorkbook(f"{path} is not a readable .xlsx workbook: {why}") from None
    if SPEC not in wb.sheetnames or not ({"input_text", "input.typed"} & set(wb.defined_names)):
        raise NotAWorkbook(f"{path} is not a workbook built by xlformer (it has no Spec sheet)")
    names = _areas(wb)
    source = "\n".join("" if r[0] is None else str(r[0])
                       for r in wb[SPEC].iter_rows(min_row=2, max_col=1, values_only=True))
    spec = parse_spec(source + "\n", origin=f"the spec inside {path}",
                      bpe_tokens=lambda: _tokens(wb, names, path))
    transposed = frozenset(read_block(wb, names[TRANSPOSED]).ravel().tolist()
                           if TRANSPOSED in names else ())
    def area(name: str) -> Area:
        if name not in names:
            raise NotAWorkbook(f"{path} lacks the defined name {name!r}, which locates a "
                               "block of the model; build the workbook again")
        return names[name]

    params = {name: oriented(read_block(wb, area(name)), name in transposed).reshape(shape)
              for name, shape in expected_shapes(spec).items()}
    area("output_text")
    if spec.reads_ids:  # the typed cells as they are: the reference reads them as the sheet
        typed = area("input.typed")
        text = tuple(cell_value(wb, typed, i) for i in range(typed.nrows))
    else:
        text = _text(cell_value(wb, area("input_text")))
    if spec.generate is not None:
        spec = _sampling_as_typed(wb, names, spec)
    formulas = {(ws.title, c.row, c.column): c.value
                for ws in wb.worksheets for row in ws.iter_rows() for c in row
                if c.data_type == "f"}
    return Built(spec, params, text, names, formulas, transposed)


def _tokens(wb, names: dict[str, Area], path: Path) -> list[str]:
    """The vocabulary's tokens as the workbook shows them (a BPE spec's vocabulary is a
    file the workbook does not carry)."""
    if "vocab" not in names:
        raise NotAWorkbook(f"{path} lacks the defined name 'vocab', which holds its "
                           "tokens; build the workbook again")
    a = names["vocab"]
    rows = wb[a.sheet].iter_rows(min_row=a.row, max_row=a.row + a.nrows - 1, min_col=a.col,
                                 max_col=a.col + a.ncols - 1, values_only=True)
    return [_text(v) for row in rows for v in row]


def oriented(block: np.ndarray, transposed: bool) -> np.ndarray:
    """A block the way the reference holds it."""
    return block.T if transposed else block


def _sampling_as_typed(wb, names: dict[str, Area], spec: Spec) -> Spec:
    """The spec with the sampling controls the workbook's cells hold, read as the sheet
    reads them: a user may have changed the temperature, top-k, top-p or the uniform
    numbers, or typed something the sheet does not use as typed."""
    size = len(spec.out_vocab)
    top_p = cell_value(wb, names["gen.top_p"]) if "gen.top_p" in names else None  # before top-p
    try:
        g = replace(spec.generate,
                    temperature=temperature_as_read(cell_value(wb, names["gen.temperature"])),
                    top_k=top_k_as_read(cell_value(wb, names["gen.top_k"]), size),
                    top_p=top_p_as_read(top_p),
                    uniforms=tuple(map(float, read_block(wb, names["gen.uniform"]).ravel())),
                    target=_text(cell_value(wb, names["target_text"])))
    except (KeyError, TypeError, ValueError) as e:
        raise NotAWorkbook(f"the sampling cells of {spec.name} are not numbers: {e}") from None
    return replace(spec, generate=g)


def _text(value) -> str:
    """A text cell as the sheet's formulas read it: digits typed there, which a
    spreadsheet stores as a number, read as those digits."""
    return "" if value is None else str(value)


def _areas(wb) -> dict[str, Area]:
    """Every workbook-level name of a single range. Other names (a user's own, or one
    whose range an edit deleted) locate no block."""
    areas = {}
    for name, dn in wb.defined_names.items():
        try:
            areas[name] = _area(dn.attr_text)
        except ValueError:
            continue
    return areas


# How the sheet reads a typed sampling control (formulas.temper, in_top_k, in_top_p and
# their notes compute the same rule): the typed value when it is one the control takes,
# otherwise the value that means "off", never a refusal.

def typed_number(value) -> float | None:
    """A typed cell's number as ISNUMBER sees it in Excel and Gnumeric: not text (not even
    "0.5" typed as text), not an empty cell, not TRUE or FALSE."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def temperature_as_read(value) -> float:
    """A number of 0 or more; anything else reads as 0, greedy."""
    t = typed_number(value)
    return t if t is not None and t >= 0 else 0.0


def top_k_as_read(value, size: int) -> int:
    """A whole number from 0 to the vocabulary's `size`; anything else reads as 0, every
    token."""
    k = typed_number(value)
    return int(k) if k is not None and 0 <= k <= size and k == int(k) else 0


def top_p_as_read(value) -> float:
    """A number above 0 and below 1; anything else reads as 1, every token (the note
    stays empty for 1 itself, which means every token)."""
    p = typed_number(value)
    return p if p is not None and 0 < p < 1 else 1.0


def _area(target: str) -> Area:
    match = _TARGET.match(target)
    if not match:
        raise ValueError(f"defined name target {target!r} is not a single range")
    min_col, min_row, max_col, max_row = range_boundaries(match["range"].replace("$", ""))
    sheet = match["plain"] or match["quoted"].replace("''", "'")
    return Area(sheet, min_row, min_col, max_row - min_row + 1, max_col - min_col + 1)


def read_block(wb, area: Area) -> np.ndarray:
    """The block's values as a 2-D array (None stays None, in an object array)."""
    ws = wb[area.sheet]
    rows = ws.iter_rows(min_row=area.row, max_row=area.row + area.nrows - 1,
                        min_col=area.col, max_col=area.col + area.ncols - 1, values_only=True)
    values = [list(r) for r in rows]
    try:
        return np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        return np.array(values, dtype=object)


def cell_value(wb, area: Area, i: int = 0, j: int = 0):
    return wb[area.sheet].cell(area.row + i, area.col + j).value
