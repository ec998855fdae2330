"""The built file itself: formulas everywhere a value is computed, literal text, same bytes."""

import io
import os
import re
import subprocess
import sys
import time
import zipfile

import openpyxl
import pytest
from helpers import build_template

from xlformer import builder, catalog, formulas, reference, writer
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
