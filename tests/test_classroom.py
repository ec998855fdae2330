"""The classroom layer: a guide whose links land on blocks, blocks that explain themselves,
heatmaps, a chart whose position a reader types, the pairwise view, pictures. And in
both engines: no error value in any cell, the chart's row equals the probabilities."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import openpyxl
import pytest
from click.testing import CliRunner
from helpers import build_template, error_cells, lazy_recalc, pdf_words, require_renderer, type_into

from xlformer import builder, catalog, recalc, reference, render, writer
from xlformer.book import LABEL, TEXT, Cell, Sheet
from xlformer.cli import main
from xlformer.fit import DEFAULT_WIDTH, fit, text_width
from xlformer.guide import GUIDE, spec_notes
from xlformer.reader import cell_value, open_values, read_block, read_built
from xlformer.spec import load_spec
from xlformer.weights import make_weights

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
CORNERS = str(Path(__file__).parent / "specs" / "corners.toml")
WORDS = str(Path(__file__).parent / "specs" / "words.toml")  # reads token ids
# Parts of a wider block, explained by the block's header (c_attn, heads).
WINDOWS = re.compile(r"\.head\d+\.(q|k|v|out)$")
HEATMAPS = re.compile(r"(\.scores|\.weights|\.w_qk|\.scores_qk|^probs|^logits)$")
LOCATION = re.compile(r"^(?:'(?P<quoted>(?:[^']|'')+)'|(?P<plain>[^'!]+))!(?P<cell>[A-Z]+\d+)$")


def _build(template: str):
    spec = load_spec(catalog.resolve(template))
    return spec, builder.build(spec, make_weights(spec), spec.input)


@pytest.fixture(scope="module", params=[*catalog.names(), CORNERS, WORDS])
def saved(request, tmp_path_factory):
    spec, book = _build(request.param)
    path = build_template(request.param, tmp_path_factory.mktemp("c") / "w.xlsx")
    return spec, book, openpyxl.load_workbook(path)


def _target(location: str) -> tuple[str, int, int]:
    match = LOCATION.match(location)
    assert match, f"link target {location!r} is not Sheet!A1"
    sheet = match["plain"] or match["quoted"].replace("''", "'")
    col, row = openpyxl.utils.cell.coordinate_from_string(match["cell"])
    return sheet, row, openpyxl.utils.cell.column_index_from_string(col)


def test_the_guide_comes_first_and_every_link_lands_on_something(saved):
    spec, book, wb = saved
    assert wb.sheetnames[0] == GUIDE
    links = [c for row in wb[GUIDE].iter_rows() for c in row if c.hyperlink]
    steps = [name for name, (_, h) in book.headers.items() if h.step]
    assert len(links) >= len(steps) + len(wb.sheetnames) - 1 + 2
    for c in links:
        assert c.hyperlink.target is None, "internal links only"
        sheet, row, col = _target(c.hyperlink.location)
        assert sheet in wb.sheetnames
        if c.value in book.headers:  # a reading-order step: lands on the block's title
            title, header = book.headers[c.value]
            assert (sheet, row, col) == (title.sheet, title.row, title.col)
            assert wb[sheet].cell(row, col).value == header.title
    named = {c.value for c in links}
    typing = "Input token ids: type here" if spec.reads_ids else "Input text: type here"
    assert set(steps) <= named and typing in named


def test_every_block_has_a_header_a_note_and_its_heatmap(saved):
    spec, book, wb = saved
    need = {n for n in book.blocks if not WINDOWS.search(n)} | {"chart.probs"}
    assert need <= set(book.headers)
    for name, (title, header) in book.headers.items():
        cell = wb[title.sheet].cell(title.row, title.col)
        assert cell.value == header.title and header.title
        assert cell.comment is not None and cell.comment.text == f"{name}\n{header.note}"
        assert len(header.note) > 15, name
        area = book.names[name]
        scales = {str(r.sqref) for r in wb[area.sheet].conditional_formatting}
        span = f"{openpyxl.utils.get_column_letter(area.col)}{area.row}:" \
               f"{openpyxl.utils.get_column_letter(area.col + area.ncols - 1)}" \
               f"{area.row + area.nrows - 1}"
        assert (span in scales) == bool(header.heatmap), name
        if HEATMAPS.search(name):
            assert header.heatmap, f"{name} has no heatmap"


def test_sheets_freeze_their_labels_and_print_landscape_with_them(saved):
    _, book, wb = saved
    for ws in wb.worksheets:
        sheet = book.sheets[ws.title]
        cells = [position for position, _ in sheet.items()]
        last_row = max([r for r, _ in cells] + [
            openpyxl.utils.cell.coordinate_to_tuple(c.anchor)[0] + 16 for c in sheet.charts])
        last_col = openpyxl.utils.get_column_letter(max(c for _, c in cells))
        assert ws.print_area == f"'{ws.title}'!$A$1:${last_col}${last_row}"
        assert ws.page_setup.orientation == "landscape"
        if ws.title not in (GUIDE, "Spec"):
            assert ws.freeze_panes == "C2" and ws.print_title_cols == "$A:$B", ws.title


def test_the_guide_shows_the_description_and_the_spec_notes(saved):
    spec, _, wb = saved
    text = "\n".join(str(c.value) for row in wb[GUIDE].iter_rows() for c in row
                     if isinstance(c.value, str))
    assert spec.description in text
    for paragraph in spec_notes(spec.source):
        assert paragraph in text


@pytest.mark.parametrize("template", [*catalog.names(), CORNERS, WORDS])
def test_the_guide_says_what_each_block_is_built_from_and_links_the_alignment(template):
    """The sheet list names a block's sub-layers as the spec has them, and the attention
    heatmap link goes to the cross-attention (the alignment) when there is one."""
    spec, book = _build(template)
    m, guide = spec.model, book.sheets[GUIDE]
    said = {_target(where)[0]: guide.cells[(row, 3)].value
            for (row, _), where in guide.links.items() if _target(where)[1:] == (1, 1)}
    blocks = [s for s in said if re.fullmatch(r"(Layer|Encoder|Decoder)\d+", s)]
    assert len(blocks) == m.n_layer + m.n_enc_layer
    for sheet in blocks:
        text = said[sheet]
        assert ("feed-forward" in text) == m.mlp, text
        assert ("cross-attention" in text) == sheet.startswith("Decoder"), text
        assert ("causal" in text) == (m.causal and not sheet.startswith("Encoder")), text
    [heatmap] = [where for (row, col), where in guide.links.items()
                 if guide.cells[(row, col)].value == "Attention heatmap"] or [None]
    if not blocks:
        assert heatmap is None
        return
    want = "dec.h.0.cross.head0.weights" if m.encoder_decoder else "h.0.attn.head0.weights"
    title, _ = book.headers[want]
    assert _target(heatmap) == (title.sheet, title.row, title.col)


def test_spec_notes_are_paragraphs_of_the_leading_comments():
    source = ('name = "x"\n# One\n# two.\n#\n# Three:\n#   cmd --flag\n\n[vocab]\n# not this\n')
    assert spec_notes(source) == ["One two.", "Three:\ncmd --flag"]


@pytest.mark.parametrize("template", [*catalog.names(), CORNERS, WORDS])
def test_pairwise_scores_equal_the_heads_scores(template):
    spec = load_spec(catalog.resolve(template))
    trace = reference.forward(spec, make_weights(spec), spec.input)
    heads = [n.removesuffix(".scores_qk") for n in trace if n.endswith(".scores_qk")]
    assert len(heads) == (spec.model.n_layer + spec.model.n_enc_layer) * spec.model.n_head
    for h in heads:
        want = trace[f"{h}.scores"]
        scale = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(trace[f"{h}.scores_qk"], want, rtol=1e-10, atol=1e-10 * scale)


# (case, template, chart position typed in or None, position the chart must show)
CHART_CASES = [
    ("reverse", "reverse", None, 0),
    ("reverse-3", "reverse", 3, 3),
    ("reverse-text", "reverse", "three", 0),
    ("reverse-too-big", "reverse", 9, 0),
    ("reverse-negative", "reverse", -1, 0),
    ("reverse-fraction", "reverse", 2.5, 0),
    ("tiny-gpt-7", "tiny-gpt", 7, 7),
    ("vanilla-encoder", "vanilla-encoder", None, 0),
    ("corners-1", CORNERS, 1, 1),
    ("copy-2", "copy", 2, 2),  # an encoder-decoder with its own output vocabulary
    ("alphabet-4", "alphabet", 4, 4),  # live generation
]


@pytest.fixture(scope="module")
def charted(tmp_path_factory):
    folder, paths = tmp_path_factory.mktemp("chart"), {}
    for case, template, typed, _ in CHART_CASES:
        path = build_template(template, folder / f"{case}.xlsx")
        if typed is not None:
            type_into(path, "chart.position", typed)
        paths[case] = path
    # The test of done: a new word typed into the showcase workbook.
    paths["new-word"] = folder / "new-word.xlsx"
    paths["new-word"].write_bytes((ROOT / "workbooks" / "reverse.xlsx").read_bytes())
    type_into(paths["new-word"], "input_text", "Stream")
    return paths, lazy_recalc(paths, tmp_path_factory)


@pytest.mark.parametrize("engine", recalc.ENGINES)
def test_a_new_word_in_the_showcase_shows_reversed_with_its_mirror_heatmap(engine, charted):
    paths, recomputed = charted
    values = open_values(recomputed(engine)["new-word"])
    built = read_built(paths["new-word"])
    assert _echoes(paths["new-word"], values) == {"input_text": "Stream",
                                                  "output_text": "maertS"}
    weights = read_block(values, built.names["h.0.attn.head0.weights"])
    assert weights.argmax(axis=1).tolist() == [5, 4, 3, 2, 1, 0]
    keys = built.names["h.0.attn.head0.weights"]
    labels = [values[keys.sheet].cell(keys.row - 1, keys.col + j).value for j in range(6)]
    assert labels == [f"{j} {c}" for j, c in enumerate("Stream")]


@pytest.mark.parametrize("engine", recalc.ENGINES)
@pytest.mark.parametrize("case", CHART_CASES, ids=[c[0] for c in CHART_CASES])
def test_no_error_anywhere_and_the_chart_shows_the_chosen_row(case, engine, charted):
    name, _, typed, shown = case
    paths, recomputed = charted
    built, values = read_built(paths[name]), open_values(recomputed(engine)[name])
    assert not error_cells(values)
    assert cell_value(values, built.names["chart.shown"]) == shown
    note = cell_value(values, built.names["chart.note"])
    assert bool(note) == (typed is not None and shown != typed), note
    probs = read_block(values, built.names["probs"])
    chart = read_block(values, built.names["chart.probs"])
    np.testing.assert_array_equal(chart[0], probs[shown])
    assert _echoes(paths[name], values) == {"input_text": built.text,
                      "output_text": cell_value(values, built.names["output_text"])}


# (case, template, text typed into input_text, the note beside it, the output it explains)
PADDING = " (the model reads it like any character, so it can show in the output)"
LENGTH_CASES = [
    ("reverse-long", "reverse", "spreadsheet",
     "the input has 11 characters; only the first 6 are read (max_seq)", "daerps"),
    ("reverse-short", "reverse", "abc",
     "the input has 3 characters; positions 3 to 5 read the padding token ' '" + PADDING,
     "   cba"),
    ("reverse-one-short", "reverse", "abcde",
     "the input has 5 characters; position 5 reads the padding token ' '" + PADDING, " edcba"),
    ("reverse-one", "reverse", "a",
     "the input has 1 character; positions 1 to 5 read the padding token ' '" + PADDING,
     "     a"),
    ("reverse-full", "reverse", "python", "", "nohtyp"),
    ("reverse-number", "reverse", 12345678,
     "the input has 8 characters; only the first 6 are read (max_seq)", "654321"),
    ("alphabet-long", "alphabet", "abcdefghij", "the prompt has 10 characters; only the first "
     "8 are read (max_seq), so no position is left to generate", ""),
    ("alphabet-full", "alphabet", "abcdefgh",
     "the prompt fills all 8 positions (max_seq): none is left to generate", ""),
    ("alphabet-short", "alphabet", "abc",
     "the prompt has 3 characters; the 8 positions (max_seq) leave room for 5 of the 7 steps",
     "defgh"),
    ("alphabet-room", "alphabet", "a", "", "bcdefgh"),
    ("alphabet-empty", "alphabet", "", "the prompt is empty: nothing is generated", ""),
    ("copy-long", "copy", "abcdefghij",  # the decoder writes 7 tokens (generate.steps)
     "the input has 10 characters; only the first 8 are read (max_seq); the decoder "
     "generates at most 7 tokens (generate.steps)", "abcdefg"),
    ("copy-short", "copy", "hello",
     "the input has 5 characters; positions 5 to 7 read the padding token ' '", "hello$"),
]


@pytest.fixture(scope="module")
def lengths(tmp_path_factory):
    folder, paths = tmp_path_factory.mktemp("lengths"), {}
    for case, template, typed, _, _ in LENGTH_CASES:
        paths[case] = build_template(template, folder / f"{case}.xlsx")
        type_into(paths[case], "input_text", typed)
    return paths, lazy_recalc(paths, tmp_path_factory)


@pytest.mark.parametrize("engine", recalc.ENGINES)
@pytest.mark.parametrize("case", LENGTH_CASES, ids=[c[0] for c in LENGTH_CASES])
def test_the_input_sheet_says_live_what_the_length_of_the_typed_text_does(case, engine,
                                                                          lengths):
    """A text longer than max_seq is cut, a shorter one padded (which is where padding in
    the output comes from), a prompt leaves so much room to generate: the note says so
    for whatever is typed, and the output shows it."""
    name, _, _, note, output = case
    paths, recomputed = lengths
    built, values = read_built(paths[name]), open_values(recomputed(engine)[name])
    assert (cell_value(values, built.names["input.length_note"]) or "") == note
    assert (cell_value(values, built.names["output_text"]) or "") == output


def _echoes(path: Path, values) -> dict[str, object]:
    """What the guide shows beside its links to the input and output cells."""
    wb, names = openpyxl.load_workbook(path), read_built(path).names
    out = {}
    for name in ("input_text", "output_text"):
        area = names[name]
        for row in wb[GUIDE].iter_rows():
            for c in row:
                if c.hyperlink and _target(c.hyperlink.location) == (area.sheet, area.row,
                                                                     area.col):
                    out[name] = values[GUIDE].cell(c.row, 3).value
    return out


def test_every_showcase_workbook_renders_to_a_picture_that_is_not_blank(tmp_path):
    require_renderer()
    books = sorted((ROOT / "workbooks").glob("*.xlsx"))
    jobs = [(b, sheet, tmp_path / f"{b.stem}-{sheet}.ppm") for b in books
            for sheet in ("Guide", render.first_layer(b))]
    for path in render.render(jobs, dpi=40):
        pixels = render.read_ppm(path).astype(float)
        dark = (pixels.mean(axis=2) < 128).mean()
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100, path.name
        assert pixels.std() > 10 and 0.001 < dark < 0.5, f"{path.name} looks blank"


def test_a_label_cut_by_its_neighbour_widens_its_column_and_no_other():
    sheet = Sheet("S")
    sheet.put(2, 3, Cell(LABEL, "x", "collabel"))
    sheet.put(2, 5, Cell(LABEL, "teacher-forcing target", "collabel"))  # runs left to C
    sheet.put(4, 7, Cell(LABEL, "a title that runs right across empty cells", "title"))
    sheet.put(6, 1, Cell(LABEL, "runs left off the sheet", "collabel"))
    fit(sheet)
    assert set(sheet.widths) == {5, 1}
    assert sheet.widths[5] + DEFAULT_WIDTH >= text_width("teacher-forcing target", "collabel")
    assert sheet.widths[1] >= text_width("runs left off the sheet", "collabel")


# Wrapped text breaks lines after a hyphen: words are compared hyphen by hyphen.
_PIECES = re.compile(r"[^-]*-+|[^-]+")


def _pieces(words) -> Counter:
    return Counter(p for w in words for p in _PIECES.findall(w))


def test_no_label_runs_into_its_neighbour_on_any_sheet(tmp_path):
    """Every sheet of every template, drawn by LibreOffice (whose fonts are wider than
    Calibri): every word of every label and text cell is drawn whole. A text too wide for
    its cell runs across the empty cells beside it (leftwards when right-aligned) and is
    cut at the first cell that is not empty, so a cut label shows as missing or merged
    words on the page. Only a left-aligned text with nothing right of it may run off
    the page's edge: it has no neighbour to run into. Formula cells are not checked."""
    require_renderer()
    right = {look for look, attrs in writer.LOOKS.items()
             if getattr(attrs.get("alignment"), "horizontal", None) == "right"}
    books, paths = {}, []
    for template in catalog.names():
        _, books[template] = _build(template)
        paths.append(tmp_path / f"{template}.xlsx")
        writer.save(books[template], paths[-1])
    pdfs = render.export_pdf([(path, None) for path in paths], tmp_path)
    cut = []
    for (template, book), (pdf, _) in zip(books.items(), pdfs, strict=True):
        pages = pdf_words(pdf)
        assert len(pages) == len(book.sheets)
        for sheet, drawn in zip(book.sheets.values(), pages, strict=True):
            cells = list(sheet.items())
            last = {}  # the last column of each row that holds anything
            for (row, col), _ in cells:
                last[row] = max(col, last.get(row, 0))
            for area in sheet.merges:
                last[area.row] = max(area.col + area.ncols - 1, last.get(area.row, 0))
            labels = [str(c.value).split() for (row, col), c in cells
                      if c.kind in (LABEL, TEXT) and (c.style in right or col < last[row])]
            missing = _pieces(w for words in labels for w in words) - _pieces(drawn)
            if missing:
                cut.append(f"{template} {sheet.name}: {' '.join(sorted(missing.elements()))}")
    assert not cut, "\n".join(cut)


def test_render_command_writes_a_png_and_rejects_an_unknown_sheet(tmp_path):
    require_renderer()
    book = build_template("reverse", tmp_path / "r.xlsx")
    runner = CliRunner()
    result = runner.invoke(main, ["render", str(book), "--sheet", "Nope", "-o",
                                  str(tmp_path / "x.png")])
    assert result.exit_code == 2 and "has no sheet 'Nope'" in result.output
    assert not (tmp_path / "x.png").exists()
    result = runner.invoke(main, ["render", str(book), "-o", str(tmp_path / "g.png"),
                                  "--dpi", "40"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
