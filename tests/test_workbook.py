"""The built file itself: formulas everywhere a value is computed, literal text, same bytes."""

import io
import os
import re
import subprocess
import sys
import tempfile
import time
import zipfile

import openpyxl
import pytest
from helpers import build_template, require_lxml

from xlformer import builder, catalog, formulas, reference, writer
from xlformer.book import FORMULA, LABEL, NUMBER, TEXT, Book, Cell, Fill
from xlformer.layout import Area
from xlformer.reader import read_built
from xlformer.spec import load_spec
from xlformer.weights import make_weights

pytestmark = pytest.mark.slow

# Named cells that hold typed-in data rather than computed values.
DATA_NAMES = {"input_text", "pad", "pad_id", "vocab", "head_size", "ln_eps", "target_vocab",
              "gen.steps", "gen.pad_id", "gen.end_id", "gen.start_id", "gen.temperature",
              "gen.top_k", "gen.top_p", "gen.uniform", "target_text", "chart.position"}


@pytest.fixture(scope="module", params=catalog.names())
def workbook(request, tmp_path_factory):
    path = build_template(request.param, tmp_path_factory.mktemp("wb") / "w.xlsx")
    return path, read_built(path), openpyxl.load_workbook(path)


def _cells(area):
    return [(area.sheet, area.row + i, area.col + j)
            for i in range(area.nrows) for j in range(area.ncols)]


def test_every_reference_block_is_named_and_all_formulas(workbook):
    _, built, _ = workbook
    trace = reference.forward(built.spec, built.params, built.text)
    missing = set(trace) - set(built.names)
    assert not missing
    weights = set(built.params)
    for name, area in built.names.items():
        if name in weights or name in DATA_NAMES:
            continue
        not_formulas = [c for c in _cells(area) if c not in built.formulas]
        assert not not_formulas, f"{name}: {not_formulas[:3]} are not formulas"


def test_numbers_appear_only_as_weights_and_spec_constants(workbook):
    _, built, wb = workbook
    allowed = {c for name, area in built.names.items()
               if name in built.params or name in DATA_NAMES for c in _cells(area)}
    typed = [(ws.title, c.row, c.column) for ws in wb.worksheets for row in ws.iter_rows()
             for c in row if c.data_type == "n" and c.value is not None]
    assert typed and set(typed) <= allowed


def test_every_function_is_on_the_allow_list(workbook):
    _, built, _ = workbook
    used = set()
    for formula in built.formulas.values():
        assert formula.startswith("=")
        used |= formulas.functions_in(formula)
    assert used and used <= formulas.FUNCTIONS.keys()
    assert "TRANSPOSE" not in used and "LET" not in used


@pytest.mark.parametrize("name", ["tiny-gpt", "copy"])
def test_functions_newer_than_excel_2007_get_their_prefix_in_every_cell(name, monkeypatch):
    """No function on the allow-list needs `_xlfn.` today, so pretend EXP and MMULT do
    (used in block cells and, for copy, in generation) and read every formula back."""
    for fn in ("EXP", "MMULT", "IF"):
        monkeypatch.setitem(formulas.FUNCTIONS, fn, True)
    spec = load_spec(catalog.resolve(name))
    data = writer.to_bytes(builder.build(spec, make_weights(spec), spec.input))
    wb = openpyxl.load_workbook(io.BytesIO(data))
    cells = [c.value for ws in wb.worksheets for row in ws.iter_rows() for c in row
             if c.data_type == "f"]
    for fn in ("EXP", "MMULT", "IF"):
        calls = [v for v in cells if f"{fn}(" in v]
        assert calls, fn
        bare = [v for v in calls if re.search(rf"(?<![A-Za-z0-9_.]){fn}\(", v)]
        assert not bare, f"{fn} without _xlfn.: {bare[:3]}"


def test_text_is_stored_as_literal_strings(tmp_path):
    path = build_template("reverse", tmp_path / "r.xlsx", "=1+1")
    wb = openpyxl.load_workbook(path)
    built = read_built(path)
    text = built.names["input_text"]
    cell = wb[text.sheet].cell(text.row, text.col)
    assert (cell.value, cell.data_type, cell.quotePrefix) == ("=1+1", "s", True)
    vocab = built.names["vocab"]
    tokens = {wb[vocab.sheet].cell(vocab.row, vocab.col + j).value: vocab.col + j
              for j in range(vocab.ncols)}
    for token in "=+-@":
        c = wb[vocab.sheet].cell(vocab.row, tokens[token])
        assert (c.data_type, c.quotePrefix) == ("s", True), token


def test_same_inputs_give_the_same_bytes(tmp_path):
    a = build_template("tiny-gpt", tmp_path / "a.xlsx").read_bytes()
    b = build_template("tiny-gpt", tmp_path / "b.xlsx").read_bytes()
    assert a == b
    with zipfile.ZipFile(tmp_path / "a.xlsx") as z:
        assert {i.date_time for i in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert b"2000-01-01T00:00:00Z" in z.read("docProps/core.xml")


def test_the_bytes_do_not_depend_on_hash_order_or_the_clock(tmp_path):
    """Separate processes, different string-hash seeds, a second apart: the same file."""
    files = []
    for seed in ("0", "4242"):
        out = tmp_path / f"w{seed}.xlsx"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-c", "from xlformer.cli import main; main()",
                        "build", "tiny-gpt", "-o", str(out)], env=env, check=True,
                       capture_output=True)
        files.append(out.read_bytes())
        time.sleep(1.1)  # zip entry times have a 2-second grain; cross at least one second
    assert files[0] == files[1]


def test_the_bytes_do_not_depend_on_lxml(tmp_path):
    """openpyxl serialises through lxml when it is installed, unless OPENPYXL_LXML is
    False, and its bytes differ from the standard library's; the workbook must not."""
    require_lxml()
    files = {}
    for flag in ("True", "False"):
        out = tmp_path / f"lxml-{flag}.xlsx"
        env = {**os.environ, "OPENPYXL_LXML": flag}
        subprocess.run([sys.executable, "-c", "from xlformer.cli import main; main()",
                        "build", "alphabet", "-o", str(out)], env=env, check=True,
                       capture_output=True)
        files[flag] = out.read_bytes()
    with_lxml, without = (_parts(files[flag]) for flag in ("True", "False"))
    assert sorted(with_lxml) == sorted(without)
    assert [name for name in without if with_lxml[name] != without[name]] == []
    assert files["True"] == files["False"], "same parts, other zip bytes"


def _parts(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {name: z.read(name) for name in z.namelist()}


def test_the_writer_refuses_an_openpyxl_imported_with_lxml_before_it(tmp_path):
    """Then openpyxl has already chosen lxml, and the bytes would differ: an error that
    says what to do, not another workbook."""
    require_lxml()
    code = ("import openpyxl; assert openpyxl.LXML; from xlformer.cli import main; main()")
    env = {**os.environ, "OPENPYXL_LXML": "True"}
    out = tmp_path / "w.xlsx"
    run = subprocess.run([sys.executable, "-c", code, "build", "-o", str(out)], env=env,
                         capture_output=True, text=True)
    assert run.returncode != 0 and not out.exists()
    assert "openpyxl was imported with lxml before xlformer" in run.stderr


def test_the_bytes_do_not_depend_on_openpyxls_version(tmp_path):
    """openpyxl writes its own version into docProps/app.xml, in a form that changed
    within 3.1; every 3.1 release writes the same workbook otherwise (checked by
    installing 3.1.0 to 3.1.5 and running `xlformer build-all --check`)."""
    path = build_template("reverse", tmp_path / "a.xlsx")
    with zipfile.ZipFile(path) as z:
        app = z.read("docProps/app.xml").decode()
    assert openpyxl.__version__ not in app
    assert "<AppVersion>3.1</AppVersion>" in app  # the series pyproject.toml allows


# The writer leans on openpyxl's internals (pinned to openpyxl 3.1 in pyproject.toml):
# it hands the write-only sheet ready cells (`ws._values_to_row`), recycles one styled
# cell per look (`_FastCell.style_id`, `cell._value`), closes half-written sheets
# (`ws._rows`, `ws._writer.out`) and fixes the zip's entries (`archive.writestr` and
# `.write`). If they change, cells move or lose their look, or temporary files or
# clock times leak in; these tests say which.

def _small_book() -> Book:
    book = Book()
    s = book.sheet("S")
    s.put(1, 1, Cell(LABEL, "Title", "title"))
    s.put(2, 5, Cell(TEXT, "=1+1", "input"))  # a gap before it: columns must hold
    s.put(2, 9, Cell(NUMBER, 0.25, "weight"))
    s.put(3, 2, Cell(FORMULA, "=E2&I2", "output"))
    s.notes[(1, 1)] = "a note"
    s.links[(3, 2)] = "'S'!A1"
    book.fill(Fill("w", Area("S", 4, 3, 2, 3), NUMBER, lambda i: [i + 0.5, 2.0, -1.0],
                   "weight"))
    s.formats.append((Area("S", 4, 3, 2, 3), "0.000"))
    book.fill(Fill("f", Area("S", 4, 7, 2, 2), FORMULA, lambda i: [f"=C{4 + i}*2", "=I2"]))
    book.fill(Fill("t", Area("S", 7, 2, 1, 3), TEXT, lambda i: ["-x", "y", "@z"], "input"))
    return book


def test_every_cell_keeps_its_place_value_and_look(tmp_path):
    path = tmp_path / "small.xlsx"
    writer.save(_small_book(), path)
    ws = openpyxl.load_workbook(path)["S"]
    cells = {c.coordinate: (c.value, c.data_type) for row in ws.iter_rows() for c in row
             if c.value is not None}
    assert cells == {
        "A1": ("Title", "s"), "E2": ("=1+1", "s"), "I2": (0.25, "n"), "B3": ("=E2&I2", "f"),
        "C4": (0.5, "n"), "D4": (2, "n"), "E4": (-1, "n"), "G4": ("=C4*2", "f"),
        "H4": ("=I2", "f"), "C5": (1.5, "n"), "D5": (2, "n"), "E5": (-1, "n"),
        "G5": ("=C5*2", "f"), "H5": ("=I2", "f"), "B7": ("-x", "s"), "C7": ("y", "s"),
        "D7": ("@z", "s")}
    looks = {c: (ws[c].fill.fgColor.rgb[-6:] if ws[c].fill.fill_type else None,
                 ws[c].font.b, ws[c].quotePrefix, ws[c].number_format)
             for c in ("A1", "E2", "I2", "B3", "C4", "E5", "G4", "B7", "C7")}
    assert looks == {
        "A1": (writer.TITLE_FILL, True, False, "General"),
        "E2": (writer.INPUT_FILL, True, True, "General"),
        "I2": (writer.WEIGHT_FILL, False, False, "General"),
        "B3": (writer.OUTPUT_FILL, True, False, "General"),
        "C4": (writer.WEIGHT_FILL, False, False, "0.000"),
        "E5": (writer.WEIGHT_FILL, False, False, "0.000"),
        "G4": (None, False, False, "General"),
        "B7": (writer.INPUT_FILL, True, True, "General"),
        "C7": (writer.INPUT_FILL, True, False, "General")}
    assert ws["A1"].comment.text == "a note" and ws["B3"].hyperlink.location == "'S'!A1"


def test_a_failed_write_leaves_no_temporary_sheet(tmp_path, monkeypatch):
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # where openpyxl streams sheets

    def stop(sheet, _cells):
        if sheet == "S w":  # in the middle of the sheet
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        writer.write(_small_book(), io.BytesIO(), stop)
    assert list(temp.iterdir()) == []
    writer.write(_small_book(), io.BytesIO())  # the writer itself is fine afterwards


def test_workbook_carries_its_spec_and_weights(workbook):
    path, built, _ = workbook
    spec = built.spec
    original = load_spec(catalog.resolve(spec.name))
    assert spec.model == original.model and spec.vocab == original.vocab
    weights = make_weights(original)
    assert all((built.params[k] == weights[k]).all() for k in weights)


@pytest.mark.parametrize("name", catalog.names())
def test_the_builder_lays_out_exactly_the_reference_intermediates(name):
    """Same names on both sides: nothing the reference computes is missing from the
    sheet, and nothing the sheet checks is unknown to the reference."""
    spec = load_spec(catalog.resolve(name))
    params = make_weights(spec)
    book = builder.build(spec, params, spec.text)
    assert list(book.blocks) and set(book.blocks) == set(reference.forward(spec, params, "x"))
