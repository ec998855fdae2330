"""The guide sheet, first in the workbook: what the model is, where to type, what to read.

It is written last, from what the builder recorded: the named input and output cells and
every block's header (Book.headers, in computation order), so the reading order lists
exactly the blocks the workbook has, each linked to its title cell.
"""

from __future__ import annotations

import math
import re

from . import formulas as f
from . import reference
from .a1 import cell, sheet_prefix
from .book import FORMULA, LABEL, Book, Cell
from .layout import Area
from .spec import Spec

GUIDE = "Guide"
_TEXT_CHARS = 140  # characters per line of a paragraph across columns B:C
_LINE = 15.0  # points per line


def location(area: Area) -> str:
    """An internal hyperlink target: the area's top-left cell, e.g. 'Layer0'!C5."""
    return sheet_prefix(area.sheet) + cell(area.row, area.col)


class _Page:
    """Rows written top to bottom on the guide sheet."""

    def __init__(self, book: Book):
        self.book, self.sheet, self.row = book, book.sheet(GUIDE), 1

    def put(self, col: int, value, kind: str = LABEL, style: str = "") -> None:
        self.sheet.put(self.row, col, Cell(kind, value, style))

    def line(self, *cells: tuple[int, str, str]) -> None:
        for col, text, style in cells:
            self.put(col, text, LABEL, style)
        self.row += 1

    def heading(self, text: str) -> None:
        self.row += 1
        self.line((1, text, "subheading"))

    def paragraph(self, text: str, style: str = "text") -> None:
        """Text across columns B:C, wrapped, with room for its lines."""
        self.put(2, text, LABEL, style)
        self.sheet.merges.append(Area(GUIDE, self.row, 2, 1, 2))
        lines = sum(max(1, math.ceil(len(p) / _TEXT_CHARS)) for p in text.split("\n"))
        self.sheet.heights[self.row] = _LINE * lines + 3
        self.row += 1

    def link(self, col: int, text: str, target: Area, style: str = "link") -> None:
        self.put(col, text, LABEL, style)
        self.sheet.links[(self.row, col)] = location(target)


def guide_sheet(book: Book, spec: Spec, sheets: dict[str, str]) -> None:
    """Write the guide. `sheets` maps each other sheet to what it holds."""
    page = _Page(book)
    page.sheet.widths.update({1: 5, 2: 34, 3: 80})
    page.sheet.print_titles = False
    page.sheet.heights[1] = 24
    page.line((1, f"xlformer: {spec.name}", "heading"))
    where = "token ids into the yellow cells" if spec.reads_ids else "input into the yellow cell"
    page.paragraph("Every number in this workbook except the weights is a live formula. Type "
                   f"a new {where} and the whole model recomputes, down to the output text.")
    _about(page, spec)
    _try_it(page, book, spec)
    _reading_order(page, book)
    _sizes(page, spec)
    _colours(page)
    page.heading("Sheets")
    for name, holds in sheets.items():
        parts = sublayers(book, spec, name)
        page.link(2, name, Area(name, 1, 1, 1, 1))
        page.line((3, f"{holds}: {parts}" if parts else holds, ""))


# The last block of each sub-layer a transformer block is built from.
_SUBLAYER = re.compile(r"^(?P<p>(?:enc\.|dec\.)?h\.\d+)\.(?P<kind>attn|cross|mlp)\.c_proj$")


def sublayers(book: Book, spec: Spec, sheet: str) -> str:
    """The sub-layers built on a sheet, in order, e.g. 'attention over the whole input,
    then feed-forward'; '' for a sheet that has none."""
    parts = []
    for name, area in book.blocks.items():
        match = _SUBLAYER.match(name)
        if match is None or area.sheet != sheet:
            continue
        parts.append({
            "attn": "causal attention"
                    if reference.causal(spec, match["p"]) else "attention over the whole input",
            "cross": "cross-attention to the encoder",
            "mlp": "feed-forward"}[match["kind"]])
    if not parts:
        return ""
    *first, last = parts
    return (", ".join(first) + ", then " if first else "") + last


def _about(page: _Page, spec: Spec) -> None:
    page.heading("What this model does")
    for paragraph in _paragraphs(spec.description):
        page.paragraph(paragraph)
    notes = spec_notes(spec.source)
    if notes:
        page.heading("How it works (from the spec)")
        for paragraph in notes:
            page.paragraph(paragraph)


def _paragraphs(text: str) -> list[str]:
    """Blank lines separate paragraphs; single line breaks inside one are spaces."""
    chunks = [" ".join(line.strip() for line in c.splitlines()) for c in text.split("\n\n")]
    return [c for c in chunks if c]


def spec_notes(source: str) -> list[str]:
    """The comment paragraphs at the top of a spec, before its first [table]."""
    lines = []
    for line in source.splitlines():
        if line.startswith("["):
            break
        if line.startswith("#"):
            lines.append(line[1:].removeprefix(" "))
        elif not line.strip():
            lines.append("")
    paragraphs, current = [], []
    for line in lines + [""]:
        if line.strip():
            # An indented line (a command, a formula) keeps its own line.
            current.append(("\n" if line.startswith(" ") and current else "") + line.strip())
        elif current:
            paragraphs.append(" ".join(current).replace(" \n", "\n"))
            current = []
    return paragraphs


def _try_it(page: _Page, book: Book, spec: Spec) -> None:
    page.heading("Try it")
    out = book.names["output_text"]
    if spec.reads_ids:
        page.link(2, "Input token ids: type here", book.names["input.typed"])
        page.line((3, f"The yellow column 'typed id' on the Input sheet: one token id "
                      f"(0 to {len(spec.vocab) - 1}) per position.", ""))
    else:
        text = book.names["input_text"]
        page.link(2, "Input text: type here", text)
        page.put(3, f.prepare(f.copy(text.full_ref(GUIDE, absolute=True))), FORMULA, "input")
        page.row += 1
    page.link(2, "Output text", out)
    page.put(3, f.prepare(f.copy(out.full_ref(GUIDE, absolute=True))), FORMULA, "output")
    page.row += 1
    unit = "token ids" if spec.reads_ids else "characters"
    page.line((3, f"The model reads up to {spec.model.max_seq} {unit}; the input sheet "
                  "shows how each one is read.", ""))
    heads = [n for n in book.headers if n.endswith(".weights")]
    # Cross-attention, where there is any, is the picture worth showing: the alignment
    # of each decoder step with the source positions it reads.
    heads = [n for n in heads if ".cross." in n] or heads
    if heads:
        title, _ = book.headers[heads[0]]
        page.link(2, "Attention heatmap", title)
        reads = ("the source positions decoder step i reads: the alignment"
                 if ".cross." in heads[0] else "which positions position i reads")
        page.line((3, f"{heads[0]}: row i shows {reads}", ""))
    chart = book.names.get("chart.position")
    if chart is not None:
        page.link(2, "Probability chart", chart)
        page.line((3, "Type a position on the Output sheet to chart its probabilities.", ""))


def _reading_order(page: _Page, book: Book) -> None:
    page.heading("Reading order (click a name to go to its block; hover a title for its note)")
    steps = [(name, title, h) for name, (title, h) in book.headers.items() if h.step]
    for number, (name, title, header) in enumerate(steps, start=1):
        page.put(1, str(number), LABEL, "header")
        page.link(2, name, title)
        page.line((3, f"{header.title}   [{title.sheet}]", ""))


def _sizes(page: _Page, spec: Spec) -> None:
    m = spec.model
    page.heading("Model sizes")
    rows = [
        ("vocabulary", f"{len(spec.vocab)} tokens"),
        ("positions (max_seq)", str(m.max_seq)),
        ("d_model", str(m.d_model)),
        ("heads", f"{m.n_head} of size {m.head_size}"),
        ("layers", str(m.n_layer)),
        ("feed-forward", f"{m.d_ff} wide, {m.activation}" if m.mlp else "none"),
        ("norm", m.norm),
        ("position encoding", m.positions if m.positions_table == m.max_seq else
         f"{m.positions} (wpe has {m.positions_table} rows; the first {m.max_seq} are used)"),
        ("attention mask", "causal" if m.causal else "none (every position sees all)"),
        ("residual connections", "yes" if m.residual else "no"),
    ]
    for label, value in rows:
        page.line((2, label, ""), (3, value, ""))


def _colours(page: _Page) -> None:
    page.heading("Colours")
    for style, meaning in [
        ("input", "yellow: an input you may change (the input text, the chart position)"),
        ("weight", "blue on light blue: a typed-in weight (sheet Weights)"),
        ("computed", "black on white: a formula the spreadsheet computes"),
        ("output", "green: the output"),
        ("title", "grey: a block's title (its math); hover it for a note"),
    ]:
        page.line((2, style, style), (3, meaning, ""))
    page.line((2, "heatmap: blue", "swatch_blue"),
              (3, "attention weights and probabilities near 1 (white near 0); "
                  "the lowest scores, logits and weights", ""))
    page.line((2, "heatmap: red", "swatch_red"),
              (3, "the highest scores, logits and weights (white: the median)", ""))
